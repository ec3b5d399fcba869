"""cs231n-style image files: ``imagenet_val_25.npz`` with arrays X, y (and label_map), read safely.

The cs231n file stores ``label_map`` as a pickled dict. Unpickling an upload
would run arbitrary code on the server, so it is never loaded: class names
come from the model's own category list instead.

A small archive can hold a huge array (1.6 MB of deflated zeros is 1.6 GB
of float64), so nothing is decompressed before it is known to fit: the
archive's directory is checked first, then each ``.npy`` header (dtype and
shape) and each member's declared size, against a budget of bytes decoded
(:data:`MAX_DECODED_BYTES`). X is then read in chunks of
:data:`CHUNK_BYTES` and turned into uint8 pixels chunk by chunk, so no
float64 copy of the whole array is ever made.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from saliency_core.errors import InvalidImageError

MAX_IMAGES = 256
MAX_ELEMENTS = 256 * 512 * 512 * 3  # about 200 MB of uint8 pixels
MAX_DECODED_BYTES = 256 * 2**20  # X and y together, as stored in the archive (float64 X: 8 bytes an element)
MAX_MEMBERS = 64  # entries in the archive's directory (X, y, label_map, ...)
_MAX_DIRECTORY_BYTES = 1 << 20
CHUNK_BYTES = 4 * 2**20  # read and converted at a time

_HELP = ("Expected a cs231n-style .npz with X: (N, H, W, 3) uint8 images (or floats in 0..1 or 0..255) "
         "and y: (N,) ImageNet class indices 0..999, N <= 256.")


@dataclass(frozen=True)
class LabelledImage:
    """One image of a batch with its true ImageNet label."""

    index: int
    image: Image.Image
    label: int


@dataclass(frozen=True)
class _Member:
    """One ``.npy`` member, known from its header: where its data starts and how it is laid out."""

    name: str
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # bytes of magic and header before the data

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _check_directory(source: BinaryIO) -> None:
    """Refuse an archive whose directory lists too many members, before zipfile builds an object for each."""
    source.seek(0, io.SEEK_END)
    size = source.tell()
    source.seek(max(0, size - 22 - 65535))
    tail = source.read()
    source.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # not a zip: zipfile says so
    entries, directory = struct.unpack("<2xHI", tail[at + 8 : at + 16])
    if entries > MAX_MEMBERS or directory > _MAX_DIRECTORY_BYTES:
        raise InvalidImageError(f"The .npz lists {entries} members in a directory of {directory:,} bytes; "
                                f"at most {MAX_MEMBERS} are read. {_HELP}")


def _member(zf: zipfile.ZipFile, name: str) -> _Member:
    # Read only the .npy header: a small compressed upload may claim a huge
    # array, and np.load would allocate it before we could look.
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        return _Member(name, tuple(shape), bool(fortran), dtype, f.tell())


def _check_size(zf: zipfile.ZipFile, m: _Member) -> None:
    """The member's size in the archive's directory (which bounds what zipfile decompresses) must be what
    its header describes: no hidden data after the array, no array cut short."""
    declared = zf.getinfo(m.name).file_size
    if declared > m.offset + m.nbytes:
        raise InvalidImageError(f"{m.name} holds {declared - m.offset - m.nbytes:,} bytes more than its header "
                                f"describes ({m.shape} {m.dtype}). {_HELP}")
    if declared < m.offset + m.nbytes:
        raise InvalidImageError(f"{m.name} is truncated: its header describes {m.nbytes:,} bytes of data, it "
                                f"holds {declared - m.offset:,}. The .npz is corrupt. {_HELP}")


def _chunks(zf: zipfile.ZipFile, m: _Member) -> Iterator[np.ndarray]:
    """The member's elements in order of storage, a chunk of at most :data:`CHUNK_BYTES` at a time."""
    item = m.dtype.itemsize
    step = max(1, CHUNK_BYTES // item) * item
    with zf.open(m.name) as f:
        f.read(m.offset)
        left = m.nbytes
        while left:
            want = min(step, left)
            buf = f.read(want)
            if len(buf) != want:
                raise EOFError(f"{m.name} ended {left - len(buf):,} bytes early")
            left -= want
            yield np.frombuffer(buf, dtype=m.dtype)
        if f.read(1):  # also makes zipfile check the CRC of the whole member
            raise ValueError(f"{m.name} holds more data than its header describes")


def _to_float64(chunk: np.ndarray) -> np.ndarray:
    return np.nan_to_num(chunk.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)


def _pixels(zf: zipfile.ZipFile, m: _Member) -> np.ndarray:
    """X as (N, H, W, 3) uint8, converted chunk by chunk.

    Floats: NaN becomes 0 and infinities 255 / 0; all values are scaled by
    255 when none exceeds 1 (a first pass finds the maximum), then rounded.
    Integers are clipped to 0..255.
    """
    out = np.empty(m.shape, dtype=np.uint8, order="F" if m.fortran else "C")
    flat = out.reshape(-1, order="F" if m.fortran else "C")  # a view: storage order
    scale = None
    if m.dtype.kind == "f":
        peak = max((float(_to_float64(c).max()) for c in _chunks(zf, m)), default=0.0)
        scale = 255.0 if peak <= 1.0 else 1.0
    pos = 0
    for c in _chunks(zf, m):
        if scale is not None:
            c = np.clip(_to_float64(c) * scale, 0, 255).round()
        elif not (m.dtype.kind == "u" and m.dtype.itemsize == 1):
            c = np.clip(c.astype(np.int64) if m.dtype.kind == "i" else np.minimum(c, 255), 0, 255)
        flat[pos : pos + c.size] = c
        pos += c.size
    return np.ascontiguousarray(out)


def load_npz_batch(data: bytes | bytearray | memoryview | BinaryIO) -> list[LabelledImage]:
    """Parse a cs231n ``.npz`` (its bytes, or a binary file open for reading) into RGB images with labels.

    At most :data:`MAX_DECODED_BYTES` of X and y are decompressed, checked
    from the archive before any is; peak memory is about the uint8 pixels
    twice (the array and the images) plus a chunk.

    Raises
    ------
    InvalidImageError : not an npz, arrays missing or of the wrong shape,
        too large, members whose size disagrees with their header, labels
        out of range, or object (pickled) arrays.
    """
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        _check_directory(source)
        zf = zipfile.ZipFile(source)
        names = set(zf.namelist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidImageError(f"This is not an .npz archive. {_HELP}") from exc
    with zf:
        for key in ("X", "y"):
            if f"{key}.npy" not in names:
                raise InvalidImageError(f"The .npz has no array {key!r}. {_HELP}")
        try:
            x, y = _member(zf, "X.npy"), _member(zf, "y.npy")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, InvalidImageError):
                raise
            raise InvalidImageError(f"The .npz is corrupt ({exc}). {_HELP}") from exc
        if len(x.shape) != 4 or x.shape[3] != 3 or x.dtype.kind not in "uif":
            raise InvalidImageError(f"X has shape {x.shape} and dtype {x.dtype}. {_HELP}")
        if not 1 <= x.shape[0] <= MAX_IMAGES or int(np.prod(x.shape)) > MAX_ELEMENTS or min(x.shape[1:3]) < 1:
            raise InvalidImageError(f"X holds {x.shape[0]} images of {x.shape[1]}x{x.shape[2]}: too many or too "
                                    f"large. {_HELP}")
        if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
            raise InvalidImageError(f"y has shape {y.shape} and dtype {y.dtype}; it must be ({x.shape[0]},) "
                                    f"integers. {_HELP}")
        if x.nbytes + y.nbytes > MAX_DECODED_BYTES:
            raise InvalidImageError(f"X is {x.nbytes / 2**20:,.0f} MB once decompressed ({x.shape} {x.dtype}); "
                                    f"the limit is {MAX_DECODED_BYTES / 2**20:.0f} MB. {_HELP}")
        _check_size(zf, x)
        _check_size(zf, y)
        try:
            labels = np.concatenate(list(_chunks(zf, y)))
            if labels.min() < 0 or labels.max() > 999:
                raise InvalidImageError(f"y holds labels outside 0..999 ({int(labels.min())}..{int(labels.max())})."
                                        f" {_HELP}")
            X = _pixels(zf, x)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, InvalidImageError):
                raise
            raise InvalidImageError(f"The .npz could not be read ({exc}). {_HELP}") from exc
    return [LabelledImage(i, Image.fromarray(X[i], "RGB"), int(labels[i])) for i in range(X.shape[0])]
