"""Where the object is, as a person gives it: a box on the crop, or a mask image the crop's size.

The localisation metrics (pointing game, relevance mass and rank accuracy,
:mod:`saliency_core.evaluation.metrics`) compare a map with an object mask (H, W) bool. This module turns a
box (``x0, y0, x1, y1`` in crop pixels, x1 and y1 exclusive) or an uploaded PNG (non-zero = object) into
that mask, or raises :class:`~saliency_core.errors.InvalidInputError` /
:class:`~saliency_core.errors.InvalidImageError` with a message a person can act on.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from saliency_core.errors import InvalidImageError, InvalidInputError

Box = tuple[int, int, int, int]
MAX_MASK_BYTES = 8 * 1024 * 1024


def check_box(box: Sequence[int], shape: tuple[int, int]) -> Box:
    """``(x0, y0, x1, y1)`` integers with 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H, for a crop ``shape`` (H, W)."""
    h, w = shape
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
        if any(int(v) != v for v in box):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInputError(f"a box is four whole numbers x0, y0, x1, y1, got {box!r}") from None
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InvalidInputError(f"the box {x0},{y0},{x1},{y1} must lie within the {w} × {h} crop and not be empty "
                                "(0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)")
    return x0, y0, x1, y1


def parse_box(text: str, shape: tuple[int, int]) -> Box:
    """``"x0,y0,x1,y1"`` (a link's ``box=``) -> a checked box (:func:`check_box`)."""
    parts = str(text).split(",")
    if len(parts) != 4:
        raise InvalidInputError(f"a box is four whole numbers x0,y0,x1,y1, got {text!r}")
    try:
        numbers = [int(p.strip()) for p in parts]
    except ValueError:
        raise InvalidInputError(f"a box is four whole numbers x0,y0,x1,y1, got {text!r}") from None
    return check_box(numbers, shape)


def box_text(box: Box) -> str:
    return ",".join(str(int(v)) for v in box)


def box_from_ranges(x: Sequence[float], y: Sequence[float], shape: tuple[int, int]) -> Box | None:
    """The pixels whose centres lie in a dragged rectangle (x and y ranges in plot coordinates, where pixel
    (r, c) is centred on x = c, y = r), clipped to the crop; None when it holds no pixel centre."""
    h, w = shape
    xs, ys = sorted(float(v) for v in x), sorted(float(v) for v in y)
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        return None
    x0, x1 = max(0, math.ceil(xs[0])), min(w, math.floor(xs[-1]) + 1)
    y0, y1 = max(0, math.ceil(ys[0])), min(h, math.floor(ys[-1]) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def box_mask(box: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: True inside the box (:func:`check_box`)."""
    x0, y0, x1, y1 = check_box(box, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def mask_from_png(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """An uploaded mask -> (H, W) bool, True where any colour channel is non-zero (alpha is ignored).

    data : the file's bytes, a PNG of exactly the crop's size ``shape`` (H, W)
    Raises InvalidImageError for a file that is not a PNG, InvalidInputError for a wrong size or an empty mask.
    """
    h, w = shape
    if len(data) > MAX_MASK_BYTES:
        raise InvalidImageError(f"The mask file is {len(data) / 1e6:.1f} MB; a {w} × {h} mask is far smaller "
                                f"(at most {MAX_MASK_BYTES // 2**20} MB).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["PNG"])
            if img.size != (w, h):
                raise InvalidInputError(f"The mask is {img.size[0]} × {img.size[1]} pixels; it must be the crop's "
                                        f"size, {w} × {h} (the image the model sees).")
            img.load()
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning, SyntaxError):
        raise InvalidImageError("The mask is not a readable PNG image. Upload a PNG the crop's size, "
                                f"{w} × {h}, with non-zero pixels on the object.") from None
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    arr = np.asarray(img)
    if img.mode.endswith("A"):
        arr = arr[..., :-1]
    mask = arr != 0 if arr.ndim == 2 else (arr != 0).any(axis=-1)
    if not mask.any():
        raise InvalidInputError("The mask is empty: every pixel is zero. Mark the object with non-zero pixels.")
    return mask
