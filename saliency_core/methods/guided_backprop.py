"""Guided backpropagation: the input gradient with ReLUs passing back only positive signals.

Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity:
The All Convolutional Net", ICLR Workshop 2015. At every ReLU the backward
pass keeps a signal only where the forward input was positive (the ReLU's
own gradient) *and* the signal coming back is positive:
``grad_in = max(grad_out, 0) · 1[x > 0]``, as Captum's ``GuidedBackprop``.
ReLU6 (EfficientNet-Lite, MobileNet) is treated the same way with its own
gradient ``1[0 < x < 6]``. Only ``nn.ReLU`` / ``nn.ReLU6`` modules are seen;
activations applied with ``torch.nn.functional`` keep their plain backward.

A model with ``nn.GELU`` (vision transformers, Swin, ConvNeXt) is refused:
the paper's rule is defined for the ReLU, whose gradient is 0 or 1, and
GELU's is neither (negative below x ≈ −0.75, above 1 near x ≈ 1.5). A
"guided GELU" would be a rule of our own, and passing GELU's plain backward
beside guided ReLUs would give a map that is neither; so such a model gets
a message, not a map. (A ReLU model with other smooth activations, such as
MobileNet V3's hard-swish, is guided at its ReLUs only, as Captum's
``GuidedBackprop`` does.)

The loss objective is used as −L (the target's log-probability): the
positive-only rule depends on the sign, and with −L it keeps the signals
that are evidence for the target, as it does for the score.

The shared model is never touched: the method runs a private copy of its
structure (sharing the weights) in which those modules are swapped for a
guided version; no hooks, no ``.grad``, no mode change.
"""

from __future__ import annotations

import torch

from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import MethodOutput, Request, image_rows, private_copy, vjps
from saliency_core.methods.declaration import AttributionMethod

RELU_FAMILY = (torch.nn.ReLU, torch.nn.ReLU6)
#: Activations the guided rule is not defined for, whose models are refused (see above).
UNGUIDED = (torch.nn.GELU,)


class _GuidedClamp(torch.autograd.Function):
    """clamp(x, 0, upper) forward; max(grad, 0) where 0 < x (< upper) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float | None) -> torch.Tensor:  # type: ignore[override]
        passed = x > 0 if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(passed)
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (passed,) = ctx.saved_tensors
        return grad.clamp(min=0) * passed, None


class GuidedReLU(torch.nn.Module):
    """A ReLU (``upper`` None) or ReLU6 (``upper`` 6) with the guided backward pass; never in place."""

    def __init__(self, upper: float | None = None) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedClamp.apply(x, self.upper)

    def extra_repr(self) -> str:
        return f"upper={self.upper}"


def _guided(module: torch.nn.Module) -> GuidedReLU:
    return GuidedReLU(6.0 if isinstance(module, torch.nn.ReLU6) else None)


def _swap_relus(clone: torch.nn.Module) -> torch.nn.Module:
    for parent in list(clone.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, RELU_FAMILY):
                parent._modules[name] = _guided(child)
    return clone


def guided_copy(module: torch.nn.Module) -> torch.nn.Module:
    """The module's guided twin: a structure copy sharing its weights, ReLU/ReLU6 modules swapped (cached).

    Raises InvalidInputError for a module with GELU or without ReLU-family modules.
    """
    gelu = next((name for name, m in module.named_modules() if isinstance(m, UNGUIDED)), None)
    if gelu is not None:
        raise InvalidInputError(
            f"guided backprop is defined for ReLU activations, and {type(module).__name__} uses GELU ({gelu!r}): "
            "its gradient is neither 0 nor 1, so the paper's rule (Springenberg et al. 2015) does not say what to "
            "pass back. Use the plain gradient, Integrated Gradients or a CAM method for this model."
        )
    if not any(isinstance(m, RELU_FAMILY) for m in module.modules()):
        found = sorted({type(m).__name__ for m in module.modules() if not list(m.children())} - {"Identity"})
        raise InvalidInputError(
            "guided backprop changes the backward pass of ReLU activations (nn.ReLU, nn.ReLU6 modules), "
            f"and {type(module).__name__} has none (its leaf modules: {', '.join(found[:12])}); "
            "activations called through torch.nn.functional are not seen. Use another method for this model."
        )
    return private_copy(module, "guided_backprop", _swap_relus)


def run(req: Request) -> MethodOutput:
    """attributions[obj] = the guided gradient of f = s_y or −L; (N, 3, H, W) signed."""
    guided = guided_copy(req.module)

    def step(start: int, stop: int):
        logits, targets, grads, _ = vjps(req, guided, start, stop)  # the loss as declared: −L
        return logits, targets, grads

    # The guided copy's forward pass is the model's, so its logits and top-1 are the model's.
    logits, targets, attributions = image_rows(req, step)
    return MethodOutput(attributions=attributions, logits=logits, targets=targets)


METHOD = AttributionMethod(
    name="guided_backprop", title="Guided backprop", citation="Springenberg et al. 2015",
    summary="the gradient with every ReLU passing back only positive signals",
    params=(),
    loss_objective="-L", output="input", run=run, needs=frozenset({"relu_modules"}),
)
