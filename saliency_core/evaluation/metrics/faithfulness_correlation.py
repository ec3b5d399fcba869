"""Faithfulness correlation (Bhatt, Weller & Moura, "Evaluating and Aggregating Feature-based Model
Explanations", IJCAI 2020).

``runs`` times, a random subset S of ``subset_size`` pixels (all colour channels) is replaced by a
baseline; the metric is the Pearson correlation, over the runs, between the map's sum over S and the drop
of the model output, f(x) − f(x with S replaced). f is what the map explains (s_y, L or −L:
:mod:`~saliency_core.evaluation.metrics._common`). Higher is better (1: the map predicts the drops).

Quantus 0.6.0 draws S among the C·H·W features of the map broadcast to every channel; here S is drawn
among pixels and covers all channels, as maps are per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from saliency_core.core.baselines import BASELINES, deletion_baseline, make_baseline
from saliency_core.core.model_access import ModelLike
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics._common import (
    Clean,
    Progress,
    check_count,
    check_maps,
    check_output,
    clean_pass,
    forward_rows,
    image_generator,
    image_seeds,
    pearson,
    row_generator,
)
from saliency_core.evaluation.metrics.declaration import Metric, MetricCost
from saliency_core.evaluation.perturbations import MapsLike
from saliency_core.methods.declaration import Param


def random_subsets(n: int, runs: int, pixels: int, subset_size: int, seed: int) -> torch.Tensor:
    """(n, runs, subset_size) int64 pixel indices: row ``i * runs + r`` drawn by :func:`row_generator`.

    By position in the batch: :func:`faithfulness_correlation` draws by image instead (:func:`image_subsets`).
    """
    out = torch.empty(n * runs, subset_size, dtype=torch.int64)
    for row in range(n * runs):
        out[row] = torch.randperm(pixels, generator=row_generator(seed, row))[:subset_size]
    return out.view(n, runs, subset_size)


def image_subsets(seeds: torch.Tensor, runs: int, pixels: int, subset_size: int) -> torch.Tensor:
    """(N, runs, subset_size) int64 pixel indices, each run's a uniform random subset: image i's from one
    generator keyed on ``seeds[i]`` (:func:`~saliency_core.evaluation.metrics._common.image_seeds`), the
    ``subset_size`` largest of ``runs`` rows of ``pixels`` uniform draws (ties, of probability ~0, by
    position), so an image's subsets do not depend on the batch around it."""
    out = torch.empty(len(seeds), runs, subset_size, dtype=torch.int64)
    for i, s in enumerate(seeds.tolist()):
        u = torch.rand((runs, pixels), generator=image_generator(s), dtype=torch.float64)
        out[i] = u.topk(subset_size, dim=1, sorted=True).indices
    return out


def faithfulness_correlation(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], maps: MapsLike,
                             *, output: str = "s_y", subset_size: int = 224, runs: int = 100,
                             baseline: str = "dataset_mean", seed: int = 0, batch_size: int = 64,
                             precision: str = "exact", mean: Sequence[float] | None = None,
                             std: Sequence[float] | None = None, subsets: torch.Tensor | None = None,
                             clean: Clean | None = None, progress: Progress | None = None) -> np.ndarray:
    """Pearson r between the map's sum over random pixel subsets and the output drop when they are removed.

    Parameters
    ----------
    model : classifier (module or LoadedModel) in eval mode; X : (N, 3, H, W) normalised; y : (N,) (-1: top-1)
    maps : (N, H, W) the maps to judge
    output : "s_y", "L" or "−L", what the maps explain (:func:`~saliency_core.evaluation.metrics._common.output_for`)
    subset_size : pixels per subset (< H * W); runs : subsets per image (>= 2)
    baseline : what removed pixels become (:data:`saliency_core.core.baselines.BASELINES`)
    seed : seed of the subsets, drawn per image (:func:`image_subsets` of
        :func:`~saliency_core.evaluation.metrics._common.image_seeds`): an image gets the same subsets, and
        value, alone or in any batch; subsets : (N, runs, subset_size) to use instead
    clean : a :func:`clean_pass` of the same model, X and y, shared with other metrics
    progress : ``progress(done, total)`` after each forward pass, counting perturbed images (N * runs)

    Returns
    -------
    (N,) float64 in [−1, 1]; NaN where the drops or the sums do not vary.
    """
    output = check_output(output)
    clean = clean or clean_pass(model, X, y, precision=precision, batch_size=batch_size)
    n, _, h, w = clean.x.shape
    a = check_maps(maps, (n, h, w)).flatten(1)
    runs = check_count(runs, "runs", 2)
    subset_size = check_count(subset_size, "subset_size")
    if subset_size >= h * w:
        raise InvalidInputError(f"subset_size must be below the image's {h * w} pixels, got {subset_size}")
    name, norm = deletion_baseline(baseline, model, mean, std)
    base = make_baseline(clean.x, name, mean=norm[0] if norm else None, std=norm[1] if norm else None)
    if subsets is None:
        subsets = image_subsets(image_seeds(clean.x, seed), runs, h * w, subset_size)
    elif not isinstance(subsets, torch.Tensor) or tuple(subsets.shape) != (n, runs, subset_size):
        got = tuple(subsets.shape) if isinstance(subsets, torch.Tensor) else type(subsets).__name__
        raise InvalidInputError(f"subsets must be an (N, runs, subset_size) = {(n, runs, subset_size)} tensor, "
                                f"got {got}")
    elif bool(((subsets < 0) | (subsets >= h * w)).any()):
        raise InvalidInputError(f"subsets must hold pixel indices in [0, {h * w})")
    subsets = subsets.reshape(n * runs, -1).to(torch.int64)
    row_image = torch.arange(n).repeat_interleave(runs)
    subsets_dev = subsets.to(clean.device)
    image_dev = row_image.to(clean.device)

    def build(start: int, stop: int) -> torch.Tensor:
        removed = torch.zeros(stop - start, h * w, dtype=torch.bool, device=clean.device)
        removed.scatter_(1, subsets_dev[start:stop], True)
        img = image_dev[start:stop]
        return torch.where(removed.view(-1, 1, h, w), base[img], clean.x[img])

    rows = n * runs
    on_chunk = (lambda done: progress(done, rows)) if progress is not None else None
    values, _ = forward_rows(clean, rows, build, row_image, output, batch_size, on_chunk)
    drops = clean.output(output)[:, None] - values.view(n, runs)
    sums = a[row_image[:, None], subsets].sum(dim=1).view(n, runs)
    return pearson(sums, drops).numpy()


def _cost(subset_size: int, runs: int, **_: object) -> MetricCost:
    return MetricCost(forward=runs + 1)


METRIC = Metric(
    name="faithfulness_correlation",
    title="Faithfulness correlation",
    citation="Bhatt, Weller & Moura, IJCAI 2020",
    better="higher",
    good="near 1: the map's sum over any pixels predicts how much removing them lowers the output",
    params=(
        Param("subset_size", 224, int, "pixels removed per run (all channels)", minimum=1, maximum=10_000),
        Param("runs", 100, int, "random subsets per image", minimum=2, maximum=500, costly=True),
        Param("baseline", "dataset_mean", str, "what removed pixels become", BASELINES),
        Param("seed", 0, int, "seed of the random subsets", minimum=0),
    ),
    run=faithfulness_correlation,
    cost=_cost,
    needs=frozenset({"model"}),
)
