"""Hostile Parquet uploads: millions of rows in a few hundred kB, strings that expand, too few columns.

The row bomb is built by :mod:`tests.hostile` (nothing binary is committed)
and loaded in a fresh interpreter whose peak resident memory is measured, so
a reader that expands the file shows up as a failure, not as a slow suite.
"""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saliency_core.errors import InvalidInputError
from saliency_core.jobs import dataset_view, results
from saliency_core.jobs.results import load_parquet_bytes, load_results
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
        "from saliency_core.jobs.results import load_parquet_bytes\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "# --- start\n"
        "_out = len(load_parquet_bytes(data).results)\n")
    assert "InvalidInputError" in str(measured["out"]), measured
    assert measured["peak_mb"] - measured["baseline_mb"] < PEAK_BOUND_MB, measured


# --------------------------------------------------------------------------- cells that become Python objects

# The two files: within every footer limit (rows, columns, 16 bytes a decimal, 4 a date), but pandas
# makes each cell a Python object. Unrefused, reading them cost +2,030 MB and +775 MB here (load_parquet_bytes
# alone; the Dataset page then took the server from 1.1 to 8.2 GB).
OBJECT_BOMBS = {"decimal128": (pa.decimal128(38, 0), 75), "date32": (pa.date32(), 300)}
# What a file refused from its footer may cost: the footer and the file's bytes, nothing decoded.
FOOTER_ONLY_MB = 150


def _peak_of_loading(path: Path) -> dict:
    return hostile.peak_rss_mb(
        "from saliency_core.jobs.results import load_parquet_bytes\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "# --- start\n"
        "_out = len(load_parquet_bytes(data).results)\n")


@pytest.mark.parametrize("kind", OBJECT_BOMBS)
def test_parquet_of_decimals_or_dates_is_refused_before_a_row_is_read(kind: str, tmp_path: Path):
    arrow_type, columns = OBJECT_BOMBS[kind]
    path = hostile.parquet_typed_columns(tmp_path / f"{kind}.parquet", arrow_type, columns)
    assert path.stat().st_size < 600_000
    with pytest.raises(InvalidInputError, match=rf"column 'c0' holds {kind}"):
        load_parquet_bytes(path.read_bytes())
    measured = _peak_of_loading(path)
    assert "InvalidInputError" in str(measured["out"]), measured
    assert measured["peak_mb"] - measured["baseline_mb"] < FOOTER_ONLY_MB, measured


def test_pandas_metadata_that_makes_strings_python_objects_is_refused(tmp_path: Path):
    """150 kB of one repeated two-letter string, 30 million cells: as pyarrow strings they fit the budget;
    the file's own metadata asking for "string[python]" made each a Python str (+2.5 GB)."""
    path = hostile.parquet_python_strings(tmp_path / "python-strings.parquet")
    with pytest.raises(InvalidInputError, match=r"column 'key' a 'string\[python\]' column"):
        load_parquet_bytes(path.read_bytes())
    measured = _peak_of_loading(path)
    assert "InvalidInputError" in str(measured["out"]), measured
    assert measured["peak_mb"] - measured["baseline_mb"] < FOOTER_ONLY_MB, measured


OTHER_TYPES = [pa.decimal256(40, 2), pa.date64(), pa.time32("s"), pa.time64("us"), pa.timestamp("ms"),
               pa.timestamp("us", tz="Europe/Paris"), pa.duration("ms"), pa.float16(), pa.binary(),
               pa.large_binary(), pa.binary(4), pa.string_view(), pa.binary_view(),
               pa.dictionary(pa.int32(), pa.date32()), pa.dictionary(pa.int8(), pa.binary())]


@pytest.mark.parametrize("arrow_type", OTHER_TYPES, ids=str)
def test_every_column_type_the_job_never_writes_is_refused_by_name(arrow_type: pa.DataType):
    """Types that become Python objects (times, binaries, intervals) or that the job has no use for."""
    n = 3
    values = pa.nulls(n, arrow_type)
    table = pa.table({"key": pa.array(["a", "b", "c"]), "target": pa.array([1, 2, 3]),
                      "prediction": pa.array([1, 2, 3]), "odd": values})
    data = _parquet(table)
    stored = pq.read_schema(pa.BufferReader(data)).field("odd").type
    with pytest.raises(InvalidInputError, match=rf"column 'odd' holds {re.escape(str(stored))} values"):
        load_parquet_bytes(data)


def test_every_type_the_job_writes_is_read(tmp_path: Path):
    """The whitelist leaves the job's own columns alone: strings, nullable integers and booleans, floats of
    both widths, an all-None column (stored as Arrow's null type) and a categorical."""
    frame = pd.DataFrame({"key": pd.array(["b.jpg", "a.jpg"], dtype="string"), "target": [1, 2],
                          "prediction": np.array([1, 2], np.int32), "label": pd.array([1, None], dtype="Int64"),
                          "correct": pd.array([True, None], dtype="boolean"), "width": np.array([5, 6], np.uint16),
                          "score_gini": [0.5, np.nan], "loss_auc": np.array([1, 2], np.float32),
                          "maps_file": [None, None], "model": pd.Categorical(["m", "m"])})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert pa.types.is_null(table.schema.field("maps_file").type)
    rows = load_parquet_bytes(_parquet(table)).results
    assert list(rows["key"]) == ["a.jpg", "b.jpg"]
    for name in frame.columns:
        assert rows[name].dtype == frame[name].dtype, (name, rows[name].dtype)
    (tmp_path / "results").mkdir()
    pq.write_table(table, tmp_path / "results" / "part-000-r0000-00000.parquet")
    assert list(load_results(tmp_path).results["key"]) == ["a.jpg", "b.jpg"]


def test_file_attributes_do_not_reach_the_frame():
    """``DataFrame.attrs`` from the file's metadata would be deep-copied by every later operation."""
    table = pa.Table.from_pandas(MINIMAL, preserve_index=False)
    meta = json.loads(table.schema.metadata[b"pandas"])
    meta["attributes"] = {"blob": ["x" * 1000] * 1000}
    data = _parquet(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}))
    assert load_parquet_bytes(data).results.attrs == {}


def test_a_results_folder_with_a_part_of_decimals_is_refused_by_part_and_column(tmp_path: Path):
    """A folder on the server is read whole; a foreign part dropped into it is checked like an upload."""
    (tmp_path / "results").mkdir()
    MINIMAL.to_parquet(tmp_path / "results" / "part-000-r0000-00000.parquet", index=False)
    MINIMAL.assign(key=["c.jpg", "d.jpg"], c0=[Decimal("0.5"), Decimal(1)]).to_parquet(
        tmp_path / "results" / "part-000-r0000-00001.parquet", index=False)
    with pytest.raises(InvalidInputError, match=r"results/part-000-r0000-00001.parquet .*'c0' holds decimal128"):
        load_results(tmp_path)


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
