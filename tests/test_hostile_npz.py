"""Hostile .npz files: a decompression bomb, members that lie about their size, floats read in chunks.

Each bomb is built by :mod:`tests.hostile` (nothing binary is committed) and
loaded in a fresh interpreter whose peak resident memory is measured, so a
reader that expands the file shows up as a failure, not as a slow suite.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from saliency_core.errors import InvalidImageError
from saliency_core.inputs import npz
from saliency_core.inputs.npz import load_npz_batch
from tests import hostile

# What loading a refused bomb may cost above the interpreter's own memory: far below the gigabytes an
# expanded one takes, with room for the zip reader's buffers.
PEAK_BOUND_MB = 600


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def legacy_uint8(X: np.ndarray) -> np.ndarray:
    """How X became pixels before the chunked reader: the rule the reader must keep."""
    if X.dtype.kind == "f":
        X = np.nan_to_num(X.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        X = X * 255.0 if X.max() <= 1.0 else X
    return np.clip(X, 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- npz


def test_npz_bomb_is_refused_from_its_header_without_expanding_it(tmp_path: Path):
    """1.6 MB on disk, 1.6 GB of float64 zeros inside: refused before a byte of X is decompressed."""
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(hostile.zero_npz())
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(InvalidImageError, match="MB"):
        load_npz_batch(bomb.read_bytes())
    measured = hostile.peak_rss_mb(
        "from saliency_core.inputs.npz import load_npz_batch\n"
        f"data = open({str(bomb)!r}, 'rb').read()\n"
        "# --- start\n"
        "_out = len(load_npz_batch(data))\n")
    assert "InvalidImageError" in str(measured["out"]), measured
    assert measured["peak_mb"] - measured["baseline_mb"] < PEAK_BOUND_MB, measured


def test_npz_byte_budget_counts_bytes_not_elements():
    # 80 M float32 elements: under MAX_ELEMENTS, yet 320 MB decoded.
    shape = (100, 512, 520, 3)
    assert np.prod(shape) <= npz.MAX_ELEMENTS
    with pytest.raises(InvalidImageError, match="MB"):
        load_npz_batch(hostile.zero_npz(shape, "<f4"))


def test_npz_member_holding_more_than_its_header_says_is_refused():
    with pytest.raises(InvalidImageError, match="more"):
        load_npz_batch(hostile.npz_with_extra_data(extra=64 << 20))


def test_npz_member_holding_less_than_its_header_says_is_refused():
    X = io.BytesIO()
    np.lib.format.write_array_header_1_0(X, {"descr": "|u1", "fortran_order": False, "shape": (1, 8, 8, 3)})
    X.write(bytes(100))  # 192 promised
    y = io.BytesIO()
    np.save(y, np.array([1]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("X.npy", X.getvalue())
        zf.writestr("y.npy", y.getvalue())
    with pytest.raises(InvalidImageError, match="npz"):
        load_npz_batch(buf.getvalue())


def test_float_npz_within_the_budget_loads_in_chunks_without_float64_copies(tmp_path: Path):
    """77 MB of float64 pixels: the old reader made four float64 copies (over 300 MB); chunks need little."""
    shape = (64, 224, 224, 3)
    path = tmp_path / "floats.npz"
    path.write_bytes(hostile.zero_npz(shape, "<f8"))
    decoded_mb = np.prod(shape) * 8 / 2**20
    measured = hostile.peak_rss_mb(
        "from saliency_core.inputs.npz import load_npz_batch\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "# --- start\n"
        "_out = len(load_npz_batch(data))\n")
    assert measured["out"] == 64, measured
    assert measured["peak_mb"] - measured["baseline_mb"] < decoded_mb, measured


@pytest.mark.parametrize("case", ["unit_floats", "wide_floats", "nan_inf", "big_endian", "fortran", "int16",
                                  "uint8"])
def test_chunked_conversion_equals_the_whole_array_rule(case: str, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(3)
    shape = (5, 17, 23, 3)
    X = {
        "unit_floats": lambda: rng.random(shape, dtype=np.float64),
        "wide_floats": lambda: rng.normal(120, 90, shape).astype(np.float32),
        "nan_inf": lambda: np.where(rng.random(shape) < 0.1, np.nan,
                                    np.where(rng.random(shape) < 0.1, np.inf, rng.random(shape))),
        "big_endian": lambda: rng.random(shape).astype(">f4"),
        "fortran": lambda: np.asfortranarray(rng.integers(0, 256, shape, dtype=np.uint8)),
        "int16": lambda: rng.integers(-300, 600, shape).astype(np.int16),
        "uint8": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
    }[case]()
    monkeypatch.setattr(npz, "CHUNK_BYTES", 4096, raising=False)  # many chunks, some ending inside a pixel
    batch = load_npz_batch(npz_bytes(X=X, y=np.arange(5)))
    got = np.stack([np.asarray(b.image) for b in batch])
    np.testing.assert_array_equal(got, legacy_uint8(np.ascontiguousarray(X)))


def test_npz_is_read_from_an_open_file_too(tmp_path: Path):
    X = np.random.default_rng(0).integers(0, 256, (2, 9, 9, 3), dtype=np.uint8)
    path = tmp_path / "a.npz"
    np.savez(path, X=X, y=np.array([3, 4]))
    with open(path, "rb") as fh:
        batch = load_npz_batch(fh)
    assert [b.label for b in batch] == [3, 4]
    np.testing.assert_array_equal(np.asarray(batch[1].image), X[1])
