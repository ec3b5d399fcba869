"""What the engine accepts as a model, and a batch for it.

:data:`ModelLike` is a bare module or a :class:`LoadedModelLike` (such as
``saliency_core.models.registry.LoadedModel``), resolved here and nowhere else; the
model's device, input dtype and memory layout; the eval-mode rule; batch
validation and the engine's top-1 target (:data:`TOP1_TARGET`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Union, runtime_checkable

import torch

from saliency_core.errors import InvalidInputError

# The engine's one special target: "the model's top-1 prediction", resolved
# from the same forward pass. (The pages' "automatic" target, true label else
# top-1, is saliency_core.evaluation.analysis.AUTO_TARGET; it is translated before here.)
TOP1_TARGET = -1


def validate_batch(X: torch.Tensor, y: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Check an (N, 3, H, W) float batch and its (N,) targets; return y as (N,) int64.

    Targets are class indices >= 0 or :data:`TOP1_TARGET` (-1, "the model's
    top-1 prediction"); the class count is checked later, against the logits.
    """
    if not isinstance(X, torch.Tensor) or X.dim() != 4 or X.shape[1] != 3:
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise InvalidInputError(f"X must be an (N, 3, H, W) tensor, got {shape}")
    if not X.is_floating_point():
        raise InvalidInputError(f"X must be a float tensor normalised for the model, got {X.dtype}")
    if X.shape[0] == 0:
        raise InvalidInputError("X holds no images")
    if not bool(torch.isfinite(X).all()):
        # Checked here so that NaN logits later are the model's doing, and said to be (model_output).
        raise InvalidInputError("X holds NaN or infinite values; normalise a real image for the model")
    y = torch.as_tensor(y)
    if y.dim() == 0:
        y = y[None]
    if (y.dim() != 1 or y.shape[0] != X.shape[0] or y.is_floating_point() or y.is_complex()
            or bool((y < TOP1_TARGET).any())):
        raise InvalidInputError(
            f"y must be (N,) integer class indices (or {TOP1_TARGET} for the model's top-1) with N={X.shape[0]}, "
            f"got {tuple(y.shape)} {y.dtype}"
        )
    return y.long()


@runtime_checkable
class LoadedModelLike(Protocol):
    """A classifier with what the engine can use beyond the module (``saliency_core.models.registry.LoadedModel``).

    model : the frozen, eval-mode module returning (N, C) logits
    preprocessing : has ``mean`` and ``std`` (three floats each), the input normalisation
    module_for(precision) : the module to run for a precision mode (e.g. a channels_last copy)
    """

    model: torch.nn.Module
    preprocessing: object

    def module_for(self, precision: str) -> torch.nn.Module: ...


#: What every engine function takes as ``model``.
ModelLike = Union[torch.nn.Module, LoadedModelLike]  # noqa: UP007 -- a runtime alias, kept readable


def unwrap_module(model: ModelLike) -> torch.nn.Module:
    """The module of a :class:`LoadedModelLike`, or the module itself."""
    module = model.model if isinstance(model, LoadedModelLike) else model
    if not isinstance(module, torch.nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module or a LoadedModel, got {type(model).__name__}")
    return module


def preprocessing_of(model: ModelLike) -> object | None:
    """The input normalisation of a :class:`LoadedModelLike` (``.mean``, ``.std``); None for a bare module."""
    return model.preprocessing if isinstance(model, LoadedModelLike) else None


#: The attribute an unflattened torch.export program carries: {dotted name: the class its module was, as
#: "package.module.Class"} (``saliency_core.models.custom_model_loading`` records it from the program).
SOURCE_CLASSES = "source_classes"


def source_class(root: torch.nn.Module, name: str = "") -> str:
    """"package.module.Class" of the submodule ``name`` of ``root`` ("" for ``root``): the class it was before
    torch.export, whose unflattened modules are all ``InterpreterModule``, else its own class."""
    recorded = getattr(root, SOURCE_CLASSES, None)
    if isinstance(recorded, dict) and name in recorded:
        return recorded[name]
    cls = type(root.get_submodule(name))
    return f"{cls.__module__}.{cls.__qualname__}"


def is_conv2d(root: torch.nn.Module, name: str) -> bool:
    """Whether the submodule ``name`` is (or, in an exported program, was) a 2-D convolution."""
    return isinstance(root.get_submodule(name), torch.nn.Conv2d) or \
        source_class(root, name) == "torch.nn.modules.conv.Conv2d"


def require_eval(module: torch.nn.Module) -> None:
    """Refuse a module with any submodule in train mode.

    The model is shared: in train mode BatchNorm would update its running
    statistics (even under inference_mode) and dropout would make results
    random. The caller's mode is never toggled here.
    """
    if any(m.training for m in module.modules()):
        raise InvalidInputError("the model must be in eval mode (call model.eval() once, beforehand)")


def freeze(module: torch.nn.Module) -> None:
    """Put every submodule in eval mode and stop every parameter collecting gradients, in place.

    Flag by flag rather than ``.eval()`` and ``.requires_grad_(False)``: an
    unflattened torch.export program refuses ``.eval()`` and a TorchScript
    module refuses ``requires_grad_``; the flags are what :func:`require_eval`
    and autograd read.
    """
    for m in module.modules():
        m.training = False
    for p in module.parameters():
        p.requires_grad_(False)


def device_of(module: torch.nn.Module) -> torch.device:
    """Where the module's parameters (or buffers) live; CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def input_dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype to hand the model its input in: that of its first floating-point parameter.

    float32 (also for a module without floating-point parameters) or float64
    (``model.double()``, e.g. for finite-difference checks): the input is
    cast to it, so the whole pass runs in the model's precision. float16 and
    bfloat16 parameters are refused: their input gradients lose too much
    (``precision="fast"`` runs a float32 model under float16 autocast instead).
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    if dtype not in (torch.float32, torch.float64):
        raise InvalidInputError(
            f"the model's parameters are {dtype}; saliency runs float32 or float64 models "
            '(load it in float32, and use precision="fast" for float16 autocast on CUDA)'
        )
    return dtype


def memory_format_of(module: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's 4-D weights are stored that way.

    Inputs should match: a mismatch makes every convolution convert its input.
    """
    for p in module.parameters():
        if p.dim() == 4:
            if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                return torch.channels_last
            return torch.contiguous_format
    return torch.contiguous_format


def module_for(model: ModelLike, precision: str) -> torch.nn.Module:
    """The module to run for a precision mode.

    A :class:`~saliency_core.models.registry.LoadedModel` picks its variant
    (``LoadedModel.module_for``: a channels_last copy for "fast" on CUDA);
    a bare module is returned as is.
    """
    return model.module_for(precision) if isinstance(model, LoadedModelLike) else unwrap_module(model)
