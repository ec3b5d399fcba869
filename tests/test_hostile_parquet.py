"""Hostile Parquet uploads: millions of rows in a few hundred kB, strings that expand, too few columns.

The row bomb is built by :mod:`tests.hostile` (nothing binary is committed)
and loaded in a fresh interpreter whose peak resident memory is measured, so
a reader that expands the file shows up as a failure, not as a slow suite.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saliency_core import dataset_view, results
from saliency_core.errors import InvalidInputError
from saliency_core.results import load_parquet_bytes, load_results
from tests import hostile

# What loading a refused bomb may cost above the interpreter's own memory: far below the gigabytes an
# expanded one takes, with room for the Parquet reader's buffers.
PEAK_BOUND_MB = 600


# --------------------------------------------------------------------------- Parquet


def test_parquet_of_twenty_million_rows_is_refused_from_its_footer(tmp_path: Path):
    """244 kB on disk, 20 million rows: refused from the metadata, never decoded."""
    path = hostile.parquet_rows_bomb(tmp_path / "rows.parquet")
    assert path.stat().st_size < 400_000
    with pytest.raises(InvalidInputError, match="20,000,000 rows"):
        load_parquet_bytes(path.read_bytes())
    measured = hostile.peak_rss_mb(
        "from saliency_core.results import load_parquet_bytes\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "# --- start\n"
        "_out = len(load_parquet_bytes(data).results)\n")
    assert "InvalidInputError" in str(measured["out"]), measured
    assert measured["peak_mb"] - measured["baseline_mb"] < PEAK_BOUND_MB, measured


def _parquet(frame: pd.DataFrame | pa.Table, **kwargs) -> bytes:
    buf = io.BytesIO()
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, buf, **kwargs)
    return buf.getvalue()


def test_parquet_with_too_many_columns_is_refused():
    frame = pd.DataFrame({"key": ["a"], "target": [1], "prediction": [1],
                          **{f"c{i}": [0.0] for i in range(600)}})
    with pytest.raises(InvalidInputError, match="columns"):
        load_parquet_bytes(_parquet(frame))


def test_parquet_over_the_byte_budget_is_refused(monkeypatch: pytest.MonkeyPatch):
    frame = pd.DataFrame({"key": [f"k{i}" for i in range(1000)], "target": 1, "prediction": 2})
    data = _parquet(frame, compression="none")
    load_parquet_bytes(data)
    monkeypatch.setattr(results, "MAX_PARQUET_BYTES", 4000, raising=False)  # the file holds more, uncompressed
    with pytest.raises(InvalidInputError, match="MB"):
        load_parquet_bytes(data)


def test_parquet_whose_strings_expand_past_the_budget_is_refused(monkeypatch: pytest.MonkeyPatch):
    """A dictionary-encoded column: one 1 MB string stored once, repeated in every row when decoded."""
    n = 400
    big = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["x" * (1 << 20)]))
    table = pa.table({"key": pa.array([f"k{i}" for i in range(n)]), "target": pa.array(np.ones(n, np.int64)),
                      "prediction": pa.array(np.ones(n, np.int64)), "path": big})
    data = _parquet(table)
    assert len(data) < 200_000
    monkeypatch.setattr(results, "MAX_PARQUET_BYTES", 64 << 20, raising=False)  # the decoded column is 400 MB
    with pytest.raises(InvalidInputError, match="MB"):
        load_parquet_bytes(data)


def test_parquet_limits_leave_a_real_part_alone(tmp_path: Path):
    frame = pd.DataFrame({"key": [f"n01440764/{i}.jpg" for i in range(3)], "target": [0, 0, 1],
                          "prediction": [0, 1, 1],
                          "target_name": pd.array(["tench", "tench", "goldfish"], dtype="string"),
                          "score_gini": [0.1, 0.2, 0.3], "correct": pd.array([True, False, None], "boolean")})
    res = load_parquet_bytes(_parquet(frame))
    pd.testing.assert_frame_equal(res.results[list(frame.columns)], frame)


# --------------------------------------------------------------------------- minimal files the page must survive


MINIMAL = pd.DataFrame({"key": ["b.jpg", "a.jpg"], "target": [967, 1], "prediction": [967, 2]})
A_FEW_MORE = MINIMAL.assign(target_name=["espresso", "goldfish"], score_gini=[0.5, 0.25], agree_spearman=[0.9, 0.1])
# The columns pages/dataset.py reads without checking, and the type each must have.
PAGE_READS = {"path": "string", "label": "Int64", "label_name": "string", "target_name": "string",
              "prediction_name": "string", "target_source": "string", "prob_target": "float64",
              "prob_prediction": "float64", "correct": "boolean"}


@pytest.mark.parametrize("frame", [MINIMAL, A_FEW_MORE], ids=["minimal", "a_few_more"])
def test_minimal_parquet_gets_every_column_the_page_reads(frame: pd.DataFrame):
    res = load_parquet_bytes(_parquet(frame))
    rows = res.results
    assert list(rows["key"]) == ["a.jpg", "b.jpg"]
    for column, dtype in PAGE_READS.items():
        assert column in rows, column
        assert str(rows[column].dtype) == dtype, (column, rows[column].dtype)
    # Present names are kept; missing ones are the class index as text, as the page would show it.
    assert list(rows["target_name"]) == (["goldfish", "espresso"] if "target_name" in frame else ["1", "967"])
    assert list(rows["prediction_name"]) == ["2", "967"]
    assert rows["label_name"].isna().all() and rows["path"].isna().all() and rows["correct"].isna().all()
    # What the page does with them, section by section.
    top = dataset_view.headline(rows)
    assert top.images == 2 and top.labelled == 0 and top.accuracy is None
    for outcome in dataset_view.OUTCOMES:
        dataset_view.filter_rows(rows, dataset_view.target_classes(rows)[:1], outcome, "a")
    assert list(dataset_view.per_class(rows)["images"]) == [1, 1]
    row = rows.iloc[0]
    label = "—" if pd.isna(row["label_name"]) else row["label_name"]  # not `or`: NA has no truth value
    text = (f"**{row['key']}** · label {label} · target **{row['target_name']}** "
            f"({row['target_source']}) · predicted {row['prediction_name']} (p = {row['prob_prediction']:.3f})")
    assert "p = nan" in text
    assert f"{row['prob_target']:.3f}" == "nan"
    assert dataset_view.numeric_columns(rows)  # the probabilities, as float columns of NaN
    assert results.PAGE_COLUMNS == PAGE_READS


def test_minimal_results_folder_gets_the_page_columns_too(tmp_path: Path):
    (tmp_path / "results").mkdir()
    MINIMAL.to_parquet(tmp_path / "results" / "part-000-r0000-00000.parquet", index=False)
    rows = load_results(tmp_path).results
    assert set(PAGE_READS) <= set(rows.columns) and list(rows["key"]) == ["a.jpg", "b.jpg"]
