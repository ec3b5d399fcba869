"""Batched torch versions of :func:`saliency_core.evaluation.stats.summarize` and
:func:`saliency_core.evaluation.agreement.agreement`.

For batch jobs that produce thousands of maps per second: every statistic
is computed for a whole (N, H, W) stack at once, in float64, on the device
the maps are on, and equals the numpy reference map for map (up to
floating-point summation order), degenerate conventions included: an
all-zero map has gini, entropy and top shares 0 and its centroid at the
image centre; correlations with a constant map are NaN; cosine is NaN when
a map is all zero; SSIM is NaN for maps under 3 px a side.

Each map is sorted once; the sorted values give min, max, median,
percentiles (numpy's ``linear`` interpolation), gini and top shares, and
for agreement also the average ranks (Spearman, ties as in
``scipy.stats.rankdata``) and the top-k sets (ties broken by flat index
ascending, as :func:`saliency_core.evaluation.stats.top_pixels`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import stats
from saliency_core.evaluation.agreement import DEFAULT_FRACTIONS, FLAT_RTOL, fraction_key

_SSIM_K1, _SSIM_K2 = 0.01, 0.03  # skimage's defaults, data_range 1


def _validate(maps: torch.Tensor, name: str) -> torch.Tensor:
    """Validate an (N, H, W) stack of finite maps >= 0; returned as given (floating dtypes) or as float64."""
    if not isinstance(maps, torch.Tensor):
        raise InvalidInputError(f"{name}: expected an (N, H, W) torch.Tensor, got {type(maps).__name__}")
    if maps.dim() != 3:
        raise InvalidInputError(f"{name}: expected an (N, H, W) tensor, got shape {tuple(maps.shape)}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise InvalidInputError(f"{name}: expected a real numeric tensor, got dtype {maps.dtype}")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise InvalidInputError(f"{name}: expected non-empty maps, got shape {tuple(maps.shape)}")
    x = maps if maps.is_floating_point() else maps.to(torch.float64)
    if x.shape[0] == 0:
        return x
    flat = x.flatten(1)
    not_finite = ~torch.isfinite(flat).all(1)
    negative = flat.amin(1) < 0
    if bool((not_finite | negative).any()):  # the one host sync per input
        if bool(not_finite.any()):
            i = int(not_finite.nonzero()[0])
            raise InvalidInputError(f"{name}: expected finite values, map {i} has NaN or inf")
        i = int(negative.nonzero()[0])
        raise InvalidInputError(f"{name}: expected non-negative values, map {i} has minimum {float(flat[i].min()):.4g}")
    return x


def _percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise quantile ``q`` in [0, 1] of ascending-sorted (N, n) values, like ``np.quantile(method="linear")``."""
    n = values.shape[1]
    index = (n - 1) * q  # numpy's virtual index, then numpy's two-sided lerp
    lo = math.floor(index)
    if lo >= n - 1:
        return values[:, -1]
    t = index - lo
    below, above = values[:, lo], values[:, lo + 1]
    diff = above - below
    return above - diff * (1 - t) if t >= 0.5 else below + diff * t


def _sort(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable ascending sort of (N, H, W) maps flattened: (float64 values, order).

    Sorted in the maps' own dtype (float32 from the gradients) and widened
    afterwards: the order is the same, and sorting float32 is about twice as
    fast as float64.
    """
    values, order = torch.sort(raw.flatten(1), dim=1, stable=True)
    return values.to(torch.float64), order


def _summary(x: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
    """The summary statistics of float64 (N, H, W) maps from their sorted values."""
    n_maps, h, w = x.shape
    size = h * w
    flat = x.reshape(n_maps, size)
    total = flat.sum(1)
    nonzero = total > 0
    safe_total = torch.where(nonzero, total, 1.0)
    zero = torch.zeros_like(total)
    mean = total / size

    ranks = torch.arange(1, size + 1, dtype=torch.float64, device=x.device)
    gini = 2.0 * (values @ ranks) / (size * safe_total) - (size + 1) / size

    p = flat / safe_total[:, None]
    plogp = torch.where(flat > 0, p * torch.log2(torch.where(flat > 0, p, 1.0)), 0.0)
    entropy_bits = -plogp.sum(1) + 0.0  # + 0.0 turns -0.0 into 0.0

    cols = torch.arange(w, dtype=torch.float64, device=x.device)
    rows = torch.arange(h, dtype=torch.float64, device=x.device)
    centroid_x = torch.where(nonzero, (x.sum(1) @ cols) / safe_total, (w - 1) / 2.0)
    centroid_y = torch.where(nonzero, (x.sum(2) @ rows) / safe_total, (h - 1) / 2.0)

    result = {
        "min": values[:, 0],
        "max": values[:, -1],
        "mean": mean,
        "std": torch.sqrt(((flat - mean[:, None]) ** 2).mean(1)),
        "median": _percentile(values, 0.5),
        "p90": _percentile(values, 0.9),
        "p99": _percentile(values, 0.99),
        "gini": torch.where(nonzero, gini, 0.0),
        "entropy_bits": entropy_bits,
        "entropy_norm": entropy_bits / math.log2(size) if size > 1 else zero,
    }
    for key, fraction in stats.TOP_SHARES:
        k = stats.top_count(fraction, size)
        result[key] = torch.where(nonzero, values[:, size - k :].sum(1) / safe_total, 0.0)
    result["centroid_x"] = centroid_x
    result["centroid_y"] = centroid_y
    return {key: result[key].contiguous() for key in stats.SUMMARY_COLUMNS}


def _ranks(values: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What agreement needs from a stable ascending sort (:func:`_sort`) of (N, n) values.

    Returns ``(ranks, place)``: each pixel's
    1-based average rank (ties share the mean of their ranks, as
    ``scipy.stats.rankdata``); each pixel's 0-based place in a descending
    order whose ties are broken by flat index ascending, so ``place < k``
    is the top-k set of :func:`saliency_core.evaluation.stats._top_indices`.
    """
    n = values.shape[1]
    pos = torch.arange(n, device=values.device).expand_as(order)
    first = torch.ones_like(order, dtype=torch.bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, 0).cummax(1).values  # where each tie group starts ...
    end = torch.where(last, pos, n).flip(1).cummin(1).values.flip(1)  # ... and ends
    average = (start + end).to(torch.float64) / 2 + 1
    # A stable sort keeps tied pixels in index order; descending, the groups
    # swap order but each group keeps that order inside.
    descending = (n - 1 - end) + (pos - start)
    ranks = torch.empty_like(values).scatter_(1, order, average)
    place = torch.empty_like(order).scatter_(1, order, descending)
    return ranks, place


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson r of (N, n) float64 tensors, computed as ``scipy.stats.pearsonr`` does."""
    xm = x - x.mean(1, keepdim=True)
    ym = y - y.mean(1, keepdim=True)
    xm = xm / torch.linalg.vector_norm(xm, dim=1, keepdim=True)
    ym = ym / torch.linalg.vector_norm(ym, dim=1, keepdim=True)
    return (xm * ym).sum(1).clamp(-1.0, 1.0)


def _box_mean(x: torch.Tensor, win: int) -> torch.Tensor:
    """Means of every win x win window inside (N, H, W) maps, shape (N, H - win + 1, W - win + 1).

    Equal, up to rounding, to ``F.avg_pool2d(x[:, None], win, stride=1)[:, 0]``,
    but summed one axis at a time (as scipy's uniform_filter does), which is
    about twice as fast on a CPU in float64.
    """
    return x.unfold(2, win, 1).sum(3).unfold(1, win, 1).sum(3) / (win * win)


def _ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-map SSIM of (N, H, W) float64 maps, as :func:`saliency_core.evaluation.agreement._ssim`.

    Each map is scaled by its own max (when > 0), then compared as
    ``skimage.metrics.structural_similarity(..., data_range=1.0,
    win_size=w)`` does: uniform w x w window, sample covariance, mean over
    the image cropped by (w - 1) // 2 on each side. That crop keeps exactly
    the windows that lie inside the image, so skimage's border mode never
    matters and unpadded box means give the same local statistics.
    """
    n_maps, h, w = x.shape
    side = min(h, w)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return torch.full((n_maps,), math.nan, dtype=torch.float64, device=x.device)
    peak_x, peak_y = x.amax((1, 2), keepdim=True), y.amax((1, 2), keepdim=True)
    x = x / torch.where(peak_x > 0, peak_x, 1.0)
    y = y / torch.where(peak_y > 0, peak_y, 1.0)
    ux, uy, uxx, uyy, uxy = (_box_mean(t, win) for t in (x, y, x * x, y * y, x * y))
    cov_norm = win * win / (win * win - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean((1, 2))


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise InvalidInputError(f"b: expected the same shape as a {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.device != b.device:
        raise InvalidInputError(f"b: expected the same device as a ({a.device}), got {b.device}")


def _agreement(x: torch.Tensor, y: torch.Tensor, sorted_a: tuple[torch.Tensor, torch.Tensor],
               sorted_b: tuple[torch.Tensor, torch.Tensor], fractions: Sequence[float]) -> dict[str, torch.Tensor]:
    """The agreement of float64 (N, H, W) map pairs from their :func:`_sort` results."""
    n_maps, h, w = x.shape
    size = h * w
    fa, fb = x.reshape(n_maps, size), y.reshape(n_maps, size)
    (values_a, order_a), (values_b, order_b) = sorted_a, sorted_b
    ranks_a, place_a = _ranks(values_a, order_a)
    ranks_b, place_b = _ranks(values_b, order_b)

    def flat(values: torch.Tensor) -> torch.Tensor:  # agreement.flat_value's rule: constant up to rounding
        lo, hi = values[:, 0], values[:, -1]
        return (hi - lo) <= FLAT_RTOL * torch.maximum(lo.abs(), hi.abs())

    constant = flat(values_a) | flat(values_b)
    if size < 2:
        constant = torch.ones_like(constant)
    pearson = _pearson(fa, fb)
    if size == 2:
        pearson = pearson.round()  # scipy returns exactly +-1 for two points
    norms = torch.linalg.vector_norm(fa, dim=1) * torch.linalg.vector_norm(fb, dim=1)
    result = {
        "pearson": torch.where(constant, math.nan, pearson),
        "spearman": torch.where(constant, math.nan, _pearson(ranks_a, ranks_b)),
        "cosine": torch.where(norms > 0, (fa * fb).sum(1) / torch.where(norms > 0, norms, 1.0), math.nan),
        "ssim": _ssim(x, y),
    }
    for fraction in fractions:
        k = stats.top_count(fraction, size)
        inter = ((place_a < k) & (place_b < k)).sum(1).to(torch.float64)
        result[fraction_key(fraction)] = inter / (2 * k - inter)
    return result


def describe_batch(maps: Mapping[str, torch.Tensor],
                   pairs: Sequence[tuple[str, str, str]] | None = None) -> dict[str, torch.Tensor]:
    """Every map's summary and the agreement of pairs of them: the batch job's columns, each map sorted once.

    Parameters
    ----------
    maps : name -> (N, H, W) tensor, >= 0 (at least one; same shape and device)
    pairs : (first, second, prefix) for each pair whose agreement is wanted;
        None: with exactly two maps, the first against the second, prefix "agree"

    Returns
    -------
    dict
        ``{name}_{stat}`` for every name and key of ``stats.SUMMARY_COLUMNS``
        (entry i as ``stats.summarize(maps[name][i])``), then ``{prefix}_{metric}``
        per pair (entry i as ``agreement.agreement(maps[first][i], maps[second][i])``).
    """
    if not maps:
        raise InvalidInputError("maps: expected at least one map")
    if pairs is None:
        pairs = [(*maps, "agree")] if len(maps) == 2 else []
    for first, second, _ in pairs:
        for name in (first, second):
            if name not in maps:
                raise InvalidInputError(f"pairs: no map named {name!r}; maps are {', '.join(maps)}")
    raw = {name: _validate(m, name) for name, m in maps.items()}
    wide = {name: r.to(torch.float64) for name, r in raw.items()}
    ordered = {name: _sort(r) for name, r in raw.items()}
    out: dict[str, torch.Tensor] = {}
    for name in maps:
        out |= {f"{name}_{k}": v for k, v in _summary(wide[name], ordered[name][0]).items()}
    for first, second, prefix in pairs:
        _check_pair(raw[first], raw[second])
        agreement = _agreement(wide[first], wide[second], ordered[first], ordered[second], DEFAULT_FRACTIONS)
        out |= {f"{prefix}_{k}": v for k, v in agreement.items()}
    return out
