"""Turn whatever a person uploads into an RGB picture, or say clearly why not.

Everything that reaches the models goes through :func:`load_image`, so this is
the one place that has to cope with odd files: empty uploads, web pages saved
as ``.jpg``, truncated downloads, 16-bit scientific TIFFs, CMYK print JPEGs,
transparent PNGs, animated GIFs, phone photos stored sideways, and files built
to exhaust memory. Each of those either becomes a fully loaded ``mode="RGB"``
:class:`PIL.Image.Image` or raises :class:`~saliency_core.errors.InvalidImageError`
with a message a person can act on. No other exception escapes.

Reading bytes and diagnosing non-images live in :mod:`saliency_core.inputs.image_bytes`;
the bundled sample photographs in :mod:`saliency_core.inputs.samples`.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from saliency_core.errors import InvalidImageError
from saliency_core.inputs.image_bytes import (
    ACCEPTED_FORMATS_TEXT,
    describe_unreadable,
    read_source,
    too_big,
)
from saliency_core.inputs.image_bytes import invalid_image as _invalid

__all__ = [
    "ACCEPTED_FORMATS_TEXT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "encode_png",
    "image_sha256",
    "load_image",
    "pixels_sha256",
]

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


# Only these Pillow decoders are ever run. Pillow ships dozens of plugins, some
# of them rarely exercised (and historically the source of security bugs); a
# saliency dashboard needs none of them.
_OPEN_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# What an opened image's .format may say. MPO is what Pillow calls JPEGs from
# some cameras that embed a second (preview or stereo) frame. It is not in
# _OPEN_FORMATS because Pillow registers no opener for it (the JPEG opener
# returns MPO images itself), and naming it in Image.open(formats=...) raises
# KeyError: 'MPO'.
_ALLOWED_FORMATS = frozenset({*_OPEN_FORMATS, "MPO"})

# Modes whose values are not 0..255 and need rescaling over their real range.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})

_WHITE = (255, 255, 255, 255)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise _invalid(
            f"The image is {width} x {height} pixels "
            f"({width * height / 1e6:.1f} megapixels), more than the "
            f"{max_pixels / 1e6:g} megapixel limit. Please use a smaller image."
        )


def _decode(data: bytes, max_pixels: int, notes: list[str] | None = None) -> Image.Image:
    """Open ``data`` with the allowed decoders and return a loaded RGB image (``notes``: see :func:`load_image`)."""
    # Pillow signals suspected decompression bombs with a warning (and an
    # error past twice the limit); turn the warning into an exception here
    # only, so neither the global warning filters nor Image.MAX_IMAGE_PIXELS
    # change for the rest of the process.
    with warnings.catch_warnings():
        # Pillow's UserWarnings ("Corrupt EXIF data", "Tag data larger than
        # file", ...) concern metadata it already skipped; the pixels are fine
        # or the decode fails below. Keep them out of the server log.
        warnings.simplefilter("ignore", UserWarning)
        # Added last, so it takes precedence over the line above.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as img:
                if img.format not in _ALLOWED_FORMATS:
                    # Defensive: an opener may hand back an image of another
                    # format (the JPEG one returns MPO, which is fine).
                    raise _invalid(f"The file is a {img.format} image, which is not supported.")
                # Image.open only parsed the header: the size is known but no
                # pixel memory exists yet. Refuse oversized images now,
                # before .load() would allocate width*height*channels bytes.
                _check_pixels(img.size, max_pixels)
                # Animated GIF/WebP/APNG and multi-page TIFF: the first frame.
                img.seek(0)
                img.load()
                upright = _exif_upright(img)
                if notes is not None and (share := _transparent_share(upright)) > 0:
                    notes.append(transparency_note(share))
                # convert() always returns a new image, so the result is
                # detached from the BytesIO that the `with` closes.
                rgb = _to_rgb(upright)
        except InvalidImageError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise _invalid(
                "The image is too large to open safely (its header declares an enormous number of pixels)."
            ) from exc
        except UnidentifiedImageError as exc:
            raise _invalid(describe_unreadable(data)) from exc
        except MemoryError as exc:
            raise _invalid("The image needs more memory to decode than is available.") from exc
        except Exception as exc:
            # Pillow reports damaged data with many types: OSError ("image
            # file is truncated"), SyntaxError (bad PNG chunks), EOFError,
            # ValueError, struct.error, zlib.error, IndexError... All mean
            # the same thing to the person uploading the file.
            raise _invalid(
                f"The file is truncated or corrupt and could not be decoded ({type(exc).__name__}: {exc})."
            ) from exc
    # The source's metadata no longer describes these pixels (an ICC profile
    # for CMYK, EXIF for the old orientation, GIF palette details): drop it.
    rgb.info.clear()
    return rgb


def _exif_upright(img: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag; the image as is if unusable."""
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:
        # Broken EXIF blocks are common in photos edited by odd software;
        # an un-rotated picture is far better than refusing it.
        return img
    return img if upright is None else upright


def _transparent_share(img: Image.Image) -> float:
    """The share of ``img``'s pixels that are not fully opaque (what :func:`_to_rgb` composites onto white);
    0 for an image without transparency."""
    if img.mode in _HIGH_DEPTH_MODES:
        return 0.0
    if "A" in img.getbands():  # RGBA, LA, PA and the premultiplied RGBa, La: the alpha band as it is
        alpha = img.getchannel("A")
    elif "transparency" in img.info:  # a palette entry or a colour made transparent (tRNS, a GIF's index)
        alpha = img.convert("RGBA").getchannel("A")
    else:
        return 0.0
    opaque = alpha.histogram()[255]
    return 1.0 - opaque / (img.width * img.height)


def transparency_note(share: float) -> str:
    """What :func:`load_image` says about an image whose pixels are ``share`` (0..1) transparent, in words."""
    amount = f"{share:.0%}" if share >= 0.01 else "under 1 %"
    return (f"Transparent pixels ({amount} of the image) were filled with white: the model sees white there, "
            "whatever background a viewer shows.")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any Pillow mode to a new ``RGB`` image.

    Parameters
    ----------
    img : PIL.Image.Image
        Loaded image, any mode, size ``(W, H)``.

    Returns
    -------
    PIL.Image.Image
        New ``RGB`` image of size ``(W, H)``. Transparent areas become white;
        16-bit / 32-bit / float data is stretched over its own min..max range.
    """
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(img)
    if mode == "La":
        # Pillow cannot go from premultiplied La straight to RGBA.
        img = img.convert("LA")
        mode = "LA"
    has_alpha = mode in {"LA", "PA", "RGBA", "RGBa", "P"} or "A" in img.getbands() or "transparency" in img.info
    if has_alpha:
        # Composite onto white: pixels that are fully transparent often hold
        # arbitrary (e.g. black or red) colours that no viewer ever shows.
        # P images always go this way because palette entries can be
        # transparent through a tRNS chunk or a GIF transparency index.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    # Pillow's converters handle 1, L, CMYK (incl. Adobe-inverted JPEGs, which
    # the JPEG decoder already un-inverts), YCbCr, LAB, HSV and RGBX.
    return img.convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Stretch a single-channel I/I;16*/F image to 8-bit grey, then RGB.

    Pillow's own ``convert("L")`` clips these at 255, which turns a typical
    12- or 16-bit scan into a white rectangle, and float images in 0..1 into
    black. Using the image's own range keeps its contrast.
    """
    # float32 keeps a 40-megapixel image at 160 MB per copy; its 24-bit
    # mantissa is far finer than the 8-bit output needs.
    values = np.asarray(img).astype(np.float32)  # (H, W)
    finite = np.isfinite(values)
    if finite.any():
        lo = float(values[finite].min())
        hi = float(values[finite].max())
    else:
        lo = hi = float("nan")
    if not np.isfinite(lo):
        # Nothing usable at all: a flat mid-grey shows "no content" honestly.
        grey = np.full(values.shape, 128, dtype=np.uint8)
    else:
        # NaN and -inf go to the darkest value, +inf to the brightest.
        np.nan_to_num(values, copy=False, nan=lo, posinf=hi, neginf=lo)
        if hi > lo:
            # In place, to avoid more full-size temporaries.
            values -= np.float32(lo)
            values *= np.float32(255.0 / (hi - lo))
        else:
            values.fill(_constant_level(lo, img.mode))
        np.rint(values, out=values)
        grey = np.clip(values, 0, 255, out=values).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _constant_level(value: float, mode: str) -> float:
    """Brightness (0..255) for an image whose every pixel equals ``value``.

    With no range to stretch, interpret the value in its type's usual scale:
    floats in 0..1 as fractions, 16-bit values out of 65535, and anything else
    as an 8-bit level (clipped).
    """
    if mode == "F" and 0.0 <= value <= 1.0:
        return value * 255.0
    if mode in _SIXTEEN_BIT_MODES:
        return value / 257.0
    return float(np.clip(value, 0.0, 255.0))


def load_image(
    source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    notes: list[str] | None = None,
) -> Image.Image:
    """Decode an uploaded or on-disk image into a fully loaded RGB image.

    Parameters
    ----------
    source : bytes, bytearray, memoryview, str, os.PathLike or file object
        The encoded image: raw bytes, a path to a file, or an object with
        ``.read()`` / ``.getvalue()`` (an open binary file, ``io.BytesIO``,
        Streamlit's ``UploadedFile``).
    max_pixels : int, optional
        Largest accepted ``width * height``, checked from the header before any
        pixel memory is allocated (guards against decompression bombs).
    max_bytes : int, optional
        Largest accepted encoded size in bytes.
    notes : list of str, optional
        Where to append what the decode changed that the person who gave
        the file should know, one sentence each: transparent pixels filled
        with white (:func:`transparency_note`).

    Returns
    -------
    PIL.Image.Image
        A new ``mode="RGB"`` image of size ``(W, H)`` (array shape
        ``(H, W, 3)``, uint8), pixels loaded, not tied to any file. It is the
        first frame of animations, rotated upright per EXIF orientation, with
        transparency composited onto white and high bit-depth data rescaled to
        0..255 over its own range.

    Raises
    ------
    InvalidImageError
        For anything that is not a usable image; the message says what is
        wrong and which formats are accepted. No other exception is raised.
    """
    data = read_source(source, max_bytes)
    if not data:
        raise _invalid("The file is empty.")
    if len(data) > max_bytes:
        raise too_big(len(data), max_bytes)
    return _decode(data, max_pixels, notes)


# --------------------------------------------------------------------------
# Hashing and stable encoding
# --------------------------------------------------------------------------


def image_sha256(data: bytes) -> str:
    """Hex SHA-256 of raw bytes, used as a cache key and content address.

    Parameters
    ----------
    data : bytes
        Any bytes (typically an encoded image file).

    Returns
    -------
    str
        64 lowercase hex characters.
    """
    return hashlib.sha256(data).hexdigest()


def pixels_sha256(image: Image.Image) -> str:
    """Hex SHA-256 of an image's content: its mode, size and raw pixels.

    Equal for equal pixels, whatever file they came from; about 100x
    cheaper than hashing a PNG encoding (which the dashboard's cold start
    paid for every sample photo).
    """
    header = f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode()
    return hashlib.sha256(header + image.tobytes()).hexdigest()


# Modes Pillow writes to PNG unchanged (Pillow 13 no longer writes "I").
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"})


def encode_png(image: Image.Image) -> bytes:
    """Encode ``image`` losslessly as PNG bytes.

    The output carries no metadata (no text chunks, EXIF or ICC profile) and
    uses fixed compression settings, so the same pixels give the same bytes
    with a given Pillow/zlib build.

    Parameters
    ----------
    image : PIL.Image.Image
        Image of size ``(W, H)``; ``RGB`` in this project. Modes PNG cannot
        store (CMYK, YCbCr, I, F, ...) first go through the same conversion to
        ``RGB`` as :func:`load_image` uses, which is not lossless.

    Returns
    -------
    bytes
        A complete PNG file.
    """
    if image.mode not in _PNG_MODES:
        image = _to_rgb(image)
    buffer = io.BytesIO()
    # optimize=False: Pillow's optimiser tries several filters and its choice
    # could change between versions; fixed settings keep hashes comparable.
    # icc_profile=None: otherwise Pillow copies one over from image.info.
    image.save(buffer, format="PNG", compress_level=6, optimize=False, icc_profile=None)
    return buffer.getvalue()
