"""Grad-CAM: the layer's feature maps weighed by their mean gradient, rectified and upsampled.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017: with A the (N, K, h, w) output
of a convolutional layer and f the objective,
``α_k = mean_ij ∂f/∂A^k_ij``, ``CAM = ReLU(Σ_k α_k A^k)``, bilinearly
upsampled to the input's H × W (``align_corners=False``, as Captum's
``LayerAttribution.interpolate``). The default layer is the model's last
convolutional block (``ModelSpec.cam_layer`` in :mod:`saliency_core.models.registry`);
a bare module needs ``layer=`` (a dotted name from ``named_modules()``).

The loss objective is used as −L (the target's log-probability): the ReLU
keeps what is evidence *for* the target, as for the score.

The shared model is never hooked: the method runs a private copy of its
structure (sharing the weights) in which the layer is wrapped to hand its
output to the calling thread.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from saliency_core.core.model_access import ModelLike, device_of, input_dtype_of, unwrap_module
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import MethodOutput, Request, image_rows, private_copy, vjps
from saliency_core.methods.declaration import AttributionMethod, Param

_CAPTURED = threading.local()


class _Capture(torch.nn.Module):
    """Runs the wrapped layer and appends its output to this thread's list."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        outputs = getattr(_CAPTURED, "outputs", None)
        if outputs is not None:
            outputs.append(out)
        return out


def registered_layer(model: ModelLike) -> str | None:
    """The model registry's Grad-CAM layer for a LoadedModel (``ModelSpec.cam_layer``); None when there is none."""
    from saliency_core.models.registry import LoadedModel

    return (model.spec.cam_layer or None) if isinstance(model, LoadedModel) else None


def default_layer(model: ModelLike) -> str:
    """The registry's Grad-CAM layer for a LoadedModel; InvalidInputError when there is none."""
    from saliency_core.models.registry import LoadedModel

    if not isinstance(model, LoadedModel):
        raise InvalidInputError(
            "Grad-CAM on a bare module needs layer=: the dotted name of a convolutional layer or block "
            "from model.named_modules() (e.g. 'layer4' for a ResNet)"
        )
    if not model.spec.cam_layer:
        raise InvalidInputError(f"{model.spec.title} has no convolutional feature map registered for Grad-CAM; "
                                "pass layer= with a module whose output is (N, K, h, w)")
    return model.spec.cam_layer


def conv_layers(model: ModelLike, size: int | None = None) -> list[str]:
    """Dotted names of the model's 2-D convolutions that Grad-CAM can use, input to output.

    Only a convolution whose output reaches the logits, in one forward pass
    of a (1, 3, size, size) zero image (``size``: the model's crop when it
    has a preprocessing, else required), and that runs once per pass: a
    layer off the path to the output (an unused head, a branch whose result
    is dropped) has no gradient, and one that runs twice has no single
    feature map. The shared model is not hooked: a private copy records the
    outputs. Empty for a TorchScript model, where Grad-CAM can't run.
    """
    module = unwrap_module(model)
    if isinstance(module, torch.jit.ScriptModule):
        return []
    convs = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d) and name]
    if size is None:
        size = getattr(getattr(model, "preprocessing", None), "crop", None)
        if size is None:
            raise InvalidInputError("conv_layers of a bare module needs size=: the side of its input images")
    probe = private_copy(module, ("grad_cam_probe", tuple(convs)), lambda clone: _wrap_all(clone, convs))
    x = torch.zeros(1, 3, size, size, device=device_of(module), dtype=input_dtype_of(module), requires_grad=True)
    _RECORDED.outputs = {}
    try:
        with torch.enable_grad():
            logits = probe(x)
            ran = {n: outs for n, outs in _RECORDED.outputs.items() if len(outs) == 1 and outs[0].requires_grad}
            grads = torch.autograd.grad(logits.float().sum(), [outs[0] for outs in ran.values()], allow_unused=True) \
                if ran else ()
    finally:
        _RECORDED.outputs = None
    reaching = {name for name, g in zip(ran, grads, strict=True) if g is not None}
    return [name for name in convs if name in reaching]


_RECORDED = threading.local()


class _Record(torch.nn.Module):
    """Runs the wrapped layer and records its output under its name, for this thread."""

    def __init__(self, inner: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.inner, self.name = inner, name

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        recorded = getattr(_RECORDED, "outputs", None)
        if recorded is not None and isinstance(out, torch.Tensor):
            recorded.setdefault(self.name, []).append(out)
        return out


def _wrap_all(clone: torch.nn.Module, layers: list[str]) -> torch.nn.Module:
    for layer in layers:
        parent_name, _, child = layer.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        parent._modules[child] = _Record(parent._modules[child], layer)
    return clone


def _wrap(clone: torch.nn.Module, layer: str) -> torch.nn.Module:
    parent_name, _, child = layer.rpartition(".")
    parent = clone.get_submodule(parent_name) if parent_name else clone
    parent._modules[child] = _Capture(parent._modules[child])
    return clone


def cam_copy(module: torch.nn.Module, layer: str) -> torch.nn.Module:
    """A structure copy of ``module`` (sharing its weights) with ``layer``'s output captured (cached)."""
    if isinstance(module, torch.jit.ScriptModule):
        raise InvalidInputError("Grad-CAM can't run on a TorchScript model: its compiled forward can't hand a "
                                "layer's output over. Save the model with torch.export (.pt2) or as a state dict")
    names = dict(module.named_modules())
    if not layer or layer not in names:
        children = [n for n, _ in module.named_children()]
        raise InvalidInputError(f"layer {layer!r} is not a submodule of {type(module).__name__}; "
                                f"its top-level modules are {children}")
    return private_copy(module, ("grad_cam", layer), lambda clone: _wrap(clone, layer))


def _captured_activation(layer: str) -> torch.Tensor:
    outputs = _CAPTURED.outputs
    if len(outputs) != 1:
        raise InvalidInputError(f"layer {layer!r} ran {len(outputs)} times in one forward pass; "
                                "Grad-CAM needs a layer that runs exactly once")
    a = outputs[0]
    if not isinstance(a, torch.Tensor) or a.dim() != 4:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise InvalidInputError(f"Grad-CAM needs a layer with an (N, K, h, w) output; {layer!r} gives {shape}")
    return a


def cam(activation: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W) >= 0: ReLU(Σ_k mean_ij(gradient_k) · activation_k), bilinearly upsampled to ``size``."""
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    coarse = F.relu((alpha * activation).sum(dim=1, keepdim=True))
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def run(req: Request, layer: str | None = None) -> MethodOutput:
    """attributions[obj] = Grad-CAM of f = s_y or −L at ``layer``; (N, 1, H, W) >= 0."""
    layer = layer or default_layer(req.model)
    wrapped = cam_copy(req.module, layer)
    size = tuple(req.X.shape[2:])

    def step(start: int, stop: int):
        _CAPTURED.outputs = []
        try:  # the loss as declared: −L
            logits, targets, grads, a = vjps(req, wrapped, start, stop, wrt=lambda: _captured_activation(layer))
        except RuntimeError as exc:
            if "not have been used in the graph" not in str(exc) and "does not require grad" not in str(exc):
                raise
            raise InvalidInputError(f"layer {layer!r} does not reach the model's output: the logits don't depend "
                                    "on it, so it has no gradient. Choose a layer on the path to the output "
                                    "(saliency_core.methods.grad_cam.conv_layers lists them)") from None
        finally:
            _CAPTURED.outputs = None  # drop the graph's activation
        a = a.to(req.dtype)  # float16 under "fast" autocast
        return logits, targets, {obj: cam(a, g.to(req.dtype), size) for obj, g in grads.items()}

    logits, targets, attributions = image_rows(req, step)
    return MethodOutput(attributions=attributions, maps={obj: a[:, 0] for obj, a in attributions.items()},
                        logits=logits, targets=targets, used={"layer": layer})


METHOD = AttributionMethod(
    name="grad_cam", title="Grad-CAM", citation="Selvaraju et al. 2017",
    summary="ReLU(Σ_k α_k A^k), α_k the mean gradient of feature map A^k, upsampled to the input",
    params=(Param("layer", None, str, "dotted module name of the convolutional layer; None: the model's "
                  "last convolutional block (from the model registry)", none_ok=True,
                  choices_for=conv_layers, default_for=registered_layer,
                  choices_text="a convolutional layer of this model"),),
    loss_objective="-L", output="layer", run=run, needs=frozenset({"conv_layer"}),
    empty_reason="Grad-CAM's ReLU left nothing: no feature map of its layer counts as evidence for this class",
    family="CAM",
)
