"""Attribution methods, one small module each, on the one-forward-pass core of :mod:`saliency_core.core.gradients`.

Each module has a ``run(request, **params) -> MethodOutput`` function;
:mod:`saliency_core.methods.registry` holds the registry (names, parameters,
defaults) and the public entry point :func:`saliency_core.attribute`.
"""
