"""Which column types a Parquet file the dashboard did not write may hold: those the batch job writes.

A Parquet file's footer says how many values it holds, not what they become
in memory. Decimals, dates, times, zoned timestamps and durations turn into
one Python object per cell in pandas (a ``Decimal`` is ~100 bytes): 200,000
rows of 75 ``decimal128`` columns are 418 kB on disk, pass every footer limit
as "16 bytes a value", and took a server from 1.1 to 8.2 GB. Estimating each
type's cost would chase pandas' conversions from release to release; the
batch job writes only a few plain types, so anything else is refused, by
column and type, before a row is read:

* integers (8 to 64 bits, signed or not), float32 and float64, booleans;
* strings (``string``, ``large_string``) and dictionaries of them
  (categoricals); their bytes are counted once decoded (:mod:`saliency_core.jobs.results`);
* the null type (pandas writes a column of nothing but ``None`` so).

Every allowed type costs at most :data:`BYTES_PER_VALUE` in pandas besides
its strings, so rows x columns x that bounds the table before it is read.

The file's pandas metadata (written by ``DataFrame.to_parquet``) is read
too, because it decides what pandas builds: a hand-written
``"numpy_type": "string[python]"`` makes every cell of a string column a
Python ``str`` (154 kB of one-letter strings took 2.5 GB), and its
``attributes`` become ``DataFrame.attrs``, deep-copied by later operations.
Only the pandas types the job's columns have are accepted, and the
attributes are dropped (:func:`for_pandas`).

Nothing here imports Streamlit; :mod:`saliency_core.jobs.results` calls it for
uploads and for every part of a results folder.
"""

from __future__ import annotations

import json

import pyarrow as pa

from saliency_core.errors import InvalidInputError

#: What one value of an allowed type takes once it is a pandas column, at most: 8 bytes of data (an
#: integer with nulls becomes float64 or Int64; a boolean with nulls and a null column, object pointers
#: to True, False and None; a string its 64-bit offset) and a byte of null mask. Strings' own bytes
#: are counted after reading, as the file's sizes can't say how a dictionary expands.
BYTES_PER_VALUE = 9

#: The pandas types (``numpy_type`` in the file's pandas metadata) of the allowed Arrow types: NumPy's,
#: pandas' nullable ones, pyarrow-backed strings, and "object" (plain strings, all-None columns).
PANDAS_TYPES = frozenset({
    *(f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)),
    *(f"{s}Int{b}" for s in ("", "U") for b in (8, 16, 32, 64)),
    "float32", "float64", "Float32", "Float64", "bool", "boolean", "object", "str", "string",
})
# Keys of the pandas metadata that pyarrow reads back; the rest ("attributes": DataFrame.attrs, "creator",
# "pandas_version") is dropped.
_PANDAS_KEYS = ("index_columns", "column_indexes", "columns")

ALLOWED = "integers, float32/float64, booleans, strings and dictionaries of strings"


def _is_allowed(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return pa.types.is_integer(t.index_type) and (pa.types.is_string(t.value_type)
                                                      or pa.types.is_large_string(t.value_type))
    return (pa.types.is_integer(t) or pa.types.is_float32(t) or pa.types.is_float64(t) or pa.types.is_boolean(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t))


def check_schema(schema: pa.Schema, what: str = "This Parquet file") -> None:
    """Refuse a column of a type the batch job never writes, or pandas metadata that builds other types.

    ``what`` names the file in the message ("This Parquet file", "results/part-000.parquet").

    Raises
    ------
    InvalidInputError : naming the first such column and its type.
    """
    for f in schema:
        if pa.types.is_nested(f.type):
            raise InvalidInputError(f"{what} was not written by the batch job: its column {f.name!r} is nested "
                                    f"({f.type}); results have one value per cell.")
        if not _is_allowed(f.type):
            raise InvalidInputError(f"{what} was not written by the batch job: its column {f.name!r} holds {f.type} "
                                    f"values, which the Dataset page does not read (it reads {ALLOWED}).")
    for column in _pandas_metadata(schema, what).get("columns", []):
        kind = column.get("numpy_type") if isinstance(column, dict) else column
        if not isinstance(kind, str) or kind not in PANDAS_TYPES:
            name = column.get("name") if isinstance(column, dict) else None
            raise InvalidInputError(f"{what} was not written by the batch job: its pandas metadata makes the "
                                    f"column {name!r} a {kind!r} column, which the batch job never writes.")


def _pandas_metadata(schema: pa.Schema, what: str) -> dict:
    raw = (schema.metadata or {}).get(b"pandas")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{what} has pandas metadata that is not JSON ({exc}).") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("columns", []), list):
        raise InvalidInputError(f"{what} has pandas metadata that pandas itself never writes.")
    return meta


def bytes_per_row(schema: pa.Schema) -> int:
    """What one row of an allowed schema takes in pandas at most, besides its strings' bytes."""
    return BYTES_PER_VALUE * len(schema)


def for_pandas(table: pa.Table) -> pa.Table:
    """``table`` with only the pandas metadata pyarrow needs to rebuild the job's dtypes (no ``attrs``).

    Call :func:`check_schema` on the table's schema first.
    """
    meta = _pandas_metadata(table.schema, "This table")
    if not meta:
        return table.replace_schema_metadata(None)
    kept = {k: meta[k] for k in _PANDAS_KEYS if k in meta}
    return table.replace_schema_metadata({b"pandas": json.dumps(kept).encode()})
