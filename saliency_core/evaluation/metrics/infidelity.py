"""Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
Explanations", NeurIPS 2019).

``INFD = E_I[(I·Φ − (f(x) − f(x − I)))²]``: how far the map Φ, dotted with a perturbation I, is from the
output change that perturbation causes. I·Φ sums, over pixels, the map times I summed over the colour
channels. f is what the map explains (s_y, L or −L). Lower is better. Two perturbations of the paper:

* ``"noise"``: I ~ N(0, noise_std²) on every channel of every pixel;
* ``"square"``: a random ``patch`` x ``patch`` square replaced by a baseline (I = x − baseline there, 0
  elsewhere), Yeh et al.'s square removal.

Maps here are magnitudes at an arbitrary scale, so by default (``scaling="optimal"``) Φ is first scaled by
the β that minimises the infidelity (Yeh et al. sec. 3; Captum's ``normalize=True``),
β = E[(I·Φ) Δf] / E[(I·Φ)²]: the score then judges the map's shape, not its units.

Quantus 0.6.0 differs: it replaces every patch of a fixed grid in turn, each on top of the last, and
repeats that deterministic sweep ``n_perturb_samples`` times; its scores match this module's only for one
patch covering the whole image (tests/evaluation/test_infidelity.py), and Captum's ``infidelity`` is the
oracle for the random perturbations.
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
    check_positive,
    clean_pass,
    forward_rows,
    image_generator,
    image_seeds,
)
from saliency_core.evaluation.metrics.declaration import Metric, MetricCost
from saliency_core.evaluation.perturbations import MapsLike
from saliency_core.methods.declaration import Param

PERTURBATIONS = ("noise", "square")
SCALINGS = ("optimal", "none")


def noise_draw(seed: int, row: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Row ``row``'s standard normal draw of ``shape`` (3, H, W) (multiply by the std). :func:`infidelity`
    passes an image's seed and the sample's number (``image_generator(seed, row)`` is ``row_generator``)."""
    return torch.randn(tuple(shape), generator=image_generator(seed, row), dtype=dtype)


def square_corner(seed: int, row: int, h: int, w: int, patch: int) -> tuple[int, int]:
    """Row ``row``'s square: its top-left (top, left), uniform over the squares that fit."""
    g = image_generator(seed, row)
    top = int(torch.randint(0, h - patch + 1, (1,), generator=g))
    left = int(torch.randint(0, w - patch + 1, (1,), generator=g))
    return top, left


def infidelity(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], maps: MapsLike, *,
               output: str = "s_y", perturbation: str = "noise", samples: int = 50, noise_std: float = 0.1,
               patch: int = 16, baseline: str = "dataset_mean", scaling: str = "optimal", seed: int = 0,
               batch_size: int = 64, precision: str = "exact", mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, clean: Clean | None = None,
               progress: Progress | None = None) -> np.ndarray:
    """Infidelity of each map under ``samples`` random perturbations.

    Parameters
    ----------
    model, X (N, 3, H, W), y (N,), maps (N, H, W), output, clean : as :func:`faithfulness_correlation`
    perturbation : "noise" (Gaussian, ``noise_std`` in the normalised input's units) or "square" (a
        ``patch``-pixel square replaced by ``baseline``)
    samples : perturbations per image (>= 1; >= 2 for ``scaling="optimal"``)
    scaling : "optimal" (Φ scaled by the best β first) or "none" (Φ as given)
    seed : image i's draw k is :func:`noise_draw` / :func:`square_corner` of (s_i, k), s_i its
        :func:`~saliency_core.evaluation.metrics._common.image_seeds` entry: an image gets the same draws, and
        value, alone or in any batch
    progress : ``progress(done, total)`` after each forward pass, counting perturbed images (N * samples)

    Returns
    -------
    (N,) float64 >= 0, in the squared units of the output.
    """
    output = check_output(output)
    if perturbation not in PERTURBATIONS:
        raise InvalidInputError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
    if scaling not in SCALINGS:
        raise InvalidInputError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    samples = check_count(samples, "samples")
    noise_std = check_positive(noise_std, "noise_std")
    clean = clean or clean_pass(model, X, y, precision=precision, batch_size=batch_size)
    n, c, h, w = clean.x.shape
    a = check_maps(maps, (n, h, w))
    base = None
    if perturbation == "square":
        patch = check_count(patch, "patch")
        if patch > min(h, w):
            raise InvalidInputError(f"patch must fit the image ({min(h, w)} px), got {patch}")
        name, norm = deletion_baseline(baseline, model, mean, std)
        base = make_baseline(clean.x, name, mean=norm[0] if norm else None, std=norm[1] if norm else None)
    rows = n * samples
    row_image = torch.arange(n).repeat_interleave(samples)
    dots = torch.empty(rows, dtype=torch.float64)
    a_dev = a.to(clean.device)
    seeds = image_seeds(clean.x, seed).tolist()
    if perturbation == "square":
        corners = torch.tensor([square_corner(seeds[r // samples], r % samples, h, w, patch) for r in range(rows)])
        inside = torch.arange(patch)

    def build(start: int, stop: int) -> torch.Tensor:
        img = row_image[start:stop].to(clean.device)
        x = clean.x[img]
        if perturbation == "noise":
            pert = torch.stack([noise_draw(seeds[r // samples], r % samples, (c, h, w), x.dtype)
                                for r in range(start, stop)]).to(x.device) * noise_std
            xp = x - pert
        else:
            # Each row's square as a mask: rows (top + 0..patch) x columns (left + 0..patch).
            tl = corners[start:stop]
            rows_in = torch.zeros(stop - start, h, dtype=torch.bool)
            cols_in = torch.zeros(stop - start, w, dtype=torch.bool)
            rows_in.scatter_(1, tl[:, :1] + inside, True)
            cols_in.scatter_(1, tl[:, 1:] + inside, True)
            square = (rows_in[:, :, None] & cols_in[:, None, :]).to(x.device)[:, None]
            xp = torch.where(square, base[img], x)
            pert = x - xp
        dots[start:stop] = (pert.double().sum(dim=1) * a_dev[img]).flatten(1).sum(dim=1).cpu()
        return xp

    on_chunk = (lambda done: progress(done, rows)) if progress is not None else None
    values, _ = forward_rows(clean, rows, build, row_image, output, batch_size, on_chunk)
    drops = (clean.output(output)[:, None] - values.view(n, samples))
    dots = dots.view(n, samples)
    if scaling == "optimal":
        den = (dots * dots).sum(dim=1, keepdim=True)
        beta = torch.where(den > 0, (dots * drops).sum(dim=1, keepdim=True) / torch.where(den > 0, den, 1.0), 0.0)
        dots = beta * dots
    return ((dots - drops) ** 2).mean(dim=1).numpy()


def _cost(samples: int, **_: object) -> MetricCost:
    return MetricCost(forward=samples + 1)


METRIC = Metric(
    name="infidelity",
    title="Infidelity",
    citation="Yeh et al., NeurIPS 2019",
    better="lower",
    good="near 0: the map (best scaled) dotted with a perturbation predicts the output change it causes",
    params=(
        Param("perturbation", "noise", str, "Gaussian noise on every pixel, or a square replaced by a baseline",
              PERTURBATIONS),
        Param("samples", 50, int, "perturbations per image", minimum=1, maximum=1000, costly=True),
        Param("noise_std", 0.1, float, "std of the noise, in the normalised input's units", minimum=0.0),
        Param("patch", 16, int, "side of the square in pixels", minimum=1, maximum=224),
        Param("baseline", "dataset_mean", str, "what the square becomes", BASELINES),
        Param("scaling", "optimal", str, "scale the map by the best β first, or use it as given", SCALINGS),
        Param("seed", 0, int, "seed of the perturbations", minimum=0),
    ),
    run=infidelity,
    cost=_cost,
    needs=frozenset({"model"}),
)
