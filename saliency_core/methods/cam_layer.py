"""The CAM methods' layer: which layers they can use, its activations, and the objectives' gradients at it.

Every CAM method (Grad-CAM, Grad-CAM++, LayerCAM, HiResCAM, Score-CAM)
starts from the (N, K, h, w) output A of one layer. The default layer is
the model's last convolutional block (``ModelSpec.cam_layer`` in
:mod:`saliency_core.models.registry`), or for a ViT/DeiT, Swin or ConvNeXt
the one :func:`~saliency_core.methods.feature_grid.transformer_layer` finds,
whose tokens or channels-last output is folded into the grid by
:mod:`~saliency_core.methods.feature_grid`; another bare module needs
``layer=`` (a dotted name from ``named_modules()``).

The shared model is never hooked: a method runs a private copy of its
structure (sharing the weights, :func:`saliency_core.methods._common.private_copy`)
in which the layer is wrapped to hand its output to the calling thread. The
copy is shared by every CAM method.

A gradient CAM is one function ``weigh(A, ∂f/∂A) -> (N, 1, h, w)`` given to
:func:`gradient_cam`, which runs one forward pass per chunk of images, one
VJP to the layer per objective (the backward pass stops at the layer), then
``ReLU`` and a bilinear upsampling to the input's H × W
(``align_corners=False``, as Captum's ``LayerAttribution.interpolate``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

from saliency_core.core.gradients import VJPs
from saliency_core.core.model_access import (
    ModelLike,
    device_of,
    input_dtype_of,
    is_conv2d,
    memory_format_of,
    unwrap_module,
)
from saliency_core.core.model_output import checked_forward
from saliency_core.core.precision import precision_context
from saliency_core.errors import InvalidInputError
from saliency_core.methods import feature_grid
from saliency_core.methods._common import MethodOutput, Request, image_rows, private_copy, vjps
from saliency_core.methods.declaration import Param

_CAPTURED = threading.local()
_RECORDED = threading.local()


# ---------------------------------------------------------------- which layers


def registered_layer(model: ModelLike) -> str | None:
    """The CAM layer a model brings: the registry's (``ModelSpec.cam_layer``, a sidecar's ``cam_layer``) for a
    LoadedModel, else a transformer's or ConvNeXt's last block or stage
    (:func:`~saliency_core.methods.feature_grid.transformer_layer`); None when there is none."""
    from saliency_core.models.registry import LoadedModel

    if isinstance(model, LoadedModel) and model.spec.cam_layer:
        return model.spec.cam_layer
    module = unwrap_module(model)
    return None if isinstance(module, torch.jit.ScriptModule) else feature_grid.transformer_layer(module)


def default_layer(model: ModelLike, title: str = "Grad-CAM") -> str:
    """:func:`registered_layer`; InvalidInputError (naming the method) when there is none."""
    from saliency_core.models.registry import LoadedModel

    layer = registered_layer(model)
    if layer:
        return layer
    if not isinstance(model, LoadedModel):
        raise InvalidInputError(
            f"{title} on a bare module needs layer=: the dotted name of a convolutional layer or block "
            "from model.named_modules() (e.g. 'layer4' for a ResNet)"
        )
    raise InvalidInputError(f"{model.spec.title} has no convolutional feature map registered for the CAM "
                            f"methods ({title}); pass layer= with a module whose output is (N, K, h, w)")


def conv_layers(model: ModelLike, size: int | None = None) -> list[str]:
    """Dotted names of the layers the CAM methods can use, input to output: the model's 2-D convolutions and,
    in a transformer or ConvNeXt, its blocks and stages (:func:`~saliency_core.methods.feature_grid.block_layers`).

    Only a layer whose output reaches the logits, in one forward pass
    of a (1, 3, size, size) zero image (``size``: the model's crop when it
    has a preprocessing, else required), and that runs once per pass: a
    layer off the path to the output (an unused head, a branch whose result
    is dropped) has no gradient, and one that runs twice has no single
    feature map. A block's tokens must reach them as a patch grid (a ViT's
    last block's output reaches the logits through its class token only).
    The shared model is not hooked: a private copy records the outputs.
    Empty for a TorchScript model, where no CAM method can run.
    """
    module = unwrap_module(model)
    if isinstance(module, torch.jit.ScriptModule):
        return []
    blocks = set(feature_grid.block_layers(module))
    wanted = {name for name, _ in module.named_modules() if name and is_conv2d(module, name)} | blocks
    candidates = [name for name, _ in module.named_modules() if name in wanted]
    if size is None:
        size = getattr(getattr(model, "preprocessing", None), "crop", None)
        if size is None:
            raise InvalidInputError("conv_layers of a bare module needs size=: the side of its input images")
    probe = private_copy(module, ("cam_probe", tuple(candidates)), lambda clone: _wrap_all(clone, candidates))
    x = torch.zeros(1, 3, size, size, device=device_of(module), dtype=input_dtype_of(module), requires_grad=True)
    _RECORDED.outputs, _RECORDED.hw = {}, (size, size)
    try:
        with torch.enable_grad():
            logits = probe(x)
            ran = {n: outs for n, outs in _RECORDED.outputs.items() if len(outs) == 1 and outs[0].requires_grad}
            grads = torch.autograd.grad(logits.float().sum(), [outs[0] for outs in ran.values()], allow_unused=True) \
                if ran else ()
    finally:
        _RECORDED.outputs = None
    # A block's grid must get a gradient that is not all zero (a ViT's last block reaches the logits through its
    # class token only); a convolution's may be zero on this zero image (a ReLU at 0) and still count.
    reaching = {name for name, g in zip(ran, grads, strict=True)
                if g is not None and (name not in blocks or bool(g.abs().sum() > 0))}
    return [name for name in candidates if name in reaching]


#: The ``layer`` parameter every CAM method takes: the dashboard offers :func:`conv_layers`.
LAYER_PARAM = Param("layer", None, str, "dotted module name of the convolutional layer or transformer block; None: "
                    "the model's last convolutional block (from the model registry), a ViT's last block's norm, "
                    "a Swin's or ConvNeXt's last stage", none_ok=True,
                    choices_for=conv_layers, default_for=registered_layer,
                    choices_text="a convolutional layer or transformer block of this model")


# ---------------------------------------------------------------- the private copy


class _Capture(torch.nn.Module):
    """Runs the wrapped layer and appends its output, folded into an (N, K, h, w) grid
    (:func:`feature_grid.fold`), to this thread's list; the network goes on from the grid."""

    def __init__(self, inner: torch.nn.Module, layer: str, layout: str, patch: tuple[int, int] | None,
                 local: threading.local) -> None:
        super().__init__()
        self.inner, self.layer, self.layout, self.patch, self.local = inner, layer, layout, patch, local

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        outputs = getattr(self.local, "outputs", None)
        if outputs is None or not isinstance(out, torch.Tensor):
            return out
        grid, restore = feature_grid.fold(out, self.layout, self.local.hw, self.patch, self.layer)
        if isinstance(outputs, dict):  # _RECORDED: every output under its layer's name
            outputs.setdefault(self.layer, []).append(grid)
        else:
            outputs.append(grid)
        return out if grid is out else restore(grid)


def _wrap_all(clone: torch.nn.Module, layers: list[str], local: threading.local = _RECORDED) -> torch.nn.Module:
    patch = feature_grid.patch_size(clone)
    for layer in sorted(layers, key=lambda name: -name.count(".")):  # a block's norm before the block wraps it
        parent_name, _, child = layer.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        parent._modules[child] = _Capture(parent._modules[child], layer, feature_grid.layout_of(clone, layer),
                                          patch, local)
    return clone


def cam_copy(module: torch.nn.Module, layer: str, title: str = "Grad-CAM") -> torch.nn.Module:
    """A structure copy of ``module`` (sharing its weights) with ``layer``'s output captured (cached)."""
    if isinstance(module, torch.jit.ScriptModule):
        raise InvalidInputError(f"{title} can't run on a TorchScript model: its compiled forward can't hand a "
                                "layer's output over. Save the model with torch.export (.pt2) or as a state dict")
    names = dict(module.named_modules())
    if not layer or layer not in names:
        children = [n for n, _ in module.named_children()]
        raise InvalidInputError(f"layer {layer!r} is not a submodule of {type(module).__name__}; "
                                f"its top-level modules are {children}")
    return private_copy(module, ("cam", layer), lambda clone: _wrap_all(clone, [layer], _CAPTURED))


def _captured_activation(layer: str, title: str) -> torch.Tensor:
    outputs = _CAPTURED.outputs
    if len(outputs) != 1:
        raise InvalidInputError(f"layer {layer!r} ran {len(outputs)} times in one forward pass; "
                                f"{title} needs a layer that runs exactly once")
    a = outputs[0]
    if not isinstance(a, torch.Tensor) or a.dim() != 4:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise InvalidInputError(f"{title} needs a layer with an (N, K, h, w) output; {layer!r} gives {shape}")
    return a


def resolve_layer(req: Request, layer: str | None, title: str) -> tuple[str, torch.nn.Module]:
    """(the layer's name, the private copy that captures it): ``layer`` or the model's registered one."""
    layer = layer or default_layer(req.model, title)
    return layer, cam_copy(req.module, layer, title)


# ---------------------------------------------------------------- passes


def activations_and_gradients(req: Request, wrapped: torch.nn.Module, layer: str, title: str,
                              start: int, stop: int) -> VJPs:
    """One forward pass of images [start, stop) through ``wrapped``, one VJP to ``layer`` per objective.

    Returns :class:`~saliency_core.core.gradients.VJPs` with ``wrt`` the
    activation A (B, K, h, w) and ``grads[obj]`` = ∂f/∂A, f = s_y or the loss
    as the method declares it (``req.loss_sign``: −L = log p_y for every CAM
    method), both in the request's dtype (float32 even under "fast" autocast).
    """
    _CAPTURED.outputs, _CAPTURED.hw = [], tuple(req.X.shape[-2:])
    try:
        out = vjps(req, wrapped, start, stop, wrt=lambda: _captured_activation(layer, title))
    except RuntimeError as exc:
        if "not have been used in the graph" not in str(exc) and "does not require grad" not in str(exc):
            raise
        raise InvalidInputError(f"layer {layer!r} does not reach the model's output: the logits don't depend "
                                "on it, so it has no gradient. Choose a layer on the path to the output "
                                "(saliency_core.methods.cam_layer.conv_layers lists them)") from None
    finally:
        _CAPTURED.outputs = None  # drop the graph's activation
    return VJPs(out.logits, out.targets, {o: g.to(req.dtype) for o, g in out.grads.items()}, out.wrt.to(req.dtype))


def activations(req: Request, wrapped: torch.nn.Module, layer: str, title: str, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C), A (B, K, h, w)) of rows ``x`` (on the device, in its dtype) through ``wrapped``, without
    gradients: a forward pass only. Both in the request's dtype; the logits checked."""
    x = x.contiguous(memory_format=memory_format_of(req.module))
    _CAPTURED.outputs, _CAPTURED.hw = [], tuple(x.shape[-2:])
    try:
        with torch.no_grad(), precision_context(req.device, req.precision):
            logits = checked_forward(wrapped, x, req.check)
            a = _captured_activation(layer, title)
    finally:
        _CAPTURED.outputs = None
    return logits.to(req.dtype), a.to(req.dtype)


def upsample(coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W), bilinear with ``align_corners=False`` (Captum's and Score-CAM's own)."""
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


Weigh = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_cam(req: Request, layer: str | None, title: str, weigh: Weigh) -> MethodOutput:
    """attributions[obj] = upsample(ReLU(weigh(A, ∂f/∂A))), f = s_y or −L; (N, 1, H, W) >= 0.

    ``weigh(A, G) -> (B, 1, h, w)``: the method's combination of the
    layer's activation A and the gradient G (both (B, K, h, w), float32 or
    float64), before the ReLU. Both objectives come from one forward pass.
    """
    layer, wrapped = resolve_layer(req, layer, title)
    size = tuple(req.X.shape[2:])

    def step(start: int, stop: int):
        logits, targets, grads, a = activations_and_gradients(req, wrapped, layer, title, start, stop)
        return logits, targets, {obj: upsample(F.relu(weigh(a, g)), size) for obj, g in grads.items()}

    logits, targets, attributions = image_rows(req, step)
    return MethodOutput(attributions=attributions, maps={obj: a[:, 0] for obj, a in attributions.items()},
                        logits=logits, targets=targets, used={"layer": layer})
