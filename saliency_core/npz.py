"""cs231n-style image files: ``imagenet_val_25.npz`` with arrays X, y (and label_map), read safely.

The cs231n file stores ``label_map`` as a pickled dict. Unpickling an upload
would run arbitrary code on the server, so it is never loaded: class names
come from the model's own category list instead.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from saliency_core.errors import InvalidImageError

MAX_IMAGES = 256
MAX_ELEMENTS = 256 * 512 * 512 * 3  # about 200 MB of uint8 pixels

_HELP = ("Expected a cs231n-style .npz with X: (N, H, W, 3) uint8 images (or floats in 0..1 or 0..255) "
         "and y: (N,) ImageNet class indices 0..999, N <= 256.")


@dataclass(frozen=True)
class LabelledImage:
    """One image of a batch with its true ImageNet label."""

    index: int
    image: Image.Image
    label: int


def _header(zf: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    # Read only the .npy header: a small compressed upload may claim a huge
    # array, and np.load would allocate it before we could look.
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype


def load_npz_batch(data: bytes) -> list[LabelledImage]:
    """Parse a cs231n ``.npz`` upload into RGB images with their labels.

    Raises
    ------
    InvalidImageError : not an npz, arrays missing or of the wrong shape,
        too large, labels out of range, or object (pickled) arrays.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
        names = set(zf.namelist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InvalidImageError(f"This is not an .npz archive. {_HELP}") from exc
    with zf:
        for key in ("X", "y"):
            if f"{key}.npy" not in names:
                raise InvalidImageError(f"The .npz has no array {key!r}. {_HELP}")
        try:
            x_shape, x_dtype = _header(zf, "X.npy")
            y_shape, y_dtype = _header(zf, "y.npy")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InvalidImageError(f"The .npz is corrupt ({exc}). {_HELP}") from exc
        if len(x_shape) != 4 or x_shape[3] != 3 or x_dtype.kind not in "uif":
            raise InvalidImageError(f"X has shape {x_shape} and dtype {x_dtype}. {_HELP}")
        if not 1 <= x_shape[0] <= MAX_IMAGES or int(np.prod(x_shape)) > MAX_ELEMENTS or min(x_shape[1:3]) < 1:
            raise InvalidImageError(f"X holds {x_shape[0]} images of {x_shape[1]}x{x_shape[2]}: too many or too large. "
                                    f"{_HELP}")
        if y_shape != (x_shape[0],) or y_dtype.kind not in "iu":
            raise InvalidImageError(f"y has shape {y_shape} and dtype {y_dtype}; it must be ({x_shape[0]},) integers. "
                                    f"{_HELP}")
        try:
            with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
                X = npz["X"]
                y = npz["y"]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InvalidImageError(f"The .npz could not be read ({exc}). {_HELP}") from exc
    if y.min() < 0 or y.max() > 999:
        raise InvalidImageError(f"y holds labels outside 0..999 ({int(y.min())}..{int(y.max())}). {_HELP}")
    if X.dtype.kind == "f":
        X = np.nan_to_num(X.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        X = X * 255.0 if X.max() <= 1.0 else X
    X = np.clip(X, 0, 255).round().astype(np.uint8)
    return [LabelledImage(i, Image.fromarray(X[i], "RGB"), int(y[i])) for i in range(X.shape[0])]
