"""The results folder of a batch job (:mod:`saliency_core.batch`): layout, writing, reading.

::

    OUT/
      manifest.json          model, weights, preprocessing, options, versions, command, runs
      results/part-*.parquet one row per image (columns: saliency_core.batch._rows, README)
      errors/part-*.parquet  key, path, error: files that could not be used
      maps/part-*.npz        with --save-maps: keys, and per method the maps
                             divided by their own max, float16 (N, H, W);
                             the scale is the row's ``<method>_max``

Every part is written to a temporary name and renamed, so a part is either
complete or absent; a job stopped at any moment and started again skips the
keys found in ``results/`` and ``errors/`` and writes nothing twice.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from saliency_core.errors import InvalidInputError
from saliency_core.files import atomic_write

MANIFEST = "manifest.json"
RESULTS, ERRORS, MAPS = "results", "errors", "maps"
ERROR_COLUMNS = ("key", "path", "error", "rank", "run")


def write_part(out: str | os.PathLike, name: str, rows: pd.DataFrame, errors: pd.DataFrame,
               maps: dict[str, np.ndarray] | None = None) -> None:
    """Write one flush of results: maps first, errors, then the rows (the rows commit the part).

    ``maps``: "keys" -> (N,) str and method -> (N, H, W) float16, in ``rows``' order.
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
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


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
    tables = [pq.read_table(p) for p in parts]
    if not tables:
        return pd.DataFrame(columns=list(columns or ()))
    # "permissive": a part whose column was all missing (say, no unlabelled image) stored it as null.
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


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
    def methods(self) -> list[str]:
        return [m for m in ("score", "loss") if f"{m}_max" in self.results.columns]

    def maps(self, key: str) -> dict[str, np.ndarray] | None:
        """The saved maps of one image (float32, rescaled to their true values), or None when not saved."""
        if self.root is None or "maps_file" not in self.results.columns:
            return None
        row = self.results.loc[self.results["key"] == key]
        if row.empty or pd.isna(row["maps_file"].iloc[0]):
            return None
        row = row.iloc[0]
        with np.load(Path(self.root) / MAPS / row["maps_file"], allow_pickle=False) as npz:
            i = int(row["maps_index"])
            return {m: npz[m][i].astype(np.float32) * np.float32(row[f"{m}_max"]) for m in self.methods if m in npz}


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
    return ResultsFolder(results, errors, read_manifest(root), str(root))


def load_parquet_bytes(data: bytes) -> ResultsFolder:
    """An uploaded Parquet file of results (rows as the job writes them).

    Raises
    ------
    InvalidInputError : not a Parquet file, or not one written by the batch job.
    """
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInputError(f"This is not a Parquet file ({exc}).") from exc
    frame = table.to_pandas()
    missing = {"key", "target", "prediction"} - set(frame.columns)
    if missing:
        raise InvalidInputError("This Parquet file was not written by the batch job: it has no column "
                                f"{', '.join(sorted(missing))}.")
    return ResultsFolder(frame.sort_values("key", kind="stable").reset_index(drop=True),
                         pd.DataFrame(columns=list(ERROR_COLUMNS)))
