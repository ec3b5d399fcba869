"""Whether a model has what a method needs (:attr:`AttributionMethod.needs`), read from its structure.

Nothing runs: each need is a look at the module's submodules, cheap enough
for every run of a page. The dashboard offers only the methods a model can
run and says why the others are missing (:func:`unmet_needs`,
:func:`why_not`); a method run anyway fails with its own message.

A need without a check here (a key added to
:data:`~saliency_core.methods.declaration.NEEDS` later) counts as met: the
method is offered and, where the model lacks it, says so when it runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from saliency_core.core.model_access import ModelLike, is_conv2d, source_class, unwrap_module
from saliency_core.methods.attention_layers import has_attention_blocks
from saliency_core.methods.declaration import NEEDS, AttributionMethod

#: The activations guided backprop swaps (:mod:`saliency_core.methods.guided_backprop`).
RELU_MODULES = (torch.nn.ReLU, torch.nn.ReLU6)


def _plain_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules a method can hook or swap: none in a compiled TorchScript module."""
    return [] if isinstance(module, torch.jit.ScriptModule) else list(module.modules())


def _has_conv_layer(module: torch.nn.Module) -> bool:
    """A 2-D convolution (or, in an unflattened torch.export program, a module that was one)."""
    if isinstance(module, torch.jit.ScriptModule):
        return False
    return any(is_conv2d(module, name) for name, _ in module.named_modules() if name)


def _has_relu_modules(module: torch.nn.Module) -> bool:
    """ReLU modules and no GELU (guided backprop's rule is defined for the ReLU only)."""
    modules = _plain_modules(module)
    return any(isinstance(m, RELU_MODULES) for m in modules) and not any(isinstance(m, torch.nn.GELU)
                                                                         for m in modules)


#: Modules DeepLIFT has no rule for that mark a whole family of models (transformers, ConvNeXt): layer norm
#: (timm's and ConvNeXt's LayerNorm2d are subclasses) and attention.
NO_DEEPLIFT_RULE = (torch.nn.LayerNorm, torch.nn.MultiheadAttention)


def _has_deeplift_rules(module: torch.nn.Module) -> bool:
    """No TorchScript, and no module that is one of :data:`NO_DEEPLIFT_RULE` or, in an unflattened torch.export
    program, was a class of theirs by name (timm's LayerNorm and LayerNorm2d are subclasses)."""
    def named_like(name: str) -> bool:
        cls = source_class(module, name).rsplit(".", 1)[-1]
        return cls.startswith("LayerNorm") or cls == "MultiheadAttention"

    return not any(isinstance(m, (torch.jit.ScriptModule, *NO_DEEPLIFT_RULE)) or named_like(name)
                   for name, m in module.named_modules())


#: need -> whether a module meets it. "baseline" is always met: only its "black" choice needs the model's
#: normalisation, and the other baselines work on any model.
CHECKS: dict[str, Callable[[torch.nn.Module], bool]] = {
    "conv_layer": _has_conv_layer,
    "relu_modules": _has_relu_modules,
    "baseline": lambda module: True,
    # DeepLIFT's rules need the layers as modules; compiled TorchScript hides them, and a transformer's layer
    # norms and attention have no rule (its other refusals, such as max-pooling, are found when it runs, with
    # the layer named).
    "deeplift_layers": _has_deeplift_rules,
    # torchvision's and timm's ViT/DeiT attention modules (Swin's windowed attention is not one of them).
    "attention_blocks": has_attention_blocks,
}


def unmet_needs(method: AttributionMethod, model: ModelLike) -> tuple[str, ...]:
    """The keys of ``method.needs`` (:data:`~saliency_core.methods.declaration.NEEDS`) that ``model`` lacks, in
    the order of NEEDS; empty when the model can run the method."""
    module = unwrap_module(model)
    return tuple(need for need in NEEDS if need in method.needs and not CHECKS.get(need, lambda m: True)(module))


def why_not(method: AttributionMethod, model: ModelLike) -> str | None:
    """Why ``model`` can't run ``method``, in words ("it needs nn.ReLU / nn.ReLU6 modules (…)"); None when it can."""
    unmet = unmet_needs(method, model)
    if not unmet:
        return None
    return "it needs " + " and ".join(NEEDS[need] for need in unmet)
