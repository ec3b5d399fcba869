"""The results folder of a batch job (:mod:`saliency_core.jobs.batch`): layout, writing, reading.

::

    OUT/
      manifest.json          model, weights, preprocessing, options, versions, command, runs
      results/part-*.parquet one row per image (columns: saliency_core.jobs.columns.rows_frame, README)
      errors/part-*.parquet  key, path, error: files that could not be used
      maps/part-*.npz        with --save-maps: keys, and per map the maps
                             divided by their own max, float16 (N, H, W);
                             the scale is the row's ``<map>_max``

Every part is written to a temporary name and renamed, so a part is either
complete or absent; a job stopped at any moment and started again skips the
keys found in ``results/`` and ``errors/`` and writes nothing twice.

Reading back, every table gets the columns the Dataset page reads
(:data:`PAGE_COLUMNS`, as typed nulls when absent). An uploaded Parquet file
(:func:`load_parquet_bytes`) is checked from its footer before any row is
read: a few hundred kilobytes can hold millions of rows.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from saliency_core.core.files import atomic_write
from saliency_core.errors import InvalidImageError, InvalidInputError
from saliency_core.inputs.image_bytes import open_regular_file
from saliency_core.jobs import map_specs, parquet_types

MANIFEST = "manifest.json"
RESULTS, ERRORS, MAPS = "results", "errors", "maps"
ERROR_COLUMNS = ("key", "path", "error", "rank", "run")
# An uploaded Parquet file must have these (the batch job writes them all).
REQUIRED_COLUMNS = ("key", "target", "prediction")
# The columns the Dataset page reads from a row, with their types. A table without them gets them as
# typed nulls (the page then says it has no such data), except that a missing class name is the class
# index as text when the table has that (_NAMED_BY); present ones are converted to their type.
PAGE_COLUMNS: dict[str, str] = {
    "path": "string", "label": "Int64", "label_name": "string", "target_name": "string",
    "prediction_name": "string", "target_source": "string", "prob_target": "float64",
    "prob_prediction": "float64", "correct": "boolean",
}
_NAMED_BY = {"target_name": "target", "prediction_name": "prediction", "label_name": "label"}

# Limits on an uploaded Parquet file, checked from its footer before a row is read. A results part holds
# --part-size rows (1,024 by default) of about 70 columns; a whole dataset is opened as a folder instead.
MAX_PARQUET_ROWS = 200_000
MAX_PARQUET_COLUMNS = 500
# Uncompressed pages, and the table as pandas holds it: every value as parquet_types.BYTES_PER_VALUE (only
# the types the job writes are read at all), strings' bytes counted after reading.
MAX_PARQUET_BYTES = 256 * 2**20
_MAX_PARQUET_FOOTER_BYTES = 16 * 2**20


def write_part(out: str | os.PathLike, name: str, rows: pd.DataFrame, errors: pd.DataFrame,
               maps: dict[str, np.ndarray] | None = None) -> None:
    """Write one flush of results: maps first, errors, then the rows (the rows commit the part).

    ``maps``: "keys" -> (N,) str and map name -> (N, H, W) float16, in ``rows``' order.
    """
    out = Path(out)
    if maps is not None and len(rows):
        (out / MAPS).mkdir(parents=True, exist_ok=True)
        atomic_write(out / MAPS / f"{name}.npz", lambda fh: np.savez(fh, **maps))
    if len(errors):
        (out / ERRORS).mkdir(parents=True, exist_ok=True)
        atomic_write(out / ERRORS / f"{name}.parquet", lambda fh: errors.to_parquet(fh, index=False))
    if len(rows):
        (out / RESULTS).mkdir(parents=True, exist_ok=True)
        atomic_write(out / RESULTS / f"{name}.parquet", lambda fh: rows.to_parquet(fh, index=False))


def _parts(out: Path, kind: str) -> list[Path]:
    folder = out / kind
    return sorted(p for p in folder.glob("part-*.parquet") if p.is_file()) if folder.is_dir() else []


def done_keys(out: str | os.PathLike) -> set[str]:
    """Keys already written, as results or as errors: what a restarted job skips."""
    keys: set[str] = set()
    for kind in (RESULTS, ERRORS):
        for part in _parts(Path(out), kind):
            keys.update(pq.read_table(part, columns=["key"]).column("key").to_pylist())
    return keys


def row_counts(out: str | os.PathLike) -> dict[str, int]:
    """How many images and unreadable files are written, from the parts' footers (no rows read)."""
    return {name: sum(pq.read_metadata(p).num_rows for p in _parts(Path(out), kind))
            for name, kind in (("images", RESULTS), ("errors", ERRORS))}


def _concat(parts: list[Path], columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Every part as one frame; each part's column types are checked from its footer before it is read (a
    foreign file dropped into a results folder could hold decimals or dates, a Python object per cell)."""
    for p in parts:
        try:
            schema = pq.read_schema(p)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInputError(f"{p.parent.name}/{p.name} is not a Parquet file ({exc}).") from exc
        parquet_types.check_schema(schema, f"{p.parent.name}/{p.name}")
    tables = [pq.read_table(p) for p in parts]
    if not tables:
        return pd.DataFrame(columns=list(columns or ()))
    # "permissive": a part whose column was all missing (say, no unlabelled image) stored it as null.
    return parquet_types.for_pandas(pa.concat_tables(tables, promote_options="permissive")).to_pandas()


# --------------------------------------------------------------------------- which runs are alive

def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat`` field 22), or None when
    there is no such process or no ``/proc``. With the pid, it names one process for as long as the machine
    runs: a pid reused later has another start time."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    except (OSError, ValueError):
        return None
    return fields[19] if len(fields) > 19 and fields[0] not in ("Z", "X") else None  # a zombie is dead


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def this_process() -> dict:
    """What a run records so that :func:`run_status` can tell later whether it still runs."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": process_start_time(pid),
            "boot_id": _boot_id()}


def _alive(pid: int, start: str | None) -> bool:
    if Path("/proc/self/stat").exists():
        now = process_start_time(pid)
        return now is not None and (start is None or now == start)
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run: dict) -> str:
    """What became of one run of the manifest's ``runs``: "complete", "running", "stopped" or "unknown".

    * "complete": it finished.
    * "stopped": it recorded that it stopped (SIGTERM, Ctrl-C, an error: ``run["reason"]``), or it says
      "running" but its process is gone: killed (SIGKILL, out of memory), crashed, or the machine rebooted.
    * "running": its process, recorded as pid, host and start time (:func:`this_process`), still runs on
      this machine: same host name, a live process with that pid and that start time.
    * "unknown": it says "running" and ran on another machine, which can't be checked from here, or was
      recorded without its process (an older version of the job); or it has no status at all.

    Reads ``/proc`` (or, without it, asks the kernel whether the pid exists); changes nothing.
    """
    status = run.get("status")
    if status in ("complete", "stopped"):
        return status
    pid = run.get("pid")
    if status != "running" or not isinstance(pid, int) or run.get("host") != socket.gethostname():
        return "unknown"
    boot = run.get("boot_id")
    if boot is not None and _boot_id() not in (None, boot):
        return "stopped"  # the machine restarted since
    return "running" if _alive(pid, run.get("process_start")) else "stopped"


def run_status_text(run: dict) -> str:
    """:func:`run_status` in words for a page: "complete", "stopped (SIGTERM)", "stopped (killed or
    crashed)", "running (pid 123 on host)", "unknown (on host b; can't be checked from here)"."""
    status = run_status(run)
    if status == "stopped":
        return f"stopped ({run.get('reason') or 'killed or crashed'})"
    if status == "running":
        return f"running (pid {run.get('pid')} on {run.get('host')})"
    if status == "unknown" and run.get("status") == "running" and run.get("host"):
        return f"unknown (running on {run['host']}, which can't be checked from here)"
    return status


def read_manifest(out: str | os.PathLike) -> dict:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifest(out: str | os.PathLike, manifest: dict) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=False).encode()
    atomic_write(Path(out) / MANIFEST, lambda fh: fh.write(data))


@dataclass
class ResultsFolder:
    """A batch job's results, read back.

    results : one row per image, sorted by key
    errors : key, path, error (and rank, run) for files that could not be used
    manifest : the run's description (empty for an uploaded Parquet file)
    root : the folder, or None for an uploaded file
    """

    results: pd.DataFrame
    errors: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    root: str | None = None

    @property
    def maps(self) -> list[str]:
        """The maps the table holds, by name: "score", "loss", "smoothgrad_loss"...
        (:mod:`saliency_core.jobs.map_specs`)."""
        return map_specs.map_names_in(self.results.columns)

    def saved_maps(self, key: str) -> dict[str, np.ndarray] | None:
        """The saved maps of one image (float32, rescaled to their true values), or None when not saved."""
        if self.root is None or "maps_file" not in self.results.columns:
            return None
        row = self.results.loc[self.results["key"] == key]
        if row.empty or pd.isna(row["maps_file"].iloc[0]):
            return None
        row = row.iloc[0]
        name = row["maps_file"]
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            return None  # the job writes a bare part name; anything else is not its file
        try:
            fh = open_regular_file(Path(self.root) / MAPS / name)
        except (InvalidImageError, OSError):  # gone, or a FIFO or folder in its place: no saved maps
            return None
        with fh, np.load(fh, allow_pickle=False) as npz:
            i = int(row["maps_index"])
            return {m: npz[m][i].astype(np.float32) * np.float32(row[f"{m}_max"]) for m in self.maps if m in npz}


def _as_text(index: pd.Series) -> pd.Series:
    try:
        return index.astype("Int64").astype("string")  # 967, not 967.0
    except (TypeError, ValueError):
        return index.astype("string")


def with_page_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column of :data:`PAGE_COLUMNS`, of its type: absent ones all null, except a
    class name (``target_name``, ...) which is the class index as text when ``frame`` has that.

    Raises
    ------
    InvalidInputError : a present column can't be read as its type (words in ``prob_target``, say).
    """
    columns = {}
    for name, dtype in PAGE_COLUMNS.items():
        if name not in frame.columns and _NAMED_BY.get(name) in frame.columns:
            columns[name] = _as_text(frame[_NAMED_BY[name]])
        elif name not in frame.columns:
            columns[name] = pd.Series(np.nan if dtype == "float64" else pd.NA, index=frame.index, dtype=dtype)
        elif str(frame[name].dtype) != dtype:
            try:
                columns[name] = frame[name].astype(dtype)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"The column {name!r} holds {frame[name].dtype} values that can't be read "
                                        f"as {dtype} ({exc}).") from exc
    return frame.assign(**columns) if columns else frame


def load_results(out: str | os.PathLike) -> ResultsFolder:
    """Read a results folder written by the batch job.

    Raises
    ------
    InvalidInputError : the folder does not exist or holds no results.
    """
    root = Path(out)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder")
    result_parts, error_parts = _parts(root, RESULTS), _parts(root, ERRORS)
    if not result_parts and not error_parts:
        raise InvalidInputError(f"{root} holds no batch-job results (no {RESULTS}/part-*.parquet)")
    results = _concat(result_parts)
    if "key" in results.columns:
        results = results.sort_values("key", kind="stable").reset_index(drop=True)
    errors = _concat(error_parts, ERROR_COLUMNS)
    return ResultsFolder(with_page_columns(results), errors, read_manifest(root), str(root))


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _open_parquet(data: bytes) -> pq.ParquetFile:
    """The file's footer, checked against the limits before any row is read."""
    if len(data) >= 12 and data[-4:] == b"PAR1":
        footer = int.from_bytes(data[-8:-4], "little")
        if footer > _MAX_PARQUET_FOOTER_BYTES:
            raise InvalidInputError(f"This Parquet file's metadata alone is {_mb(footer)}; the limit is "
                                    f"{_mb(_MAX_PARQUET_FOOTER_BYTES)}.")
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        meta = pf.metadata
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInputError(f"This is not a Parquet file ({exc}).") from exc
    if meta.num_rows > MAX_PARQUET_ROWS:
        raise InvalidInputError(f"This Parquet file holds {meta.num_rows:,} rows; an uploaded file may hold "
                                f"{MAX_PARQUET_ROWS:,} (a results part holds --part-size rows, 1,024 by default). "
                                "Open the whole results folder on the server instead.")
    if meta.num_columns > MAX_PARQUET_COLUMNS:
        raise InvalidInputError(f"This Parquet file has {meta.num_columns:,} columns; the limit is "
                                f"{MAX_PARQUET_COLUMNS} (the batch job writes about 70).")
    parquet_types.check_schema(schema)  # decimals, dates, times... would be a Python object per cell
    stored = sum(meta.row_group(i).column(j).total_uncompressed_size
                 for i in range(meta.num_row_groups) for j in range(meta.row_group(i).num_columns))
    decoded = meta.num_rows * parquet_types.bytes_per_row(schema)
    if max(stored, decoded) > MAX_PARQUET_BYTES:
        raise InvalidInputError(f"This Parquet file holds {_mb(max(stored, decoded))} once decompressed and read; "
                                f"the limit is {_mb(MAX_PARQUET_BYTES)}.")
    return pf


def _string_bytes(column: pa.ChunkedArray) -> int:
    """Bytes of the strings of a column read as dictionaries, once each is decoded where it is used."""
    total = 0
    for chunk in column.chunks:
        if isinstance(chunk, pa.DictionaryArray):
            lengths = pc.take(pc.binary_length(chunk.dictionary), chunk.indices)
        else:
            lengths = pc.binary_length(chunk)
        total += pc.sum(lengths).as_py() or 0
    return total


def load_parquet_bytes(data: bytes) -> ResultsFolder:
    """An uploaded Parquet file of results (rows as the job writes them).

    Checked before any row is decoded, from the footer: at most
    :data:`MAX_PARQUET_ROWS` rows, :data:`MAX_PARQUET_COLUMNS` columns, none
    nested, only the types the batch job writes (:mod:`saliency_core.jobs.parquet_types`:
    no decimals, dates or times, which pandas makes a Python object per
    cell), :data:`MAX_PARQUET_BYTES` uncompressed and as pandas will hold
    it; the columns :data:`REQUIRED_COLUMNS` present, ``target`` and
    ``prediction`` integers. String columns are read as dictionaries and
    their decoded size checked before they are expanded. Columns of
    :data:`PAGE_COLUMNS` that are missing come as typed nulls.

    Raises
    ------
    InvalidInputError : not a Parquet file, over a limit, or not one written by the batch job.
    """
    pf = _open_parquet(data)
    schema = pf.schema_arrow
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise InvalidInputError("This Parquet file was not written by the batch job: it has no column "
                                f"{', '.join(sorted(missing))}.")
    for name in ("target", "prediction"):
        if not pa.types.is_integer(schema.field(name).type):
            raise InvalidInputError(f"The column {name!r} holds {schema.field(name).type} values; the batch job "
                                    "writes ImageNet class indices (integers).")
    strings = [pf.schema.column(j).path for j in range(len(pf.schema))
               if pf.schema.column(j).physical_type == "BYTE_ARRAY"]
    try:
        table = pq.ParquetFile(pa.BufferReader(data), read_dictionary=strings).read()
        size = sum(_string_bytes(table.column(name)) for name in strings) + \
            pf.metadata.num_rows * parquet_types.bytes_per_row(schema)
        if size > MAX_PARQUET_BYTES:
            raise InvalidInputError(f"This Parquet file holds {_mb(size)} once its strings are decoded; the limit "
                                    f"is {_mb(MAX_PARQUET_BYTES)}.")
        frame = parquet_types.for_pandas(table.cast(schema)).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"This Parquet file could not be read ({exc}).") from exc
    frame = frame.sort_values("key", kind="stable").reset_index(drop=True)
    return ResultsFolder(with_page_columns(frame), pd.DataFrame(columns=list(ERROR_COLUMNS)))
