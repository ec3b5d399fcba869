"""Small torch helpers shared by the gradient, faithfulness and sanity code."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from saliency_core.errors import InvalidInputError

T = TypeVar("T")


def validate_batch(X: torch.Tensor, y: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Check an (N, 3, H, W) float batch and its (N,) targets (-1 allowed: top-1); return y as int64."""
    if not isinstance(X, torch.Tensor) or X.dim() != 4 or X.shape[1] != 3:
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise InvalidInputError(f"X must be an (N, 3, H, W) tensor, got {shape}")
    if not X.is_floating_point():
        raise InvalidInputError(f"X must be a float tensor normalised for the model, got {X.dtype}")
    if X.shape[0] == 0:
        raise InvalidInputError("X holds no images")
    y = torch.as_tensor(y)
    if y.dim() == 0:
        y = y[None]
    if y.dim() != 1 or y.shape[0] != X.shape[0] or y.is_floating_point() or y.is_complex() or bool((y < -1).any()):
        raise InvalidInputError(
            f"y must be (N,) integer class indices with N={X.shape[0]}, got {tuple(y.shape)} {y.dtype}"
        )
    return y.long()


def unwrap_module(model: object) -> torch.nn.Module:
    """The module of a :class:`~saliency_core.models.LoadedModel`, or the module itself."""
    inner = getattr(model, "model", None)
    module = inner if isinstance(inner, torch.nn.Module) else model
    if not isinstance(module, torch.nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module or a LoadedModel, got {type(model).__name__}")
    return module


def device_of(module: torch.nn.Module) -> torch.device:
    """Where the module's parameters (or buffers) live; CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


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


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_in_chunks(n: int, max_chunk: int | None, device: torch.device,
                  step: Callable[[int, int], T]) -> Iterator[tuple[int, int, T]]:
    """Call ``step(start, stop)`` over ``range(n)`` in chunks, halving the chunk on out-of-memory.

    Yields ``(start, stop, result)`` in order. A chunk of one that still runs
    out of memory re-raises. The retry happens outside the ``except`` block,
    so the failed attempt's tensors (held by its traceback) are freed first.
    """
    chunk = max(1, min(max_chunk or n, n))
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
