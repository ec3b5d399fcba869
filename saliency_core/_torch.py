"""Small torch helpers shared by the gradient, faithfulness and sanity code.

What the engine accepts as a model (:data:`ModelLike`: a bare module or a
:class:`LoadedModelLike` such as ``models.LoadedModel``, resolved in one
place); batch validation and the engine's top-1 target (:data:`TOP1_TARGET`); the
precision modes (:data:`PRECISIONS`, :func:`precision_context`); the model's
device, dtype and layout; CUDA synchronisation for timing; chunked runs
whose rows per pass come from a memory budget and back off on out-of-memory.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol, TypeVar, Union, runtime_checkable

import torch

from saliency_core.errors import InvalidInputError

T = TypeVar("T")

# The engine's one special target: "the model's top-1 prediction", resolved
# from the same forward pass. (The pages' "automatic" target, true label else
# top-1, is saliency_core.analysis.AUTO_TARGET; it is translated before here.)
TOP1_TARGET = -1

PRECISIONS = ("exact", "fast")

# cuDNN/cuBLAS precision flags are process-wide; GPU work is serial anyway,
# so callers that change them take turns.
_CUDA_FLAGS_LOCK = threading.Lock()


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
    """A classifier with what the engine can use beyond the module (``saliency_core.models.LoadedModel``).

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


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`, else InvalidInputError."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


@contextmanager
def tf32_context(device: torch.device, precision: str) -> Iterator[None]:
    """TF32 off ("exact") or on ("fast") for CUDA convolutions and matmuls inside the block.

    The flags are process-wide, so the block holds a lock: other threads'
    blocks wait, and the old flags are restored on exit. Elsewhere than
    CUDA a no-op (CPU and MPS compute float32 convolutions in float32 either way).
    """
    check_precision(precision)
    if torch.device(device).type != "cuda":
        yield
        return
    fast = precision == "fast"
    with _CUDA_FLAGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-flag deprecation notices
        old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = fast
        torch.backends.cuda.matmul.allow_tf32 = fast
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """float16 autocast for "fast" on CUDA; otherwise a no-op.

    Wrap forward passes only: a backward pass follows the forward's types.
    """
    check_precision(precision)
    if torch.device(device).type == "cuda" and precision == "fast":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


@contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    """Run forward passes in a precision mode: :func:`tf32_context` and :func:`autocast_context` together.

    "exact": strict float32 (TF32 off on CUDA); "fast": on CUDA, TF32 on and
    float16 autocast. On other devices both modes are plain float32 and this
    is a no-op. For a forward *and* backward pass (the gradients), hold
    :func:`tf32_context` around both and :func:`autocast_context` around the
    forward only. Raises InvalidInputError for an unknown ``precision``.
    """
    with tf32_context(device, precision), autocast_context(device, precision):
        yield


def module_for(model: ModelLike, precision: str) -> torch.nn.Module:
    """The module to run for a precision mode.

    A :class:`~saliency_core.models.LoadedModel` picks its variant
    (``LoadedModel.module_for``: a channels_last copy for "fast" on CUDA);
    a bare module is returned as is.
    """
    return model.module_for(precision) if isinstance(model, LoadedModelLike) else unwrap_module(model)


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on a CUDA device; a no-op elsewhere.

    CUDA kernels run asynchronously, so a clock read after a call that only
    queued them measures the queueing: synchronise before every read.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- memory of one pass

#: Environment variable: the memory one pass (a chunk of rows through the model) may take, in MB.
PASS_MEMORY_ENV = "SALIENCY_PASS_MEMORY_MB"
#: The budget on the CPU and MPS: 2 GB per computation, so that the dashboard's two compute slots
#: (SALIENCY_COMPUTE_SLOTS) stay near 4 GB on a server whose 8 sessions peaked at 2.1 GB (README).
CPU_PASS_MEMORY_MB = 2048
#: On CUDA, by default a quarter of the device's memory: the rest is for the weights, cuDNN's
#: workspace, the caching allocator and other work. A big GPU rarely needs the variable.
CUDA_PASS_MEMORY_SHARE = 0.25
#: What a pass holds per byte of the input rows it runs, measured as peak RSS per row of SmoothGrad
#: (both objectives, float32, CPU, channels_last) at 224 px: SqueezeNet 1.1 51, ResNet-18 48,
#: MobileNet V3 95, VGG-16 159, EfficientNet-Lite0 152, ConvNeXt-Tiny 146, EfficientNet-B0 180,
#: ResNet-50 184, ViT-B/16 225 (the worst). Rounded up: a model must be wider than any of these to
#: go over the budget. A forward pass without gradients keeps only a layer or two alive: VGG-16
#: peaked at 43 (ResNet-50 21, ViT-B/16 23, ConvNeXt-Tiny 27).
GRADIENT_BYTES_PER_INPUT_BYTE = 256
FORWARD_BYTES_PER_INPUT_BYTE = 64


@functools.lru_cache(maxsize=16)
def _cuda_memory(index: int) -> int:
    return torch.cuda.get_device_properties(index).total_memory


def pass_memory_bytes(device: torch.device) -> int:
    """The memory one pass may take on ``device``: :data:`PASS_MEMORY_ENV` (MB) if set, else the default.

    Raises InvalidInputError for a value that is not a positive whole number of MB.
    """
    value = os.environ.get(PASS_MEMORY_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise InvalidInputError(f"{PASS_MEMORY_ENV} must be a whole number of MB >= 1, got {value!r}")
        return int(value) << 20
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(_cuda_memory(index) * CUDA_PASS_MEMORY_SHARE)
    return CPU_PASS_MEMORY_MB << 20


def row_bytes(row_shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of one input row (e.g. ``(3, H, W)``) in ``dtype``: what :func:`rows_per_pass` scales."""
    return math.prod(int(d) for d in row_shape) * torch.empty((), dtype=dtype).element_size()


def rows_per_pass(input_row_bytes: int, device: torch.device, *, backward: bool = True) -> int:
    """How many rows of ``input_row_bytes`` one pass may hold: the budget over the estimated cost of a row.

    A row costs its input bytes times :data:`GRADIENT_BYTES_PER_INPUT_BYTE`
    (forward and backward) or :data:`FORWARD_BYTES_PER_INPUT_BYTE` (forward
    only). At least 1: a single row larger than the budget still runs (the
    crop limit of the models folder bounds it). EfficientNet-Lite0 at 224 px
    gets 13 gradient rows on the CPU; a 1024 px crop, 1.
    """
    ratio = GRADIENT_BYTES_PER_INPUT_BYTE if backward else FORWARD_BYTES_PER_INPUT_BYTE
    return max(1, pass_memory_bytes(device) // max(1, input_row_bytes * ratio))


def run_in_chunks(n: int, max_chunk: int | None, device: torch.device, step: Callable[[int, int], T], *,
                  input_row_bytes: int, backward: bool = True) -> Iterator[tuple[int, int, T]]:
    """Call ``step(start, stop)`` over ``range(n)`` in chunks, halving the chunk on out-of-memory.

    The chunk is the smallest of ``n``, ``max_chunk`` (None: no limit of the
    caller's) and :func:`rows_per_pass` for rows of ``input_row_bytes`` (see
    :func:`row_bytes`): every pass the engine runs is bounded by the memory
    budget, whatever the input size. ``backward``: the step runs a backward
    pass too (gradients), which keeps activations alive.

    Yields ``(start, stop, result)`` in order. A chunk of one that still runs
    out of memory re-raises. The retry happens outside the ``except`` block,
    so the failed attempt's tensors (held by its traceback) are freed first.
    """
    budget = rows_per_pass(input_row_bytes, device, backward=backward)
    chunk = max(1, min(max_chunk or n, n, budget))
    start = 0
    while start < n:
        stop = min(start + chunk, n)
        try:
            result = step(start, stop)
        except RuntimeError as exc:
            if not is_oom(exc) or chunk == 1:
                raise
            failed = True
        else:
            failed = False
        if failed:
            chunk = max(1, chunk // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        yield start, stop, result
        start = stop
