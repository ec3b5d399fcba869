"""Deletion and insertion curves: does the model need the pixels a map ranks first?

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018, section 4.1. Pixels are ranked by decreasing
saliency. *Deletion* starts from the image and replaces the top-ranked pixels
(all colour channels) by a baseline, step by step; a faithful map makes the
target probability fall fast (low area under the curve). *Insertion* starts
from the baseline and puts the same pixels back; a faithful map makes the
probability rise fast (high area). A random pixel order (``order="random"``)
gives the reference curve every map should beat.

The perturbed images and the forward passes over them are
:mod:`saliency_core.evaluation.perturbations`; this module turns them into
curves, areas and rankings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from saliency_core.core.arguments import validate_request
from saliency_core.core.baselines import deletion_baseline, make_baseline, resolve_blur_sigma
from saliency_core.core.model_access import (
    TOP1_TARGET,
    ModelLike,
    device_of,
    input_dtype_of,
    module_for,
    require_eval,
)
from saliency_core.core.model_output import output_check
from saliency_core.core.passes import row_bytes
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.perturbations import (
    MapsLike,
    forward_target_probs,
    perturbed_images,
    pixel_ranks,
    random_ranks,
    rows_per_image,
    split_curves,
    step_counts,
    validate_maps,
)

ORDERS = ("map", "random")

Progress = Callable[[int, int], None]


@dataclass
class FaithfulnessResult:
    """Deletion and insertion curves of one :func:`deletion_insertion` call.

    Attributes
    ----------
    deletion : (N, steps + 1) float64, softmax probability of the target
        after deleting the top ``fractions[k]`` of pixels; ``deletion[:, 0]``
        is p(original image).
    insertion : (N, steps + 1) float64, the same after inserting them into
        the baseline; ``insertion[:, -1]`` is p(original image) and
        ``insertion[:, 0]`` p(baseline) (= ``deletion[:, -1]``).
    deletion_auc, insertion_auc : (N,) float64, trapezoid area under each
        curve over ``fractions`` (x from 0 to 1), so in [0, 1].
    fractions : (steps + 1,) float64, share of pixels perturbed at each step,
        ``round(k / steps * H * W) / (H * W)``.
    targets : (N,) int64, the class each curve follows (top-1 resolved).
    baseline : the baseline's name as used (:data:`saliency_core.core.baselines.BASELINES`).
    order : "map" or "random".
    precision : "exact" or "fast", the mode of the forward passes (see
        :func:`saliency_core.core.precision.precision_context`).
    seed : the seed of the random order (used by ``order="random"`` only).
    blur_sigma : the "blur" baseline's sigma in pixels, as used; None for
        the other baselines.
    """

    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    fractions: np.ndarray
    targets: np.ndarray
    baseline: str
    order: str
    precision: str
    seed: int
    blur_sigma: float | None


def _auc(curves: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis (written out: np.trapz/np.trapezoid changed names)."""
    return ((curves[:, 1:] + curves[:, :-1]) * 0.5 * np.diff(x)).sum(axis=1)


# --- public API ------------------------------------------------------------------


def deletion_insertion(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int],
                       maps: MapsLike | None, steps: int = 20, baseline: str = "blur", *,
                       order: str = "map", batch_size: int = 64, progress: Progress | None = None,
                       seed: int = 0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       blur_sigma: float | None = None, precision: str = "exact") -> FaithfulnessResult:
    """Deletion and insertion curves of a saliency map (Petsiuk et al., RISE, BMVC 2018).

    Parameters
    ----------
    model : classifier returning (N, C) logits, a ``torch.nn.Module`` or a
        :class:`~saliency_core.models.registry.LoadedModel`, in eval mode. Used as is:
        only forward passes under ``torch.inference_mode()``. float32 or
        float64 parameters; the images are made in the model's dtype.
    X : (N, 3, H, W) float tensor, normalised for the model; any device and
        float dtype.
    y : (N,) integer target classes; :data:`~saliency_core.core.model_access.TOP1_TARGET`
        (-1) means the model's top-1 on ``X``, kept for every perturbed image.
    maps : (N, H, W) tensor or array, importance of each pixel (larger =
        more important); may be None when ``order="random"``.
    steps : number of steps, >= 1; step k perturbs the top
        ``round(k / steps * H * W)`` pixels, all channels.
    baseline : "blur", "mean", "black" or "dataset_mean", see :func:`make_baseline`.
    order : "map" (decreasing map value, ties by row-major position) or
        "random" (a seeded random permutation of the pixels, the reference;
        the same for every image, so an image's result is independent of the batch).
    batch_size : perturbed images per forward pass at most (fewer when the
        memory budget for images of this size allows fewer,
        :func:`saliency_core.core.passes.rows_per_pass`); halved and retried on
        out-of-memory.
    progress : called as ``progress(done, total)`` after each forward pass,
        counting images (``total = N * 2 * steps``).
    seed : seed of the random orders (``order="random"`` only).
    mean, std : the model's normalisation, for the "black" baseline; taken
        from a LoadedModel's ``.preprocessing`` when omitted.
    blur_sigma : sigma of the "blur" baseline in pixels; default 5 px scaled
        by min(H, W) / 224.
    precision : one of :data:`saliency_core.core.precision.PRECISIONS`. "exact":
        strict float32 (TF32 off on CUDA, whatever the process-wide setting);
        "fast": on CUDA, TF32 and float16 autocast (with a LoadedModel's
        channels_last copy); elsewhere the same as exact.

    Returns
    -------
    :class:`FaithfulnessResult` (numpy arrays on the CPU).

    Raises
    ------
    ModelOutputError : the model raised on an image (original or perturbed),
        or returned logits that are not (N, C) finite floats, C its classes.

    Notes
    -----
    Step 0 of deletion and step ``steps`` of insertion are the same image
    (the original), as are deletion's last and insertion's first step (the
    baseline): each pair is computed once, so ``N * 2 * steps`` images go
    through the model and ``deletion[:, 0] == insertion[:, -1]`` exactly.
    """
    y = validate_request(X, y, precision=precision).y
    module = module_for(model, precision)
    require_eval(module)
    baseline, norm = deletion_baseline(baseline, model, mean, std)
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InvalidInputError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    steps = int(steps)
    n, _, h, w = X.shape
    hw = h * w
    device = device_of(module)
    check = output_check(model)
    input_row_bytes = row_bytes(X.shape[1:], input_dtype_of(module))

    if order == "map":
        ranks = pixel_ranks(validate_maps(maps, (n, h, w)))
    else:
        ranks = random_ranks(n, h, w, seed)
    x = X.detach().to(device=device, dtype=input_dtype_of(module))
    base = make_baseline(x, baseline, mean=norm[0] if norm else None, std=norm[1] if norm else None,
                         blur_sigma=blur_sigma)
    ranks = ranks.to(device=device, dtype=torch.int32)  # H*W < 2**31; int32 halves the memory

    counts = step_counts(steps, hw)
    per_image = rows_per_image(steps)
    rows, build = perturbed_images(x, base, ranks, counts)

    if bool((y == TOP1_TARGET).any()):
        # Resolve "top-1" targets on the original images first, so every
        # perturbed image follows the same class.
        _, best = forward_target_probs(module, n, lambda a, b: x[a:b], torch.full((n,), TOP1_TARGET), batch_size,
                                       device, precision, None, check, input_row_bytes)
        y = torch.where(y == TOP1_TARGET, best, y)

    on_chunk = (lambda done: progress(done, rows)) if progress is not None else None
    probs, _ = forward_target_probs(module, rows, build, y.repeat_interleave(per_image), batch_size, device,
                                    precision, on_chunk, check, input_row_bytes)
    deletion, insertion = split_curves(probs.view(n, per_image).numpy())
    fractions = np.asarray(counts, dtype=np.float64) / hw
    return FaithfulnessResult(
        deletion=deletion,
        insertion=insertion,
        deletion_auc=_auc(deletion, fractions),
        insertion_auc=_auc(insertion, fractions),
        fractions=fractions,
        targets=y.cpu().numpy().astype(np.int64),
        baseline=baseline,
        order=order,
        precision=precision,
        seed=int(seed),
        blur_sigma=resolve_blur_sigma(X.shape, blur_sigma) if baseline == "blur" else None,
    )


RANKING_COLUMNS = ("rank", "order", "deletion_auc", "insertion_auc", "insertion_minus_deletion")


def deletion_insertion_orders(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int],
                              maps: Mapping[str, MapsLike], steps: int = 20, baseline: str = "blur", *,
                              random: str | None = "random", batch_size: int = 64,
                              progress: Progress | None = None, seed: int = 0,
                              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                              blur_sigma: float | None = None,
                              precision: str = "exact") -> dict[str, FaithfulnessResult]:
    """Deletion and insertion curves of several pixel orders of the same images, in one batched pass.

    Parameters
    ----------
    maps : order name -> (N, H, W) map (e.g. ``{"score": ..., "loss": ...}``),
        ranked as ``order="map"`` ranks them.
    random : name of the seeded random order added after the maps (the
        reference a map has to beat), or None for no random order.
    progress : ``progress(done, total)`` after each forward pass, counting
        images over all orders (``total = len(orders) * N * 2 * steps``).
    Everything else as in :func:`deletion_insertion`.

    Returns
    -------
    order name -> :class:`FaithfulnessResult`, the maps' names first, then
    ``random``. Each equals :func:`deletion_insertion` of that order alone
    (``order="random"`` with ``seed`` for the random one).

    Notes
    -----
    The perturbed images of every order share one stream of forward passes
    (chunks of ``batch_size`` run across orders, so no chunk is left part
    empty at the end of an order), and validation and top-1 resolution are
    done once. Per image and order: ``2 * steps`` forward passes, as alone.
    """
    validate_request(precision=precision)
    if random is not None and random in maps:
        raise InvalidInputError(f'"{random}" is the name of the reference order; name the map differently')
    names = [*maps, *([random] if random is not None else [])]
    if not names:
        raise InvalidInputError("no maps to compare")
    module = module_for(model, precision)
    require_eval(module)
    y = validate_request(X, y).y
    n, _, h, w = X.shape
    # The random order as a map whose decreasing values give exactly its ranks.
    ranked = [validate_maps(maps[name], (n, h, w)) for name in maps]
    if random is not None:
        ranked.append(-random_ranks(n, h, w, seed).to(torch.float64))
    if bool((y == TOP1_TARGET).any()):
        # Resolve "top-1" once here, not once per order inside deletion_insertion.
        device = device_of(module)
        x = X.detach().to(device=device, dtype=input_dtype_of(module))
        _, best = forward_target_probs(module, n, lambda a, b: x[a:b], torch.full((n,), TOP1_TARGET),
                                       max(1, int(batch_size)), device, precision, None, output_check(model),
                                       row_bytes(X.shape[1:], x.dtype))
        y = torch.where(y == TOP1_TARGET, best, y)
    k = len(names)
    joint = deletion_insertion(model, X.detach().repeat(k, 1, 1, 1), y.repeat(k), torch.cat(ranked), steps,
                               baseline, order="map", batch_size=batch_size, progress=progress, mean=mean,
                               std=std, blur_sigma=blur_sigma, precision=precision)
    out = {}
    for i, name in enumerate(names):
        part = slice(i * n, (i + 1) * n)
        out[name] = FaithfulnessResult(
            deletion=joint.deletion[part], insertion=joint.insertion[part],
            deletion_auc=joint.deletion_auc[part], insertion_auc=joint.insertion_auc[part],
            fractions=joint.fractions, targets=joint.targets[part], baseline=joint.baseline,
            order="random" if name == random else "map", precision=joint.precision, seed=int(seed),
            blur_sigma=joint.blur_sigma,
        )
    return out


def ranking_table(results: Mapping[str, FaithfulnessResult], image: int = 0) -> pd.DataFrame:
    """The orders of one image ranked by insertion AUC minus deletion AUC, best first.

    Parameters
    ----------
    results : order name -> result, e.g. from :func:`deletion_insertion_orders`.
    image : index of the image in the results.

    Returns
    -------
    DataFrame with columns ``rank, order, deletion_auc, insertion_auc,
    insertion_minus_deletion``, one row per order, sorted by the last column
    (largest first; ties keep the mapping's order); rank counts from 1. A
    faithful map has low deletion and high insertion AUC, so a large
    difference; a map below the random order tells little.
    """
    if not results:
        raise InvalidInputError("no results to rank")
    n = min(r.deletion_auc.shape[0] for r in results.values())
    if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < n:
        raise InvalidInputError(f"image must be an index from 0 to {n - 1}, got {image!r}")
    table = pd.DataFrame({
        "order": list(results),
        "deletion_auc": [float(r.deletion_auc[image]) for r in results.values()],
        "insertion_auc": [float(r.insertion_auc[image]) for r in results.values()],
    })
    table["insertion_minus_deletion"] = table["insertion_auc"] - table["deletion_auc"]
    table = table.sort_values("insertion_minus_deletion", ascending=False, kind="stable", ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1, dtype=np.int64))
    return table[list(RANKING_COLUMNS)]
