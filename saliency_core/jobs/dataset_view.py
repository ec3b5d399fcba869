"""Views of a batch job's results table, for the Dataset page: filters, columns, headline numbers.

The table is the one :func:`saliency_core.jobs.results.load_results` returns, one
row per image (columns: ``saliency_core.jobs.batch``). Everything here is a pure
function of that table, so the page only draws.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from saliency_core.jobs.map_specs import MAP_NAMES, agreement_column, map_names_in, split_map_column

OUTCOMES = ("all", "correct", "wrong", "no label")
TABLE_COLUMNS = ("key", "label_name", "target_name", "prediction_name", "prob_target", "correct", "score_gini",
                 "loss_gini", "score_entropy_norm", "loss_entropy_norm", "agree_spearman", "agree_iou_top5",
                 "agree_ssim", "score_deletion_auc", "score_insertion_auc", "loss_deletion_auc",
                 "loss_insertion_auc")
# Integer ids and counts: not worth a histogram.
_NOT_STATISTICS = frozenset({"width", "height", "label", "target", "prediction", "rank", "run", "maps_index"})


@dataclass(frozen=True)
class Headline:
    """The numbers at the top of the Dataset page.

    accuracy : top-1 accuracy over the ``labelled`` images, None when none has a label
    median_spearman : median Spearman rho between each image's score and loss map, None without that column
    """

    images: int
    labelled: int
    accuracy: float | None
    median_spearman: float | None


def headline(frame: pd.DataFrame) -> Headline:
    labelled = frame["correct"].notna() if "correct" in frame else pd.Series(False, index=frame.index)
    accuracy = float(frame.loc[labelled, "correct"].astype(bool).mean()) if labelled.any() else None
    spearman = None
    if "agree_spearman" in frame and len(frame):
        value = float(frame["agree_spearman"].median())
        spearman = None if math.isnan(value) else value
    return Headline(len(frame), int(labelled.sum()), accuracy, spearman)


def target_classes(frame: pd.DataFrame) -> list[str]:
    """The names of the classes the maps explain, sorted; empty without a ``target_name`` column."""
    return sorted(frame["target_name"].dropna().astype(str).unique()) if "target_name" in frame else []


def filter_rows(frame: pd.DataFrame, classes: Sequence[str] = (), outcome: str = "all",
                text: str = "") -> pd.DataFrame:
    """The rows whose target class is one of ``classes`` (all when empty), whose prediction matches
    ``outcome`` (one of :data:`OUTCOMES`) and whose key contains ``text`` (case-insensitive, literal).

    A filter on a column the table lacks keeps no row, except "all" and an empty ``text``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    keep = pd.Series(True, index=frame.index)
    if classes:
        keep &= frame["target_name"].isin(list(classes)) if "target_name" in frame else False
    if outcome != "all":
        if "correct" not in frame:
            keep &= False
        else:
            correct = frame["correct"].astype("boolean")
            keep &= {"correct": correct.eq(True), "wrong": correct.eq(False),
                     "no label": correct.isna()}[outcome].fillna(False).astype(bool)
    if text:
        keep &= frame["key"].astype(str).str.contains(text, case=False, regex=False) if "key" in frame else False
    return frame[keep]


MAX_AGREEMENT_TABLE_COLUMNS = 6  # every two maps have one; a dozen maps would have 66


def table_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of the image table that this results table has, in display order.

    The :data:`TABLE_COLUMNS` of the job's original score and loss maps;
    for maps of other methods (``smoothgrad_loss``...), each one's gini and
    AUCs, then the Spearman ρ of the first pairs of them.
    """
    columns = [c for c in TABLE_COLUMNS if c in frame.columns]
    others = [m for m in map_names_in(frame.columns) if not MAP_NAMES[m].legacy]
    for stat in ("gini", "deletion_auc", "insertion_auc"):
        columns += [f"{m}_{stat}" for m in others if f"{m}_{stat}" in frame.columns]
    pairs = [agreement_column(a, b, "spearman", frame.columns) for i, a in enumerate(others) for b in others[i + 1:]]
    return columns + [c for c in pairs if c is not None][:MAX_AGREEMENT_TABLE_COLUMNS]


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    """Columns worth a histogram: per-method statistics, agreement, probabilities, AUCs (not ids or counts)."""
    return [c for c in frame.columns if c not in _NOT_STATISTICS and pd.api.types.is_float_dtype(frame[c])]


PER_CLASS_MEANS = ("prob_target", "score_gini", "loss_gini", "score_entropy_norm", "loss_entropy_norm",
                   "agree_spearman", "agree_iou_top5")


def per_class(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per target class: images, accuracy where labelled, and the means of the main statistics.

    Sorted by image count, then class index. Columns ``target, class, images, accuracy`` and, where
    present, the :data:`PER_CLASS_MEANS`. ``class`` is the target's name, or empty when the table has
    none; ``accuracy`` is NaN without a ``correct`` column. Empty without a ``target`` column.
    """
    base = ["target", "class", "images", "accuracy"]
    if frame.empty or "target" not in frame.columns:
        return pd.DataFrame(columns=base)
    means = [c for c in PER_CLASS_MEANS if c in frame.columns]
    extra = {
        "_correct": frame["correct"].astype("Float64") if "correct" in frame.columns else float("nan"),
        "_name": frame["target_name"].astype("string") if "target_name" in frame.columns else "",
        "_one": 1,
    }
    grouped = frame.assign(**extra).groupby("target", sort=True)
    table = grouped.agg(**{"class": ("_name", "first"), "images": ("_one", "size"),
                           "accuracy": ("_correct", "mean")}, **{c: (c, "mean") for c in means})
    table = table.reset_index().sort_values(["images", "target"], ascending=[False, True], kind="stable")
    table["accuracy"] = table["accuracy"].astype(float)
    return table.reset_index(drop=True)


def most_disagreeing(frame: pd.DataFrame, n: int = 10, metric: str = "agree_spearman") -> pd.DataFrame:
    """The ``n`` images whose score and loss maps agree least by ``metric`` (lowest first; NaN last)."""
    if metric not in frame.columns:
        return frame.iloc[0:0]
    by = [metric, "key"] if "key" in frame.columns else [metric]
    return frame.sort_values(by, ascending=True, na_position="last", kind="stable").head(n)


def method_statistics(columns: Sequence[str]) -> list[str]:
    """The statistics computed per map (``gini`` for ``score_gini`` / ``smoothgrad_loss_gini``), sorted."""
    return sorted({split_map_column(c)[1] for c in columns if split_map_column(c)[0] is not None})


def other_columns(columns: Sequence[str]) -> list[str]:
    """The columns that belong to no one method (agreement, probabilities, loss), in order."""
    return [c for c in columns if split_map_column(c)[0] is None]


def histogram_bins(n: int) -> int:
    """About 2·sqrt(n) bins, between 10 and 50: readable for 12 images or 50,000."""
    return max(10, min(50, round(2 * max(0, n) ** 0.5)))


def _number(value: object, fmt: str) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(number) else format(number, fmt)


def _name(value: object) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA \
        or str(value) == "" else str(value)


def row_fields(row: pd.Series) -> dict[str, str]:
    """The fields the Dataset page shows for one image, as text; "—" for what the table lacks.

    Keys: key, label, target, target_source, prediction, prob_prediction,
    prob_target, agree_spearman. Text comes from the results file as it is:
    the page escapes it before rendering.
    """
    return {
        "key": _name(row.get("key")),
        "label": _name(row.get("label_name")),
        "target": _name(row.get("target_name", row.get("target"))),
        "target_source": _name(row.get("target_source")),
        "prediction": _name(row.get("prediction_name", row.get("prediction"))),
        "prob_prediction": _number(row.get("prob_prediction"), ".3f"),
        "prob_target": _number(row.get("prob_target"), ".3f"),
        "agree_spearman": _number(row.get("agree_spearman"), ".3f"),
    }


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a table's values, index and column names: a cache key for what is computed from it."""
    h = hashlib.sha256()
    h.update(repr(list(frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()


def map_pair_defaults(names: Sequence[str]) -> tuple[str, str] | None:
    """The two maps the Dataset page compares first: score and loss when there, else the first two."""
    if "score" in names and "loss" in names:
        return "score", "loss"
    return (names[0], names[1]) if len(names) >= 2 else None
