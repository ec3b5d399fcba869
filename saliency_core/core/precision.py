"""The precision modes (:data:`PRECISIONS`): "exact" (strict float32, TF32 off on CUDA) or "fast"
(float16 autocast on CUDA), as contexts; and CUDA synchronisation for timings."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from saliency_core.errors import InvalidInputError

PRECISIONS = ("exact", "fast")


# cuDNN/cuBLAS precision flags are process-wide; GPU work is serial anyway,
# so callers that change them take turns.
_CUDA_FLAGS_LOCK = threading.Lock()


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


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on a CUDA device; a no-op elsewhere.

    CUDA kernels run asynchronously, so a clock read after a call that only
    queued them measures the queueing: synchronise before every read.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
