"""Max- and average-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and
Sensitivity of Explanations", NeurIPS 2019).

How much a map changes when the image changes imperceptibly: ``samples`` times, uniform noise in
[−radius, radius] is added to every channel of every pixel (in the normalised input's units), the map is
recomputed with the same method, objective, parameters and target, and the change is measured as
``‖Φ(x + δ) − Φ(x)‖₂ / ‖Φ(x)‖₂``. Max-sensitivity is the largest change over the samples (Yeh et al.'s
Monte-Carlo estimate of the max over the ball), average-sensitivity the mean. Lower is better (a stable
map). Dividing by ‖Φ(x)‖ (as Quantus 0.6.0 does by default) makes methods of different scales comparable;
Yeh et al. leave it out (``relative="no"``). Both metrics come from the same recomputed maps: ask
:func:`sensitivity` once for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saliency_core.core.model_access import ModelLike
from saliency_core.core.passes import rows_per_pass
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics._common import (
    Clean,
    Progress,
    Recompute,
    check_count,
    check_maps,
    check_positive,
    clean_pass,
    image_generator,
    image_seeds,
)
from saliency_core.evaluation.metrics.declaration import Metric, MetricCost
from saliency_core.evaluation.perturbations import MapsLike
from saliency_core.methods.declaration import Param

RELATIVE = ("yes", "no")


def uniform_noise(seed: int, row: int, shape: Sequence[int], radius: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Row ``row``'s noise: uniform in [−radius, radius], of ``shape`` (3, H, W)."""
    u = torch.rand(tuple(shape), generator=image_generator(seed, row), dtype=dtype)
    return (u * 2 - 1) * radius


@dataclass
class SensitivityResult:
    """max, mean : (N,) float64 >= 0, max- and average-sensitivity; changes : (N, samples) every change."""

    max: np.ndarray
    mean: np.ndarray
    changes: np.ndarray


def sensitivity(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], maps: MapsLike,
                recompute: Recompute | str, *, samples: int = 10, radius: float = 0.2, relative: str = "yes",
                seed: int = 0, batch_size: int = 64, precision: str = "exact", clean: Clean | None = None,
                progress: Progress | None = None) -> SensitivityResult:
    """Max- and average-sensitivity of each map.

    Parameters
    ----------
    model, X (N, 3, H, W), y (N,), clean : as :func:`faithfulness_correlation`
    maps : (N, H, W) the maps of X by ``recompute`` (what the noisy maps are compared with)
    recompute : a :class:`Recompute` (method, objective, params, reduction), or a method name (score)
    samples : noisy copies per image; radius : the noise's bound (> 0)
    relative : "yes" (divide by ‖Φ(x)‖) or "no" (Yeh et al.'s absolute change)
    seed : image i's sample k is :func:`uniform_noise` of (s_i, k), s_i its
        :func:`~saliency_core.evaluation.metrics._common.image_seeds` entry: an image gets the same noise, and
        value, alone or in any batch
    progress : ``progress(done, total)`` after each block of recomputed maps (total N * samples)
    """
    if isinstance(recompute, str):
        recompute = Recompute(recompute)
    if relative not in RELATIVE:
        raise InvalidInputError(f"relative must be one of {RELATIVE}, got {relative!r}")
    samples = check_count(samples, "samples")
    radius = check_positive(radius, "radius")
    clean = clean or clean_pass(model, X, y, precision=precision, batch_size=batch_size)
    n, c, h, w = clean.x.shape
    a = check_maps(maps, (n, h, w)).flatten(1)
    rows = n * samples
    block = max(1, min(rows, rows_per_pass(clean.input_row_bytes, clean.device, backward=False)))
    changes = torch.empty(rows, dtype=torch.float64)
    seeds = image_seeds(clean.x, seed).tolist()
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        img = torch.arange(start, stop) // samples
        xp = torch.stack([clean.x[int(i)] + uniform_noise(seeds[int(i)], r % samples, (c, h, w), radius,
                                                           clean.x.dtype).to(clean.device)
                          for r, i in zip(range(start, stop), img, strict=True)])
        ap = recompute.maps(model, xp, clean.y[img.to(clean.y.device)], precision).flatten(1)
        changes[start:stop] = (ap - a[img]).norm(dim=1)
        if relative == "yes":
            changes[start:stop] /= a[img].norm(dim=1)
        if progress is not None:
            progress(stop, rows)
    changes = changes.view(n, samples).numpy()
    return SensitivityResult(max=changes.max(axis=1), mean=changes.mean(axis=1), changes=changes)


def max_sensitivity(*args, **kwargs) -> np.ndarray:
    """:func:`sensitivity`'s ``max``."""
    return sensitivity(*args, **kwargs).max


def avg_sensitivity(*args, **kwargs) -> np.ndarray:
    """:func:`sensitivity`'s ``mean``."""
    return sensitivity(*args, **kwargs).mean


def _cost(samples: int, **_: object) -> MetricCost:
    return MetricCost(forward=1, attributions=samples)


PARAMS = (
    Param("samples", 10, int, "noisy copies per image, each a recomputed map", minimum=1, maximum=200, costly=True),
    Param("radius", 0.2, float, "bound of the uniform noise, in the normalised input's units", minimum=0.0,
          maximum=2.0),
    Param("relative", "yes", str, "divide the change by the map's norm", RELATIVE),
    Param("seed", 0, int, "seed of the noise", minimum=0),
)

MAX_METRIC = Metric(
    name="max_sensitivity",
    title="Max-sensitivity",
    citation="Yeh et al., NeurIPS 2019",
    better="lower",
    good="near 0: no small noise changes the map much (worst case over the samples)",
    params=PARAMS,
    run=max_sensitivity,
    cost=_cost,
    needs=frozenset({"model", "method"}),
)

AVG_METRIC = Metric(
    name="avg_sensitivity",
    title="Average sensitivity",
    citation="Yeh et al., NeurIPS 2019",
    better="lower",
    good="near 0: small noise changes the map little on average",
    params=PARAMS,
    run=avg_sensitivity,
    cost=_cost,
    needs=frozenset({"model", "method"}),
)

METRICS = (MAX_METRIC, AVG_METRIC)
