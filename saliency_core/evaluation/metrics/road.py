"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022).

For each percentage p, the top ``floor(p / 100 · H · W)`` pixels of the map's ranking are removed and
filled by *noisy linear imputation*: each removed pixel becomes the weighted mean of its 8 neighbours
(weights 1/6 for the 4 direct ones, 1/12 for the diagonals; neighbours outside the image drop out), a
sparse linear system solved exactly per image and percentage (all channels at once), plus Gaussian noise
of std ``noise``. Imputing, rather than painting a constant, keeps the mask's shape from leaking the
class. Two orders: MoRF removes the most relevant pixels first (a faithful map makes the output fall:
lower is better), LeRF the least relevant first (the output should stay: higher is better).

The curves follow the model output the map explains (s_y, L or −L) and whether the top-1 class is still
the target (the paper's and Quantus's accuracy). The same imputation as Quantus 0.6.0's
``noisy_linear_imputation`` (tests/evaluation/test_road.py compares the two to 1e-5); Quantus runs MoRF
only (LeRF is MoRF of the negated map) and reports accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

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
from saliency_core.evaluation.perturbations import MapsLike, pixel_ranks
from saliency_core.methods.declaration import Param

ORDERS = ("morf", "lerf")
#: (row offset, column offset, weight) of the 8 neighbours (Rong et al.'s road_evaluation weights).
NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6), (-1, -1, 1 / 12),
              (1, 0, 1 / 6), (-1, 0, 1 / 6))


def default_percentages(steps: int) -> tuple[float, ...]:
    """``steps`` evenly spaced percentages strictly between 0 and 100 (9: 10, 20, ..., 90)."""
    return tuple(100 * k / (steps + 1) for k in range(1, steps + 1))


def linear_imputation(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The values of the removed pixels that make each the weighted mean of its neighbours.

    x : (C, H, W) float64 image; removed : (m,) flat pixel indices (row-major) to impute, in the order the
        result lists them
    Returns (C, m) float64 (no noise).
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    c, h, w = x.shape
    m = removed.size
    flat = x.reshape(c, h * w)
    var = np.full(h * w, -1, dtype=np.int64)
    var[removed] = np.arange(m)
    row, col = removed // w, removed % w
    b = np.zeros((m, c))
    diag = np.zeros(m)
    rows, cols, vals = [], [], []
    ids = np.arange(m)
    for dr, dc, weight in NEIGHBOURS:
        r2, c2 = row + dr, col + dc
        valid = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        diag[valid] -= weight
        nb = (r2 * w + c2)[valid]
        v = var[nb]
        known = v < 0
        b[ids[valid][known]] -= weight * flat[:, nb[known]].T
        rows.append(ids[valid][~known])
        cols.append(v[~known])
        vals.append(np.full(int((~known).sum()), weight))
    rows.append(ids)
    cols.append(ids)
    vals.append(diag)
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    # The system is symmetric (each neighbour pair has one weight both ways): SuperLU with a minimum-degree
    # ordering of A + Aᵀ and symmetric pivoting factors it 1.3-1.5x faster than spsolve's default (COLAMD)
    # at 224 px, to the same values (tests/evaluation/test_road.py: 1e-10 against Quantus's spsolve).
    res = splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(b)
    return np.asarray(res).reshape(m, c).T


@dataclass
class RoadResult:
    """ROAD curves of one :func:`road` call.

    morf, lerf : (N, P) float64, the output the map explains after removing the top (MoRF) or bottom
        (LeRF) ``percentages`` of pixels; morf_correct, lerf_correct : (N, P) bool, top-1 still the target
    percentages : (P,) float64; targets : (N,) int64; output : "s_y", "L" or "−L"
    """

    morf: np.ndarray
    lerf: np.ndarray
    morf_correct: np.ndarray
    lerf_correct: np.ndarray
    percentages: np.ndarray
    targets: np.ndarray
    output: str

    @property
    def morf_mean(self) -> np.ndarray:
        """(N,) mean of the MoRF curve over the percentages (lower is better)."""
        return self.morf.mean(axis=1)

    @property
    def lerf_mean(self) -> np.ndarray:
        """(N,) mean of the LeRF curve over the percentages (higher is better)."""
        return self.lerf.mean(axis=1)


def road(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], maps: MapsLike, *,
         output: str = "s_y", steps: int = 9, percentages: Sequence[float] | None = None, noise: float = 0.01,
         orders: Sequence[str] = ORDERS, seed: int = 0, batch_size: int = 64, precision: str = "exact",
         clean: Clean | None = None, progress: Progress | None = None) -> RoadResult:
    """ROAD's MoRF and LeRF curves of each map.

    Parameters
    ----------
    model, X (N, 3, H, W), y (N,), maps (N, H, W), output, clean : as :func:`faithfulness_correlation`
    steps : the number of percentages when ``percentages`` is None (:func:`default_percentages`)
    percentages : each in (0, 100): share of pixels removed, ``floor(p / 100 · H · W)`` of them
    noise : std of the Gaussian noise added to imputed values (normalised input's units; 0: none)
    orders : any of "morf", "lerf" (an order left out gives NaN curves)
    seed : the noise of image i, order o (0: MoRF, 1: LeRF) and percentage k is one (C, m) standard normal
        draw (m the removed pixels in ranking order) of
        :func:`~saliency_core.evaluation.metrics._common.image_generator` (s_i, o * P + k), s_i the image's
        :func:`~saliency_core.evaluation.metrics._common.image_seeds` entry: an image gets the same noise,
        and curves, alone or in any batch
    progress : ``progress(done, total)`` after each forward pass, counting perturbed images

    Pixels are ranked by decreasing map value (MoRF) or increasing (LeRF), ties by row-major position.
    """
    output = check_output(output)
    orders = tuple(orders)
    if not orders or set(orders) - set(ORDERS):
        raise InvalidInputError(f"orders must be some of {ORDERS}, got {orders!r}")
    if percentages is None:
        percentages = default_percentages(check_count(steps, "steps"))
    pct = np.asarray([float(p) for p in percentages], dtype=np.float64)
    if pct.size == 0 or not np.all((pct > 0) & (pct < 100)):
        raise InvalidInputError(f"percentages must each lie strictly between 0 and 100, got {list(percentages)}")
    noise = check_positive(noise, "noise", zero_ok=True)
    clean = clean or clean_pass(model, X, y, precision=precision, batch_size=batch_size)
    n, c, h, w = clean.x.shape
    a = check_maps(maps, (n, h, w))
    counts = [int(h * w * p / 100) for p in pct]
    # order[o][i]: the pixels in removal order for image i.
    perms = {"morf": _permutation(a), "lerf": _permutation(-a)}
    x64 = clean.x.detach().double().cpu().numpy()
    seeds = image_seeds(clean.x, seed).tolist() if noise > 0 else []
    jobs = [(i, o, k) for i in range(n) for o in ORDERS if o in orders for k in range(len(pct))]

    def build(start: int, stop: int) -> torch.Tensor:
        out = []
        for i, o, k in jobs[start:stop]:
            removed = perms[o][i, : counts[k]]
            xp = x64[i].reshape(c, h * w).copy()
            if removed.size:
                vals = linear_imputation(x64[i], removed)
                if noise > 0:
                    draw = ORDERS.index(o) * len(pct) + k
                    vals = vals + noise * torch.randn((c, removed.size), generator=image_generator(seeds[i], draw),
                                                      dtype=torch.float64).numpy()
                xp[:, removed] = vals
            out.append(torch.from_numpy(xp.reshape(c, h, w)))
        return torch.stack(out)

    rows = len(jobs)
    row_image = torch.tensor([i for i, _, _ in jobs], dtype=torch.int64)
    on_chunk = (lambda done: progress(done, rows)) if progress is not None else None
    values, top1 = forward_rows(clean, rows, build, row_image, output, batch_size, on_chunk)
    correct = (top1 == clean.y.cpu()[row_image]).numpy()
    curves = {o: np.full((n, len(pct)), np.nan) for o in ORDERS}
    hits = {o: np.zeros((n, len(pct)), dtype=bool) for o in ORDERS}
    for r, (i, o, k) in enumerate(jobs):
        curves[o][i, k] = float(values[r])
        hits[o][i, k] = bool(correct[r])
    return RoadResult(morf=curves["morf"], lerf=curves["lerf"], morf_correct=hits["morf"],
                      lerf_correct=hits["lerf"], percentages=pct, targets=clean.y.cpu().numpy(), output=output)


def _permutation(maps: torch.Tensor) -> np.ndarray:
    """(N, H*W) int64: pixels by decreasing value, ties by row-major position."""
    ranks = pixel_ranks(maps).flatten(1)
    return torch.argsort(ranks, dim=1).numpy()


def road_morf(*args, **kwargs) -> np.ndarray:
    """:func:`road`'s MoRF curve, averaged over the percentages (N,)."""
    return road(*args, orders=("morf",), **kwargs).morf_mean


def road_lerf(*args, **kwargs) -> np.ndarray:
    """:func:`road`'s LeRF curve, averaged over the percentages (N,)."""
    return road(*args, orders=("lerf",), **kwargs).lerf_mean


PARAMS = (
    Param("steps", 9, int, "percentages removed: 9 gives 10%, 20%, ..., 90%", minimum=1, maximum=49, costly=True),
    Param("noise", 0.01, float, "std of the noise added to imputed pixels", minimum=0.0, maximum=1.0),
    Param("seed", 0, int, "seed of the noise", minimum=0),
)


def _cost(steps: int, **_: object) -> MetricCost:
    return MetricCost(forward=steps + 1)


MORF_METRIC = Metric(
    name="road_morf",
    title="ROAD, most relevant first",
    citation="Rong et al., ICML 2022",
    better="lower",
    good="low: imputing the pixels the map ranks first makes the output fall fast",
    params=PARAMS,
    run=road_morf,
    cost=_cost,
    needs=frozenset({"model"}),
)

LERF_METRIC = Metric(
    name="road_lerf",
    title="ROAD, least relevant first",
    citation="Rong et al., ICML 2022",
    better="higher",
    good="high: imputing the pixels the map ranks last leaves the output where it was",
    params=PARAMS,
    run=road_lerf,
    cost=_cost,
    needs=frozenset({"model"}),
)

METRICS = (MORF_METRIC, LERF_METRIC)
