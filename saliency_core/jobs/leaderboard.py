"""Which map is best over a dataset by a metric: means with bootstrap confidence intervals, and head-to-head wins.

Reads a batch job's results table (:func:`saliency_core.jobs.results.load_results`).
Made with ``--faithfulness``, it has for every map ``m`` the columns
``m_deletion_auc`` and ``m_insertion_auc`` (Petsiuk et al. 2018), and the
reference ``random_deletion_auc`` / ``random_insertion_auc``. A faithful map
has a low deletion AUC (deleting its top pixels first makes the probability
fall fast), a high insertion AUC, and so a high insertion − deletion.
Made with ``--metrics``, it has ``m_<metric>`` for the evaluation metrics of
:mod:`saliency_core.evaluation.metrics` (ROAD, sensitivity, sparseness, ...),
each ranked the way its declaration says is better (:data:`METRICS`).

Confidence intervals are percentile bootstraps over images (Efron &
Tibshirani 1993): the images are resampled with replacement, the same
resamples for every map, from a seeded generator, so a page shows the same
interval on every visit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import METRICS as EVALUATION_METRICS
from saliency_core.jobs.map_specs import map_names_in, title

#: The deletion/insertion metrics (``--faithfulness``), which the random order has too.
FAITHFULNESS = {"deletion_auc": "lower is better", "insertion_auc": "higher is better",
                "insertion_minus_deletion": "higher is better"}
#: Every metric the leaderboard ranks by (a map's column ``<map>_<metric>``) -> whether higher or lower is better.
METRICS = {**FAITHFULNESS, **{m.name: f"{m.better} is better" for m in EVALUATION_METRICS}}
METRIC_TITLES = {"deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC",
                 "insertion_minus_deletion": "insertion − deletion",
                 **{m.name: m.title for m in EVALUATION_METRICS}}
#: One line per metric on what it measures, for the page's caption.
METRIC_NOTES = {
    **dict.fromkeys(FAITHFULNESS, "Deletion AUC: the target's probability as the map's top pixels are removed first "
                                  "(low is faithful); insertion AUC: as they are restored first (high is faithful). "
                                  "A map should beat the random order."),
    **{m.name: f"{m.title} ({m.citation}): {m.good}." for m in EVALUATION_METRICS},
}
RANDOM = "random"  # the reference order's name in the columns
_BOOT_CHUNK_VALUES = 4_000_000  # resampled values per chunk: bounds memory for 50,000 images


def faithfulness_maps(frame: pd.DataFrame) -> list[str]:
    """The maps of ``frame`` with both AUC columns, in column order, then "random" when present."""
    names = [m for m in map_names_in(frame.columns)
             if f"{m}_deletion_auc" in frame and f"{m}_insertion_auc" in frame]
    if f"{RANDOM}_deletion_auc" in frame and f"{RANDOM}_insertion_auc" in frame:
        names.append(RANDOM)
    return names


def _columns_of(metric: str) -> tuple[str, ...]:
    return ("insertion_auc", "deletion_auc") if metric == "insertion_minus_deletion" else (metric,)


def has_metric(frame: pd.DataFrame, name: str, metric: str) -> bool:
    """Whether ``frame`` has the column(s) of ``metric`` for map ``name``."""
    return all(f"{name}_{c}" in frame for c in _columns_of(metric))


def ranked_maps(frame: pd.DataFrame, by: str) -> list[str]:
    """The maps of ``frame`` that have ``by``, in column order, then "random" when it has ``by`` too."""
    names = [m for m in map_names_in(frame.columns) if has_metric(frame, m, by)]
    if by in FAITHFULNESS and has_metric(frame, RANDOM, by):
        names.append(RANDOM)
    return names


def available_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics of :data:`METRICS` that at least two maps of ``frame`` have (a ranking needs two), in order."""
    return [m for m in METRICS if len(ranked_maps(frame, m)) >= 2]


def metric_values(frame: pd.DataFrame, name: str, metric: str) -> np.ndarray:
    """(n,) float64 values of ``metric`` for map ``name``, one per row (NaN where the table has none)."""
    if metric not in METRICS:
        raise InvalidInputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")

    def column(c: str) -> np.ndarray:
        if c not in frame:
            return np.full(len(frame), np.nan)
        return pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    if metric == "insertion_minus_deletion":
        return column(f"{name}_insertion_auc") - column(f"{name}_deletion_auc")
    return column(f"{name}_{metric}")


def bootstrap_means(values: np.ndarray, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
                    ) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite ``values`` and its percentile-bootstrap interval.

    NaN for all three without a finite value; the interval is the mean itself for one value.
    The same ``seed`` and number of values give the same resamples.
    """
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence!r}")
    if resamples < 1:
        raise InvalidInputError(f"resamples must be at least 1, got {resamples!r}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan, np.nan, np.nan)
    mean = float(v.mean())
    if v.size == 1:
        return (mean, mean, mean)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, _BOOT_CHUNK_VALUES // v.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = v[rng.integers(0, v.size, size=(stop - start, v.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (mean, float(low), float(high))


@dataclass(frozen=True)
class Leaderboard:
    """The maps ranked by one metric.

    table : one row per map: ``map`` (its name), ``title``, ``images`` (with
        values of ``by``), and for every metric of ``metrics`` its ``mean``,
        ``low`` and ``high`` (the confidence interval), e.g.
        ``insertion_auc_mean``; sorted best first by ``by`` (the random order
        included, as the reference a map has to beat)
    by : the metric the rows are sorted by; confidence : e.g. 0.95; resamples : bootstrap resamples
    metrics : the metrics of the table, ``by`` first: those of :data:`METRICS` the results have
    """

    table: pd.DataFrame
    by: str
    confidence: float
    resamples: int
    metrics: tuple[str, ...] = tuple(FAITHFULNESS)


def leaderboard(frame: pd.DataFrame, maps: Sequence[str] | None = None, *, by: str = "insertion_minus_deletion",
                resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Leaderboard:
    """Rank the maps of a results table by their mean of a metric, with bootstrap intervals.

    Parameters
    ----------
    frame : a results table with ``<map>_<metric>`` columns (``<map>_deletion_auc``, ``<map>_road_morf``, ...)
    maps : names to rank (default: :func:`ranked_maps` of ``by``)
    by : a key of :data:`METRICS`; lower first where lower is better

    The table has ``by`` and every other metric the results hold for these maps (the three deletion/insertion
    ones together), each map's intervals from the same resamples of the images.
    """
    if by not in METRICS:
        raise InvalidInputError(f"by must be one of {', '.join(METRICS)}, got {by!r}")
    names = list(ranked_maps(frame, by) if maps is None else maps)
    others = [m for m in METRICS if m != by and any(has_metric(frame, n, m) for n in names if n != RANDOM)]
    if by in FAITHFULNESS:  # the three come together, as they always have
        others = [*(m for m in FAITHFULNESS if m != by), *(m for m in others if m not in FAITHFULNESS)]
    metrics = (by, *others)
    rows = []
    for name in names:
        row: dict[str, object] = {"map": name, "title": "random order" if name == RANDOM else title(name)}
        for metric in metrics:
            values = metric_values(frame, name, metric)
            if metric == by:
                row["images"] = int(np.isfinite(values).sum())
            mean, low, high = bootstrap_means(values, resamples, confidence, seed)
            row |= {f"{metric}_mean": mean, f"{metric}_low": low, f"{metric}_high": high}
        rows.append(row)
    columns = ["map", "title", "images"] + [f"{m}_{s}" for m in metrics for s in ("mean", "low", "high")]
    table = pd.DataFrame(rows, columns=columns)
    ascending = METRICS[by] == "lower is better"
    table = table.sort_values(f"{by}_mean", ascending=ascending, na_position="last", kind="stable")
    return Leaderboard(table.reset_index(drop=True), by, confidence, resamples, metrics)


def head_to_head(frame: pd.DataFrame, maps: Sequence[str] | None = None, *, metric: str = "insertion_minus_deletion"
                 ) -> pd.DataFrame:
    """Square table: row A, column B = the fraction of images on which map A is better than map B.

    Better by ``metric`` (lower deletion AUC, higher insertion AUC or
    insertion − deletion, each metric the way :data:`METRICS` says); a tie counts half; only images with both
    values count. The diagonal is NaN, and A-vs-B + B-vs-A = 1 wherever defined.
    """
    names = list(ranked_maps(frame, metric) if maps is None else maps)
    sign = -1.0 if METRICS.get(metric) == "lower is better" else 1.0
    values = {n: sign * metric_values(frame, n, metric) for n in names}
    out = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            both = np.isfinite(values[a]) & np.isfinite(values[b])
            if both.any():
                va, vb = values[a][both], values[b][both]
                out[i, j] = float(((va > vb) + 0.5 * (va == vb)).mean())
    labels = ["random order" if n == RANDOM else title(n) for n in names]
    return pd.DataFrame(out, index=labels, columns=labels)


def display_table(board: Leaderboard) -> pd.DataFrame:
    """The leaderboard as the Dataset page shows it: the map's title, images, and per metric its mean
    (a number, sortable) beside its interval as text ("[0.112, 0.135]"), the ranking metric first."""
    percent = f"{board.confidence * 100:g} %"
    out = {"map": board.table["title"], "images": board.table["images"]}
    for metric in board.metrics:
        t = board.table
        out[METRIC_TITLES[metric]] = t[f"{metric}_mean"]
        out[f"{METRIC_TITLES[metric]}, {percent} interval"] = [
            "—" if np.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(t[f"{metric}_low"], t[f"{metric}_high"],
                                                                             strict=True)]
    return pd.DataFrame(out)
