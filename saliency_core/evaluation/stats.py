"""Numbers that describe saliency maps, alone and in pairs.

Everything here is a pure function of numpy arrays; tables come back as
pandas DataFrames with fixed column names so that pages and tests can rely
on them.

Inputs
------
saliency : (H, W) float array, >= 0, finite
    A gradient-magnitude map (Simonyan et al. 2014), pixel for pixel with
    the displayed crop. Pixel coordinates are x = column, y = row, both
    starting at 0 in the top-left corner.
gradients : (3, H, W) float array, finite
    The raw signed input gradient, channels R, G, B.
image : (H, W, 3) uint8 array
    The displayed crop, exactly what the model saw.

Tables
------
``summary_table`` (index ``map``, one row per map):
    ``min, max, mean, std, median, p90, p99`` -- plain statistics of the
    values (``std`` is the population std, ``p90``/``p99`` percentiles);
    ``gini`` -- 0 for a uniform map, towards 1 when one pixel holds all;
    ``entropy_bits`` -- Shannon entropy of the map normalised to sum 1;
    ``entropy_norm`` -- ``entropy_bits / log2(H * W)``, in [0, 1];
    ``top1_share, top5_share, top10_share`` -- share of the total held by
    the top 1 %, 5 %, 10 % of pixels;
    ``centroid_x, centroid_y`` -- saliency-weighted mean pixel coordinate.

``top_pixels``:
    ``rank`` (1-based), ``x``, ``y``, ``value``; then ``r, g, b`` (uint8)
    when an image is given; then ``grad_r, grad_g, grad_b`` (signed) when
    gradients are given.

``histogram``:
    ``bin_start, bin_end, count``.

Conventions for degenerate maps: an all-zero map has gini, entropy and
top shares 0.0, a diagonal concentration curve and its centroid at the
image centre. How alike two maps are is :mod:`saliency_core.evaluation.agreement`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from saliency_core.errors import InvalidInputError

SUMMARY_COLUMNS = (
    "min",
    "max",
    "mean",
    "std",
    "median",
    "p90",
    "p99",
    "gini",
    "entropy_bits",
    "entropy_norm",
    "top1_share",
    "top5_share",
    "top10_share",
    "centroid_x",
    "centroid_y",
)
TOP_SHARES = (("top1_share", 0.01), ("top5_share", 0.05), ("top10_share", 0.10))  # summary key, fraction


# --- validation (public: plots and tensor_stats validate the same way) -------


def check_array(values: np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a non-empty, finite float64 array."""
    arr = np.asarray(values)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise InvalidInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InvalidInputError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name}: expected finite values, found NaN or inf")
    return arr


def check_map(saliency: np.ndarray, name: str = "saliency", *, signed: bool = False) -> np.ndarray:
    """Validate a 2-D map; unless ``signed``, also require values >= 0."""
    arr = np.asarray(saliency)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name}: expected a 2-D (H, W) array, got shape {arr.shape}")
    arr = check_array(arr, name)
    if not signed and arr.min() < 0:
        raise InvalidInputError(f"{name}: expected non-negative values, minimum is {arr.min():.4g}")
    return arr


def check_fraction(fraction: float, name: str = "fraction") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)):
        raise InvalidInputError(f"{name}: expected a number in (0, 1], got {fraction!r}")
    if not 0.0 < float(fraction) <= 1.0:
        raise InvalidInputError(f"{name}: expected a number in (0, 1], got {fraction!r}")
    return float(fraction)


def check_count(n: int, name: str, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise InvalidInputError(f"{name}: expected an integer >= {minimum}, got {n!r}")
    return int(n)


# --- helpers shared by several statistics ------------------------------------


def top_count(fraction: float, size: int) -> int:
    """Number of pixels in the top ``fraction``: ceil(fraction * size), >= 1."""
    # The small epsilon keeps e.g. 0.07 * 100 = 7.000000000000001 at 7.
    return min(size, max(1, math.ceil(fraction * size - 1e-9)))


def _top_indices(flat: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` largest values, largest first.

    Ties are broken by flat index ascending, i.e. by (y, x) in row-major
    order, so the result does not depend on how argpartition shuffles.
    """
    k = min(k, flat.size)
    # argpartition finds the k-th largest value quickly; every pixel at
    # least that large is a candidate, which keeps all boundary ties.
    kth = flat[np.argpartition(flat, flat.size - k)[flat.size - k :]].min()
    candidates = np.flatnonzero(flat >= kth)
    order = np.lexsort((candidates, -flat[candidates]))
    return candidates[order[:k]]


def normalize_max(saliency: np.ndarray) -> np.ndarray:
    """Divide a map by its own maximum so it spans [0, 1].

    saliency : (H, W) float array, >= 0
    Returns a new (H, W) float64 array; an all-zero map stays all zero.
    Use it before comparing maps whose absolute scales differ (e.g. the
    score and loss gradients).
    """
    arr = check_map(saliency)
    peak = arr.max()
    return arr / peak if peak > 0 else np.zeros_like(arr)


# --- single-map statistics ---------------------------------------------------


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (any shape, flattened).

    0 for a uniform array, (n - 1) / n when a single one of n values holds
    everything. An all-zero array gives 0.0.
    """
    flat = np.sort(check_array(values, "values").ravel())
    if flat[0] < 0:
        raise InvalidInputError(f"values: expected non-negative values, minimum is {flat[0]:.4g}")
    total = flat.sum()
    if total == 0:
        return 0.0
    n = flat.size
    ranks = np.arange(1, n + 1)
    # Standard closed form on ascending values: G = 2 Σ i x_i / (n Σ x) - (n + 1) / n.
    return float(2.0 * np.dot(ranks, flat) / (n * total) - (n + 1) / n)


def entropy(saliency: np.ndarray) -> float:
    """Shannon entropy in bits of the map normalised to sum 1.

    saliency : (H, W) float array, >= 0
    A uniform map of N pixels gives log2(N), a one-hot map 0.0, an all-zero
    map 0.0.
    """
    arr = check_map(saliency)
    total = arr.sum()
    if total == 0:
        return 0.0
    p = arr[arr > 0] / total
    return float(-np.sum(p * np.log2(p)) + 0.0)  # + 0.0 turns -0.0 into 0.0


def top_share(saliency: np.ndarray, fraction: float) -> float:
    """Share of the total saliency held by the top ``fraction`` of pixels.

    saliency : (H, W) float array, >= 0
    fraction : float in (0, 1]; the top ceil(fraction * H * W) pixels (at
        least one) are counted. Tied values have the same value, so which
        tied pixel is taken does not change the sum.
    An all-zero map gives 0.0.
    """
    arr = check_map(saliency)
    fraction = check_fraction(fraction)
    flat = arr.ravel()
    total = flat.sum()
    if total == 0:
        return 0.0
    k = top_count(fraction, flat.size)
    top = np.partition(flat, flat.size - k)[flat.size - k :]
    return float(top.sum() / total)


def concentration_curve(saliency: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz-style concentration curve, most salient pixels first.

    saliency : (H, W) float array, >= 0
    points : number of samples, >= 2
    Returns ``(x, y)``, two (points,) float64 arrays: x is the share of
    pixels (0..1), y the share of the total saliency they hold. The curve
    runs from (0, 0) to (1, 1), is non-decreasing and concave; a uniform
    map (and, by convention, an all-zero map) gives the diagonal.
    """
    arr = check_map(saliency)
    points = check_count(points, "points", 2)
    flat = np.sort(arr.ravel())[::-1]
    x = np.linspace(0.0, 1.0, points)
    total = flat.sum()
    if total == 0:
        return x, x.copy()
    cumulative = np.concatenate(([0.0], np.cumsum(flat) / total))
    # Linear interpolation between whole pixels keeps the curve concave.
    y = np.interp(x * flat.size, np.arange(flat.size + 1), cumulative)
    y[-1] = 1.0  # cumsum rounding can leave 0.9999999...
    return x, y


def _centroid(arr: np.ndarray) -> tuple[float, float]:
    h, w = arr.shape
    total = arr.sum()
    if total == 0:
        return (w - 1) / 2.0, (h - 1) / 2.0
    rows, cols = np.indices(arr.shape)
    return float((cols * arr).sum() / total), float((rows * arr).sum() / total)


def summarize(saliency: np.ndarray, name: str = "map") -> dict[str, float]:
    """All single-map statistics of one map, keyed by ``SUMMARY_COLUMNS``.

    saliency : (H, W) float array, >= 0
    name : used in error messages to say which map was bad.
    """
    arr = check_map(saliency, name)
    flat = arr.ravel()
    h_bits = entropy(arr)
    p90, p99 = np.percentile(flat, [90, 99])
    cx, cy = _centroid(arr)
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "median": float(np.median(flat)),
        "p90": float(p90),
        "p99": float(p99),
        "gini": gini(flat),
        "entropy_bits": h_bits,
        "entropy_norm": h_bits / math.log2(flat.size) if flat.size > 1 else 0.0,
        **{key: top_share(arr, fraction) for key, fraction in TOP_SHARES},
        "centroid_x": cx,
        "centroid_y": cy,
    }


def summary_table(maps: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row of :func:`summarize` per map; index ``map``, columns ``SUMMARY_COLUMNS``."""
    rows = [summarize(saliency, name) for name, saliency in maps.items()]
    index = pd.Index(list(maps.keys()), name="map", dtype=object)
    return pd.DataFrame(rows, index=index, columns=list(SUMMARY_COLUMNS), dtype=float)


def top_pixels(
    saliency: np.ndarray,
    n: int = 20,
    *,
    gradients: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> pd.DataFrame:
    """The ``n`` most salient pixels, most salient first.

    saliency : (H, W) float array, >= 0
    n : how many rows, >= 1; clipped to H * W.
    gradients : optional (3, H, W) float array of signed gradients.
    image : optional (H, W, 3) uint8 array, the displayed crop.
    Returns columns ``rank, x, y, value`` [, ``r, g, b``] [, ``grad_r,
    grad_g, grad_b``]. Ties are broken by (y, x) ascending.
    """
    arr = check_map(saliency)
    n = check_count(n, "n", 1)
    h, w = arr.shape
    idx = _top_indices(arr.ravel(), n)
    ys, xs = np.unravel_index(idx, (h, w))
    table = pd.DataFrame(
        {
            "rank": np.arange(1, idx.size + 1, dtype=np.int64),
            "x": xs.astype(np.int64),
            "y": ys.astype(np.int64),
            "value": arr.ravel()[idx],
        }
    )
    if image is not None:
        img = np.asarray(image)
        if img.shape != (h, w, 3) or img.dtype != np.uint8:
            raise InvalidInputError(f"image: expected a uint8 array of shape {(h, w, 3)}, got {img.dtype} {img.shape}")
        for c, col in enumerate("rgb"):
            table[col] = img[ys, xs, c]
    if gradients is not None:
        grads = check_array(gradients, "gradients")
        if grads.shape != (3, h, w):
            raise InvalidInputError(f"gradients: expected shape {(3, h, w)}, got {grads.shape}")
        for c, col in enumerate(("grad_r", "grad_g", "grad_b")):
            table[col] = grads[c, ys, xs]
    return table


def histogram(
    saliency: np.ndarray,
    bins: int = 50,
    *,
    value_range: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Histogram of a map's values with columns ``bin_start, bin_end, count``.

    saliency : (H, W) float array (signed values are allowed here)
    bins : number of equal-width bins, >= 1
    value_range : optional (low, high) so several maps can share bin edges;
        defaults to the map's own (min, max).
    """
    arr = check_map(saliency, signed=True)
    bins = check_count(bins, "bins", 1)
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise InvalidInputError(f"value_range: expected finite (low, high), got {value_range!r}")
        value_range = (low, high)
    counts, edges = np.histogram(arr, bins=bins, range=value_range)
    return pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts.astype(np.int64)})
