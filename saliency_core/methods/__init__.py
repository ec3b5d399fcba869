"""Attribution methods, one small module each, on the one forward + VJP core of :mod:`saliency_core.core.gradients`.

Each module has a ``run(request, **params) -> MethodOutput`` function and,
next to it, ``METHOD``: everything the rest of the project needs to know
about it (:class:`saliency_core.methods.declaration.AttributionMethod`).
:mod:`saliency_core.methods.registry` collects them (one line each) and holds
the public entry point :func:`saliency_core.attribute`.
"""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 4
