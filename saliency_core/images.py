"""Turn whatever a person uploads into an RGB picture, or say clearly why not.

Everything that reaches the models goes through :func:`load_image`, so this is
the one place that has to cope with odd files: empty uploads, web pages saved
as ``.jpg``, truncated downloads, 16-bit scientific TIFFs, CMYK print JPEGs,
transparent PNGs, animated GIFs, phone photos stored sideways, and files built
to exhaust memory. Each of those either becomes a fully loaded ``mode="RGB"``
:class:`PIL.Image.Image` or raises :class:`~saliency_core.errors.InvalidImageError`
with a message a person can act on. No other exception escapes.

The module also provides a small set of bundled sample photographs (from
scikit-image, so no network is needed) with their ImageNet labels.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from saliency_core.errors import InvalidImageError

__all__ = [
    "ACCEPTED_FORMATS_TEXT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "SampleImage",
    "encode_png",
    "image_sha256",
    "load_image",
    "pixels_sha256",
    "sample_by_name",
    "sample_images",
]

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

#: Appended to every error so the reader always learns what would work.
ACCEPTED_FORMATS_TEXT = "Upload a PNG, JPEG, WebP, GIF, BMP or TIFF photograph."

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

# How many leading bytes are enough to recognise a file type.
_SNIFF_BYTES = 4096

_WHITE = (255, 255, 255, 255)


def _invalid(problem: str) -> InvalidImageError:
    """Build an error whose message says what is wrong and what is accepted."""
    return InvalidImageError(f"{problem} {ACCEPTED_FORMATS_TEXT}")


# --------------------------------------------------------------------------
# Reading the raw bytes
# --------------------------------------------------------------------------


def _too_big(size: int, max_bytes: int) -> InvalidImageError:
    return _invalid(f"The file is {size / 1024 / 1024:.1f} MB, larger than the {max_bytes / 1024 / 1024:.0f} MB limit.")


def _read_path(path: str | os.PathLike, max_bytes: int) -> bytes:
    """Read a file from disk, refusing missing paths, folders and huge files."""
    try:
        text_path = os.fspath(path)
        if isinstance(text_path, bytes):
            text_path = os.fsdecode(text_path)
        if not os.path.exists(text_path):
            raise _invalid(f"No file was found at {text_path!r}.")
        if os.path.isdir(text_path):
            raise _invalid(f"{text_path!r} is a folder, not an image file.")
        # Check the size before reading so a huge file is never pulled into RAM.
        size = os.path.getsize(text_path)
        if size > max_bytes:
            raise _too_big(size, max_bytes)
        with open(text_path, "rb") as fh:
            # Read one byte past the limit: the file may have grown since stat.
            return fh.read(max_bytes + 1)
    except InvalidImageError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        # ValueError: e.g. a NUL byte in the path; OSError: permissions, etc.
        raise _invalid(f"The file could not be read ({exc}).") from exc


def _read_file_object(fh: object, max_bytes: int) -> bytes:
    """Read an open binary file or an upload object such as Streamlit's."""
    try:
        getvalue = getattr(fh, "getvalue", None)
        if callable(getvalue):
            # Streamlit's UploadedFile (a BytesIO) returns the whole upload
            # regardless of where an earlier reader left the position.
            data = getvalue()
        else:
            data = fh.read(max_bytes + 1)  # type: ignore[attr-defined]
    except Exception as exc:  # any reader may fail in its own way
        raise _invalid(f"The uploaded file could not be read ({exc}).") from exc
    if isinstance(data, str):
        raise _invalid("The file was opened as text, not as binary data; images must be read in binary mode ('rb').")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _invalid(f"Reading the file gave {type(data).__name__}, not bytes.")
    return bytes(data)


def _read_source(source: object, max_bytes: int) -> bytes:
    """Return the raw bytes behind any accepted ``source`` kind."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, memoryview):
        try:
            return source.tobytes()
        except (ValueError, TypeError) as exc:  # released or exotic views
            raise _invalid(f"The data could not be read ({exc}).") from exc
    if isinstance(source, (str, os.PathLike)):
        return _read_path(source, max_bytes)
    if hasattr(source, "read") or hasattr(source, "getvalue"):
        return _read_file_object(source, max_bytes)
    raise _invalid(f"Expected image bytes, a file path or an open file, got {type(source).__name__}.")


# --------------------------------------------------------------------------
# Explaining what a file is when Pillow cannot open it
# --------------------------------------------------------------------------

# (prefix, offset, description). Checked in order on the file's first bytes.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    # Accepted formats: reaching the diagnosis with one of these means the
    # header itself is broken.
    (b"\x89PNG\r\n\x1a\n", 0, "@PNG"),
    (b"\xff\xd8\xff", 0, "@JPEG"),
    (b"GIF87a", 0, "@GIF"),
    (b"GIF89a", 0, "@GIF"),
    (b"BM", 0, "@BMP"),
    (b"II*\x00", 0, "@TIFF"),
    (b"MM\x00*", 0, "@TIFF"),
    # Formats we recognise but do not decode.
    (b"%PDF", 0, "a PDF document"),
    (b"%!PS", 0, "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", 0, "a PostScript/EPS file"),
    (b"8BPS", 0, "a Photoshop (PSD) file"),
    (b"\x00\x00\x01\x00", 0, "an ICO icon"),
    (b"\x00\x00\x02\x00", 0, "a CUR cursor"),
    (b"icns", 0, "an ICNS icon"),
    (b"DDS ", 0, "a DDS texture"),
    (b"qoif", 0, "a QOI image"),
    (b"\x76\x2f\x31\x01", 0, "an OpenEXR image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", 0, "a JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "a JPEG XL image"),
    (b"\xff\x0a", 0, "a JPEG XL image"),
    (b"ftypheic", 4, "a HEIC photo (the iPhone default)"),
    (b"ftypheix", 4, "a HEIC photo (the iPhone default)"),
    (b"ftyphevc", 4, "a HEIC photo (the iPhone default)"),
    (b"ftypmif1", 4, "a HEIF image"),
    (b"ftypmsf1", 4, "a HEIF image sequence"),
    (b"ftypavif", 4, "an AVIF image"),
    (b"ftypavis", 4, "an AVIF image sequence"),
    (b"ftypisom", 4, "an MP4 video"),
    (b"ftypmp4", 4, "an MP4 video"),
    (b"ftypqt", 4, "a QuickTime video"),
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", 0, "a gzip-compressed file"),
    (b"Rar!", 0, "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
)


def _describe_unreadable(data: bytes) -> str:
    """Say, as specifically as possible, what ``data`` is if not an image.

    Only called after Pillow (restricted to the accepted decoders) has failed
    to recognise the data, so the answer is used in the error message only.
    """
    head = data[:_SNIFF_BYTES]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "The file looks like a WebP image but its header is corrupt."
    for magic, offset, what in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if what.startswith("@"):
                return f"The file looks like a {what[1:]} image but is truncated or corrupt."
            return f"The file is {what}, which is not a supported image format."
    if head[:4] == b"RIFF":
        return "The file is a RIFF container (audio or video), not an image."

    # Markup and text. Strip a byte-order mark and leading whitespace first.
    text_head = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if text_head.startswith(b"<"):
        if b"<svg" in text_head:
            return "The file is an SVG drawing. Vector images are not supported; export it as a bitmap first."
        if (
            text_head.startswith(b"<!doctype html")
            or b"<html" in text_head
            or b"<head" in text_head
            or b"<body" in text_head
        ):
            return "The file is an HTML web page, not an image (perhaps the page was saved instead of the picture)."
        if text_head.startswith(b"<?xml"):
            return "The file is an XML document, not an image."
    if _looks_like_text(head):
        return "The file contains text, not an image."
    return "The file is not a recognised image; it may be corrupt or in an unsupported format."


def _looks_like_text(head: bytes) -> bool:
    """True when ``head`` decodes as UTF-8 and is almost all printable."""
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still text.
        cut_at_end = len(head) == _SNIFF_BYTES and exc.start >= len(head) - 3
        if not cut_at_end:
            return False
        text = head[: exc.start].decode("utf-8", errors="replace")
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable / len(text) > 0.95


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


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` with the allowed decoders and return a loaded RGB image."""
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
            raise _invalid(_describe_unreadable(data)) from exc
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
    data = _read_source(source, max_bytes)
    if not data:
        raise _invalid("The file is empty.")
    if len(data) > max_bytes:
        raise _too_big(len(data), max_bytes)
    return _decode(data, max_pixels)


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


# --------------------------------------------------------------------------
# Bundled sample photographs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleImage:
    """A bundled example photograph with its expected ImageNet class.

    Attributes
    ----------
    name : str
        Short identifier (``"coffee"``), usable with :func:`sample_by_name`.
    title : str
        Human-readable title for menus.
    image : PIL.Image.Image
        ``RGB`` image, size ``(W, H)``.
    label : int
        ImageNet class index (0..999, torchvision's category order).
    label_name : str
        ImageNet class name for ``label``.
    description : str
        One sentence about the photo, with its credit.
    sha256 : str
        Hex SHA-256 of :func:`pixels_sha256` of ``image``; computed on creation.
        Equality and hashing use it instead of the (unhashable) image.
    """

    name: str
    title: str
    image: Image.Image = field(compare=False, repr=False)
    label: int
    label_name: str
    description: str
    # A field computed in __post_init__ (rather than a cached_property) keeps
    # the dataclass hashable and comparable by content.
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if self.image.mode != "RGB":
            # Frozen: bypass __setattr__ to normalise the field once.
            object.__setattr__(self, "image", self.image.convert("RGB"))
        object.__setattr__(self, "sha256", pixels_sha256(self.image))


def _skimage_file(filename: str) -> np.ndarray:
    """A photo from scikit-image's bundled data folder, as (H, W, 3) uint8.

    Read with Pillow from the folder itself: importing ``skimage.data`` (and
    its I/O plugins) costs more start-up time than decoding the photo.
    """
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidImageError("The sample photos need scikit-image: pip install -r requirements.txt")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data", filename)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _skimage_loader(filename: str) -> Callable[[], np.ndarray]:
    return functools.partial(_skimage_file, filename)


# (name, title, loader returning (H, W, 3) uint8, label, label_name, description)
_SAMPLE_SPECS = (
    (
        "coffee",
        "Coffee",
        _skimage_loader("coffee.png"),
        967,
        "espresso",
        "A cup of espresso on a saucer, seen from above; photo by Rachel Michetti, from scikit-image's sample data.",
    ),
    (
        "chelsea",
        "Chelsea the cat",
        _skimage_loader("chelsea.png"),
        281,
        "tabby",
        "Chelsea, a ginger tabby cat, looking into the camera; photo by Stefan "
        "van der Walt, from scikit-image's sample data.",
    ),
    (
        "rocket",
        "Rocket",
        _skimage_loader("rocket.jpg"),
        657,
        "missile",
        "A SpaceX Falcon 9 rocket on the launch pad (ImageNet's nearest class "
        "is 'missile'); photo by SpaceX (public domain), from scikit-image's "
        "sample data.",
    ),
    (
        "motorcycle",
        "Motorcycle",
        _skimage_loader("motorcycle_left.png"),
        665,
        "moped",
        "A motorcycle in a cluttered room (ImageNet has no motorcycle class; "
        "'moped' is the nearest); left view from the Middlebury stereo "
        "dataset, via scikit-image's sample data.",
    ),
    (
        "camera",
        "Cameraman",
        _skimage_loader("camera.png"),
        872,
        "tripod",
        "The classic greyscale cameraman image, a man with a camera on a tripod; from scikit-image's sample data.",
    ),
)


@functools.lru_cache(maxsize=1)
def _cached_samples() -> tuple[SampleImage, ...]:
    samples = []
    for name, title, loader, label, label_name, description in _SAMPLE_SPECS:
        array = np.ascontiguousarray(loader(), dtype=np.uint8)  # (H, W, 3)
        samples.append(
            SampleImage(
                name=name,
                title=title,
                image=Image.fromarray(array).convert("RGB"),
                label=label,
                label_name=label_name,
                description=description,
            )
        )
    return tuple(samples)


def sample_images() -> list[SampleImage]:
    """Return the bundled sample photographs, in a fixed order.

    The photos come from scikit-image's bundled data (no network access) and
    are decoded once per process; each call returns a new list, so callers
    may reorder or filter it freely.

    Returns
    -------
    list of SampleImage
        ``coffee``, ``chelsea``, ``rocket``, ``motorcycle``, ``camera``.
        Each image is ``RGB`` with both sides at least 128 pixels.

    Notes
    -----
    The :class:`SampleImage` objects (and their images) are shared between
    callers; treat the images as read-only.
    """
    return list(_cached_samples())


def sample_by_name(name: str) -> SampleImage:
    """Return the sample called ``name``.

    Parameters
    ----------
    name : str
        One of the names returned by :func:`sample_images`.

    Returns
    -------
    SampleImage

    Raises
    ------
    InvalidImageError
        If there is no sample with that name; the message lists valid names.
    """
    for sample in _cached_samples():
        if sample.name == name:
            return sample
    valid = ", ".join(spec[0] for spec in _SAMPLE_SPECS)
    raise InvalidImageError(f"There is no sample image {name!r}. Choose one of: {valid}.")
