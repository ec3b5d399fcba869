"""Chunked runs: how many rows one pass through the model may hold (a memory budget over the
input's size), and running a computation in such chunks, halving them on out-of-memory."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from saliency_core.errors import InvalidInputError

T = TypeVar("T")


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


#: Forward-only rows per pass on a CPU at most, whatever larger chunk a caller allows (the pages' analyses allow
#: 32, the batch job its --batch-size): small chunks keep a layer's activations in the cache. EfficientNet-Lite0
#: at 224 px on the 2-core CPU, rows of 2, 4, 8, 16, 32, 55 per pass: 29-54, 22-53, 26-27, 39-44, 35-57, 40-64 ms
#: a row (two rounds on a loaded machine, 2026-12-06); the Faithfulness page runs its forward passes 8 at a time
#: on a CPU for the same reason.
CPU_FORWARD_ROWS = 8


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
