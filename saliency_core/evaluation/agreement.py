"""How alike two saliency maps are: correlations, SSIM and the overlap of their top pixels.

Pure functions of numpy arrays, validated as :mod:`saliency_core.evaluation.stats`
validates a map (finite, >= 0, 2-D); tables come back as pandas DataFrames
with fixed column names.

``agreement_table`` (one row per unordered pair of maps):
    ``map_a, map_b, pearson, spearman, cosine, ssim, iou_top1, iou_top5,
    iou_top10``.

Correlations involving a map that is constant (up to rounding:
:func:`flat_value`) are NaN, and so is the cosine of an all-zero map;
:func:`undefined_agreement` says why in words.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.stats import _top_indices, check_fraction, check_map, top_count

AGREEMENT_COLUMNS = (
    "map_a",
    "map_b",
    "pearson",
    "spearman",
    "cosine",
    "ssim",
    "iou_top1",
    "iou_top5",
    "iou_top10",
)
DEFAULT_FRACTIONS = (0.01, 0.05, 0.10)


#: A map whose values spread by at most this share of its largest magnitude counts as constant: float32
#: rounding leaves such specks (Grad-CAM upsampled from a 1 x 1 layer: three values within 2e-7), and a
#: correlation or a colour scale stretched over them would present noise as structure.
FLAT_RTOL = 1e-5


def flat_value(saliency: np.ndarray) -> float | None:
    """The value of a map that is constant up to rounding (:data:`FLAT_RTOL`), else None."""
    lo, hi = float(np.min(saliency)), float(np.max(saliency))
    if hi - lo <= FLAT_RTOL * max(abs(lo), abs(hi)):
        return lo
    return None


def undefined_agreement(metric: str, maps: Mapping[str, np.ndarray]) -> str:
    """Why ``metric`` (a key of :func:`agreement`) is NaN for two maps (name -> map): a sentence for a table."""
    constant = [name for name, m in maps.items() if flat_value(m) is not None]
    if metric in ("pearson", "spearman") and constant:
        zero = all(flat_value(maps[n]) == 0 for n in constant)
        what = "zero everywhere" if zero else "constant"
        return f"undefined: {' and '.join(constant)} {'is' if len(constant) == 1 else 'are'} {what}"
    if metric == "cosine":
        zero = [name for name, m in maps.items() if not np.any(m)]
        if zero:
            return f"undefined: {' and '.join(zero)} {'is' if len(zero) == 1 else 'are'} zero everywhere"
    if metric == "ssim":
        return "undefined: the maps are under 3 pixels a side"
    return "undefined"


def _correlation(name: str, a: np.ndarray, b: np.ndarray) -> float:
    """Pearson or Spearman r (``name``: "pearsonr" or "spearmanr"); NaN when either input is constant
    (up to rounding: :func:`flat_value`)."""
    if a.size < 2 or flat_value(a) is not None or flat_value(b) is not None:
        return math.nan
    with warnings.catch_warnings():
        # Near-constant inputs still produce a number; the warning is noise
        # for a dashboard that shows the value anyway.
        from scipy import stats as sps  # imported here: scipy.stats costs ~0.5 s at start-up

        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        warnings.simplefilter("ignore", sps.NearConstantInputWarning)
        return float(getattr(sps, name)(a, b).statistic)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps each scaled to [0, 1] by its own max; NaN if < 3 px."""
    side = min(a.shape)
    win_size = min(7, side if side % 2 else side - 1)
    if win_size < 3:
        return math.nan
    peak_a, peak_b = a.max(), b.max()
    a = a / peak_a if peak_a > 0 else a
    b = b / peak_b if peak_b > 0 else b
    from skimage.metrics import structural_similarity  # imported on first use, like scipy.stats

    return float(structural_similarity(a, b, data_range=1.0, win_size=win_size))


def fraction_key(fraction: float) -> str:
    return f"iou_top{fraction * 100:g}"


def agreement(
    a: np.ndarray,
    b: np.ndarray,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[str, float]:
    """How similar two saliency maps of the same shape are.

    a, b : (H, W) float arrays, >= 0, same shape
    fractions : top-k shares for the IoU entries, each in (0, 1].
    Returns ``pearson``, ``spearman`` (NaN if either map is constant, up to rounding: :func:`flat_value`),
    ``cosine`` (NaN if either map is all zero), ``ssim`` (maps scaled by
    their own max, data_range 1; window shrunk for maps under 7 px a side,
    NaN under 3 px) and ``iou_top{100 * f:g}`` for each fraction: the IoU
    of the top-k pixel sets, ties broken by (y, x) ascending.
    """
    a = check_map(a, "a")
    b = check_map(b, "b")
    if a.shape != b.shape:
        raise InvalidInputError(f"b: expected the same shape as a {a.shape}, got {b.shape}")
    fractions = [check_fraction(f, "fractions") for f in fractions]
    fa, fb = a.ravel(), b.ravel()
    norms = np.linalg.norm(fa) * np.linalg.norm(fb)
    result = {
        "pearson": _correlation("pearsonr", fa, fb),
        "spearman": _correlation("spearmanr", fa, fb),
        "cosine": float(np.dot(fa, fb) / norms) if norms > 0 else math.nan,
        "ssim": _ssim(a, b),
    }
    for fraction in fractions:
        k = top_count(fraction, fa.size)
        inter = np.intersect1d(_top_indices(fa, k), _top_indices(fb, k)).size
        result[fraction_key(fraction)] = inter / (2 * k - inter)
    return result


def agreement_table(maps: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """:func:`agreement` for every unordered pair of maps, in insertion order.

    Columns ``AGREEMENT_COLUMNS``; fewer than two maps give an empty table.
    """
    rows = []
    for name_a, name_b in itertools.combinations(maps, 2):
        try:
            scores = agreement(maps[name_a], maps[name_b])
        except InvalidInputError as exc:
            raise InvalidInputError(f"maps[{name_a!r}] vs maps[{name_b!r}]: {exc}") from exc
        rows.append({"map_a": name_a, "map_b": name_b, **scores})
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))
