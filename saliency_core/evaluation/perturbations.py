"""The perturbed images of deletion and insertion, and the model's probability of the target on them.

Petsiuk, Das & Saenko, "RISE", BMVC 2018, section 4.1; the curves and their
areas are :mod:`saliency_core.evaluation.faithfulness`. Pixels are ranked by
decreasing map value (:func:`pixel_ranks`) or in a seeded random order
(:func:`random_ranks`); step k of ``steps`` perturbs the top
``round(k / steps * H * W)`` of them (:func:`step_counts`), all colour
channels. Deletion shows the baseline there and the image elsewhere;
insertion the reverse.

The model is shared by every user of the dashboard, so it is only ever run
forward under ``torch.inference_mode()``: no parameter, buffer, ``.grad`` or
train/eval mode is touched, and the caller's tensors are not modified.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from saliency_core.core.model_access import TOP1_TARGET, input_dtype_of, memory_format_of
from saliency_core.core.model_output import OutputCheck, checked_forward
from saliency_core.core.passes import run_in_chunks
from saliency_core.core.precision import precision_context
from saliency_core.errors import InvalidInputError

MapsLike = torch.Tensor | np.ndarray


def validate_maps(maps: MapsLike | None, shape: tuple[int, int, int]) -> torch.Tensor:
    if maps is None:
        raise InvalidInputError('maps are needed for order="map" (order="random" needs none)')
    if isinstance(maps, np.ndarray):
        if maps.dtype == object or maps.dtype.kind not in "biuf":
            raise InvalidInputError(f"maps must hold real numbers, got {maps.dtype}")
        maps = torch.from_numpy(np.ascontiguousarray(maps))
    if not isinstance(maps, torch.Tensor):
        raise InvalidInputError(f"maps must be an (N, H, W) tensor or array, got {type(maps).__name__}")
    if tuple(maps.shape) != shape:
        raise InvalidInputError(f"maps must have shape (N, H, W) = {shape}, got {tuple(maps.shape)}")
    maps = maps.detach().to(torch.float64)
    if not bool(torch.isfinite(maps).all()):
        raise InvalidInputError("maps contain NaN or infinite values")
    return maps


def pixel_ranks(maps: MapsLike) -> torch.Tensor:
    """Rank of every pixel when sorted by decreasing map value (0 = most important).

    Parameters
    ----------
    maps : (N, H, W) tensor or array of finite importance values.

    Returns
    -------
    (N, H, W) int64 tensor (on the maps' device), each image a permutation of
    0..H*W-1. Ties go to the pixel that comes first in row-major order (a
    stable sort of the negated values), so the ranking is deterministic.
    """
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(np.ascontiguousarray(maps))
    n, h, w = maps.shape
    flat = maps.detach().reshape(n, h * w).to(torch.float64)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    return ranks.view(n, h, w)


def random_ranks(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    # One permutation, a function of the seed and the size only, shared by every image: an image's random
    # order (and its AUCs) must not depend on the batch it lands in, or a dataset job's numbers would change
    # with --batch-size and the number of ranks. A private CPU generator: the same on any device, and the
    # global RNG is left alone.
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(h * w, generator=g).view(1, h, w).expand(n, h, w).clone()


def step_counts(steps: int, pixels: int) -> list[int]:
    """How many pixels each step perturbs: ``round(k / steps * pixels)`` for k = 0..steps."""
    return [round(k / steps * pixels) for k in range(steps + 1)]


def rows_per_image(steps: int) -> int:
    """The distinct perturbed images of one image: 2 * steps (see :func:`perturbed_images`)."""
    return 2 * steps


def perturbed_images(x: torch.Tensor, base: torch.Tensor, ranks: torch.Tensor,
                     counts: list[int]) -> tuple[int, Callable[[int, int], torch.Tensor]]:
    """Every perturbed image of deletion and insertion, made a chunk of rows at a time.

    Parameters
    ----------
    x, base : (N, 3, H, W) images and their baselines, on one device, in the model's dtype.
    ranks : (N, H, W) int32 pixel ranks on that device (0 = perturbed first).
    counts : :func:`step_counts`, steps + 1 pixel counts.

    Returns
    -------
    ``(rows, build)``: ``build(start, stop)`` is the (stop - start, 3, H, W)
    batch of rows ``start:stop`` of ``rows = N * rows_per_image(steps)``,
    image by image; :func:`split_curves` reads the curves back from them.
    """
    steps = len(counts) - 1
    n = x.shape[0]
    device = x.device
    # Each image needs 2 * steps distinct inputs: deletion steps 0..steps
    # (original ... all baseline), then insertion steps 1..steps-1 (its
    # step 0 is the all-baseline image, its last the original).
    per_image = rows_per_image(steps)
    thresholds = torch.tensor(counts + counts[1:steps], dtype=torch.int32, device=device)
    inserting = torch.tensor([False] * (steps + 1) + [True] * (steps - 1), device=device)
    rows = n * per_image
    row_image = torch.arange(n, device=device).repeat_interleave(per_image)
    row_threshold = thresholds.repeat(n)
    row_inserting = inserting.repeat(n)

    def build(start: int, stop: int) -> torch.Tensor:
        # Masks straight from the rank tensor: pixel p of step k is perturbed
        # iff rank[p] < n_k, so a whole chunk is one comparison and one where.
        img = row_image[start:stop]
        perturbed = ranks[img] < row_threshold[start:stop, None, None]
        # Deletion shows the baseline where perturbed; insertion the reverse.
        use_base = perturbed ^ row_inserting[start:stop, None, None]
        return torch.where(use_base[:, None], base[img], x[img])

    return rows, build


def split_curves(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2 * steps) probabilities of :func:`perturbed_images`' rows -> (deletion, insertion), each (N, steps + 1).

    Step 0 of deletion and step ``steps`` of insertion are the same image
    (the original), as are deletion's last and insertion's first step (the
    baseline): each pair was computed once, so ``deletion[:, 0] == insertion[:, -1]`` exactly.
    """
    steps = table.shape[1] // 2
    deletion = table[:, : steps + 1].copy()
    insertion = np.concatenate([table[:, steps : steps + 1], table[:, steps + 1 :], table[:, :1]], axis=1)
    return deletion, insertion


def forward_target_probs(module: torch.nn.Module, rows: int, build: Callable[[int, int], torch.Tensor],
                         targets: torch.Tensor, batch_size: int, device: torch.device, precision: str,
                         on_chunk: Callable[[int], None] | None, check: OutputCheck,
                         input_row_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``build(start, stop)`` batches through the model; p(target) and top-1 per row.

    ``targets`` (rows,) may hold TOP1_TARGET, meaning "the row's own top-1 class".
    Every chunk's logits must pass ``check`` (else ModelOutputError); chunks
    hold at most ``batch_size`` rows and what the memory budget allows for
    rows of ``input_row_bytes``.
    Each chunk's forward pass runs under ``precision_context(device, precision)``
    (softmax after it in the model's dtype, float32 or float64). Returns two
    CPU tensors (rows,): float64 probabilities and int64 top-1.
    """
    probs = torch.empty(rows, dtype=torch.float64)
    top1 = torch.empty(rows, dtype=torch.int64)
    fmt = memory_format_of(module)
    dtype = input_dtype_of(module)

    def step(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            batch = build(start, stop).to(device=device, dtype=dtype)
            with precision_context(device, precision):
                logits = checked_forward(module, batch.contiguous(memory_format=fmt), check)
            logits = logits.to(dtype)  # float16 under autocast
            t = targets[start:stop].to(logits.device)
            best = logits.argmax(dim=1)
            t = torch.where(t == TOP1_TARGET, best, t)
            if int(t.max()) >= logits.shape[1]:
                raise InvalidInputError(
                    f"target class {int(t.max())} is out of range for a model with {logits.shape[1]} classes"
                )
            p = logits.softmax(dim=1).gather(1, t[:, None]).squeeze(1)
            return p.double().cpu(), best.cpu()

    for start, stop, (p, best) in run_in_chunks(rows, batch_size, device, step, input_row_bytes=input_row_bytes,
                                                backward=False):
        probs[start:stop], top1[start:stop] = p, best
        if on_chunk is not None:
            on_chunk(stop)
    return probs, top1
