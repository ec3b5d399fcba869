"""A corpus of hostile inputs, generated on demand (nothing binary is committed).

Each function writes one kind of file the dashboard or the batch job may be
handed, small on disk and cheap to make, but built to hurt a careless reader:

* :func:`zero_npz` -- an ``.npz`` whose ``X`` decompresses to gigabytes of
  zeros (1.6 MB on disk for the 1.6 GB float64 array of the issue);
* :func:`npz_with_extra_data` -- a member holding more bytes than its ``.npy``
  header says;
* :func:`parquet_rows_bomb` -- a Parquet file of millions of rows in a few
  hundred kilobytes;
* :func:`parquet_typed_columns`, :func:`parquet_python_strings` -- Parquet
  files within every footer limit whose cells become Python objects
  (decimals, dates; strings by the file's own pandas metadata);
* :func:`fifo_dataset`, :func:`symlink_loops` -- ImageFolder trees with a
  named pipe named like a JPEG, or directory links that point back up.

Also :func:`peak_rss_mb`, which runs a snippet in a fresh interpreter and
reports its peak resident memory, so a test can bound what a file costs.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
_BLOCK = 1 << 20  # zeros per deflate block


def _zero_deflate(n: int) -> bytes:
    """A raw deflate stream of ``n`` zero bytes, made in milliseconds.

    A full flush resets the compressor's history, so every 1 MiB block of
    zeros compresses to the same ~1 kB: the stream is one block repeated.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(n, _BLOCK)
    return block * whole + (c.compress(bytes(rest)) if rest else b"") + c.flush()


def _zip(members: list[tuple[str, bytes, bytes, int, int]]) -> bytes:
    """A zip archive of (name, prefix, raw deflate data, uncompressed size, crc32) members, written by hand
    so that the deflate stream can be one made by :func:`_zero_deflate` (sizes below 4 GiB: no zip64)."""
    out, central = io.BytesIO(), []
    for name, _, data, size, crc in members:
        offset = out.tell()
        fname = name.encode()
        out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(fname), 0))
        out.write(fname + data)
        central.append(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                                   len(fname), 0, 0, 0, 0, 0o644 << 16, offset) + fname)
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), start, 0))
    return out.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _member(name: str, payload_prefix: bytes, zeros: int) -> tuple[str, bytes, bytes, int, int]:
    """A member holding ``payload_prefix`` then ``zeros`` zero bytes, deflated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(payload_prefix) + c.flush(zlib.Z_FULL_FLUSH)
    body = _zero_deflate(zeros)
    crc = zlib.crc32(payload_prefix)
    zero_block = bytes(_BLOCK)
    for _ in range(zeros // _BLOCK):
        crc = zlib.crc32(zero_block, crc)
    crc = zlib.crc32(bytes(zeros % _BLOCK), crc)
    return name, payload_prefix, head + body, len(payload_prefix) + zeros, crc


def zero_npz(shape: tuple[int, ...] = (256, 512, 512, 3), dtype: str = "<f8") -> bytes:
    """A valid ``.npz``: X of zeros of ``shape`` and ``dtype`` (deflated to ~1 kB per MiB), y of zeros.

    The default is the issue's bomb: 1.6 MB that ``np.load`` turns into 1.6 GB of float64.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    y = io.BytesIO()
    np.save(y, np.zeros(shape[0], np.int64))
    return _zip([_member("X.npy", _npy_header(shape, dtype), nbytes),
                 _member("y.npy", y.getvalue(), 0)])


def npz_with_extra_data(shape: tuple[int, ...] = (1, 8, 8, 3), extra: int = 64 << 20) -> bytes:
    """An ``.npz`` whose X member holds ``extra`` bytes more than its ``.npy`` header says."""
    nbytes = int(np.prod(shape))
    y = io.BytesIO()
    np.save(y, np.zeros(shape[0], np.int64))
    return _zip([_member("X.npy", _npy_header(shape, "|u1"), nbytes + extra), _member("y.npy", y.getvalue(), 0)])


def parquet_rows_bomb(path: str | os.PathLike, rows: int = 20_000_000, group: int = 1_000_000) -> Path:
    """A Parquet file of ``rows`` rows (key, target, prediction: all the same) in a few hundred kB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = min(rows, group)
    table = pa.table({
        "key": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["a.jpg"])),
        "target": pa.array(np.zeros(n, np.int64)),
        "prediction": pa.array(np.zeros(n, np.int64)),
    })
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        left = rows
        while left > 0:
            writer.write_table(table.slice(0, min(left, n)))
            left -= n
    return Path(path)


def fifo_dataset(root: Path, good: list[bytes]) -> Path:
    """An ImageFolder tree: the JPEGs ``good`` in n07920052/ and a named pipe ``n07920052/x.jpg`` beside them."""
    folder = root / "n07920052"
    folder.mkdir(parents=True)
    for i, data in enumerate(good):
        (folder / f"good_{i}.jpg").write_bytes(data)
    os.mkfifo(folder / "x.jpg")
    return root


def symlink_loops(root: Path, images: dict[str, bytes], loops: int = 2, up: bool = True) -> Path:
    """A tree of ``images`` (relative path -> bytes) with ``loops`` links to the root itself (``loop0`` ...)
    and, if ``up``, one to its parent from inside the first class folder: a walk that follows links
    naively lists every image many times (one link) or never ends (two)."""
    for rel, data in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for i in range(loops):
        os.symlink(".", root / f"loop{i}")
    first = sorted({Path(rel).parent for rel in images if Path(rel).parent != Path(".")})
    if up and first:
        os.symlink("..", root / first[0] / "up")
    return root


def peak_rss_mb(code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter; its peak RSS (VmHWM, MB), its RSS just before ``code`` ran
    (after the imports it does first: put them in a line ``# --- start`` above which they sit), and what
    ``code`` printed last (a JSON line, or the error)."""
    setup, _, body = code.partition("# --- start\n")
    script = (
        f"{setup}\n"
        "import json as _json\n"
        "def _vm(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key):\n"
        "            return int(line.split()[1]) / 1024\n"
        "_base = _vm('VmRSS')\n"
        "_out = None\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in (body or "pass").splitlines())
        + "except Exception as _exc:\n"
        "    _out = f'{type(_exc).__name__}: {_exc}'\n"
        "print(_json.dumps({'baseline_mb': _base, 'peak_mb': _vm('VmHWM'), 'out': _out}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"the measurement failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def written_zip_member_sizes(data: bytes) -> dict[str, int]:
    """What each member of a zip claims to hold, uncompressed (for the tests' own sanity checks)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: i.file_size for i in zf.infolist()}


def parquet_typed_columns(path: str | os.PathLike, arrow_type, columns: int, rows: int = 200_000,
                          group: int = 50_000) -> Path:
    """A Parquet results part (key, target, prediction) plus ``columns`` columns of ``arrow_type``, all zeros.

    Small on disk (a run of zeros compresses to almost nothing) and within every footer limit, but
    decimals, dates, times and zoned timestamps become one Python object per cell in pandas: the issue's
    200,000 rows x 75 ``decimal128`` columns (418 kB) took the server from 1.1 to 8.2 GB.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = min(rows, group)
    zeros = pa.array(np.zeros(n, np.int64))
    try:
        zeros = zeros.cast(arrow_type)
    except pa.ArrowNotImplementedError:  # date32, time32: from 32-bit integers only
        zeros = zeros.cast(pa.int32()).cast(arrow_type)
    table = pa.table({"key": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["a.jpg"])),
                      "target": pa.array(np.zeros(n, np.int64)), "prediction": pa.array(np.zeros(n, np.int64)),
                      **{f"c{i}": zeros for i in range(columns)}})
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        left = rows
        while left > 0:
            writer.write_table(table.slice(0, min(left, n)))
            left -= n
    return Path(path)


def parquet_python_strings(path: str | os.PathLike, columns: int = 150, rows: int = 200_000) -> Path:
    """A Parquet results part whose string columns (one two-letter string, dictionary-encoded) carry pandas
    metadata saying ``"numpy_type": "string[python]"``: pandas then makes every cell a Python ``str``.

    150 kB on disk, within every footer limit; it took 2.5 GB to read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array(["ab"])).cast(pa.string())
    classes = pa.array(np.zeros(rows, np.int64))
    table = pa.table({"key": text, "target": classes, "prediction": classes,
                      **{f"s{i}": text for i in range(columns)}})
    meta = {"index_columns": [], "column_indexes": [], "columns": [
        {"name": c, "field_name": c, "pandas_type": "int64" if c in ("target", "prediction") else "unicode",
         "numpy_type": "int64" if c in ("target", "prediction") else "string[python]", "metadata": None}
        for c in table.column_names]}
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), path, compression="zstd")
    return Path(path)
