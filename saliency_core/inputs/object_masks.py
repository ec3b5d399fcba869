"""Object masks for the localisation metrics, in the model's pixels: boxes or mask images given in an image's
own pixels, carried through the same resize and centre crop as the image (:func:`~saliency_core.inputs.
preprocessing.crop_image`).

A pixel of the (crop, crop) grid belongs to the object when the point of the original image under its centre
does: crop pixel (r, c) sits over the original point ``((c + left + 0.5) · w / new_w, (r + top + 0.5) · h /
new_h)``, with ``new_w``, ``new_h``, ``left``, ``top`` the resize and crop of :func:`crop_image`. A box
``(x0, y0, x1, y1)`` covers ``x0 <= x < x1`` and ``y0 <= y < y1`` (Pillow's box: pixel edges, the right and
bottom one excluded); a mask image's pixel (i, j) covers ``[j, j + 1) × [i, i + 1)``. So a box and the mask
image that paints it give the same crop.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from saliency_core.errors import InvalidImageError
from saliency_core.inputs.images import DEFAULT_MAX_PIXELS
from saliency_core.inputs.preprocessing import Preprocessing

Box = tuple[float, float, float, float]


def pixel_centres(width: int, height: int, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """((crop,) x, (crop,) y) float64: the original image's coordinates under each crop column's and row's centre."""
    scale = prep.resize / min(width, height)
    new_w = max(prep.crop, round(width * scale))
    new_h = max(prep.crop, round(height * scale))
    left, top = (new_w - prep.crop) // 2, (new_h - prep.crop) // 2
    k = np.arange(prep.crop, dtype=np.float64) + 0.5
    return (k + left) * width / new_w, (k + top) * height / new_h


def box_mask(boxes: Sequence[Box], width: int, height: int, prep: Preprocessing) -> np.ndarray:
    """(crop, crop) bool: the union of ``boxes`` (original pixels) on the model's crop of a width × height image."""
    xs, ys = pixel_centres(width, height, prep)
    out = np.zeros((prep.crop, prep.crop), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        out |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return out


def crop_mask(mask: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(height, width) bool mask of the original image -> (crop, crop) bool on the model's crop."""
    height, width = mask.shape
    xs, ys = pixel_centres(width, height, prep)
    cols = np.clip(np.floor(xs).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(ys).astype(np.int64), 0, height - 1)
    return mask[rows[:, None], cols[None, :]]


def read_mask_png(data: bytes, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The object mask in a PNG's bytes: (height, width) bool, True where any colour channel is non-zero
    (alpha ignored; a palette image by its index).

    Raises InvalidImageError when the bytes are no PNG, the size is not the image's (width × height, as the job
    records it, after EXIF orientation) or above ``max_pixels``, or the pixels can't be decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=["PNG"])
            if im.width * im.height > max_pixels:
                raise InvalidImageError(f"the mask has {im.width} x {im.height} pixels, more than {max_pixels:,}")
            if im.size != (width, height):
                raise InvalidImageError(f"the mask is {im.width} x {im.height} pixels, the image {width} x {height}")
            im.load()
    except InvalidImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"the mask is not a readable PNG ({exc})") from exc
    bands = im.getbands()
    colour = len(bands) - 1 if bands[-1] == "A" and len(bands) > 1 else len(bands)
    a = np.asarray(im)
    if a.ndim == 3:
        return (a[..., :colour] != 0).any(axis=-1)
    return a != 0
