"""Raw bytes of an upload or a file, with a size cap, and what a file is when it is not an image.

:func:`saliency_core.inputs.images.load_image` reads through :func:`read_source` and,
when no accepted decoder recognises the bytes, explains them with
:func:`describe_unreadable` ("an HTML web page", "a HEIC photo", ...).
Files on disk are read only when they are regular files
(:func:`open_regular_file`, :func:`read_regular_file`): a FIFO, a device or
a socket named ``x.jpg`` is refused, never opened in a way that can block.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from saliency_core.errors import InvalidImageError

#: Appended to every error so the reader always learns what would work.
ACCEPTED_FORMATS_TEXT = "Upload a PNG, JPEG, WebP, GIF, BMP or TIFF photograph."

# How many leading bytes are enough to recognise a file type.
SNIFF_BYTES = 4096


def invalid_image(problem: str) -> InvalidImageError:
    """Build an error whose message says what is wrong and what is accepted."""
    return InvalidImageError(f"{problem} {ACCEPTED_FORMATS_TEXT}")


def too_big(size: int, max_bytes: int) -> InvalidImageError:
    return invalid_image(f"The file is {size / 1024 / 1024:.1f} MB, larger than the "
                         f"{max_bytes / 1024 / 1024:.0f} MB limit.")


# Reading files on disk: regular files only

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular(path: str | os.PathLike, st: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((what for is_kind, what in _KINDS if is_kind(st.st_mode)), "a special file")
        raise InvalidImageError(f"{os.fsdecode(path)!r} is {kind}, not a regular file; only regular files are read.")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InvalidImageError(f"The file is {st.st_size / 2**20:.1f} MB, larger than the "
                                f"{max_bytes / 2**20:.0f} MB limit.")


def open_regular_file(path: str | os.PathLike, max_bytes: int | None = None) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (links followed) of at most ``max_bytes``.

    Anything else is refused before a byte is read: a FIFO (whose ``open``
    blocks until a writer comes), a device such as ``/dev/zero`` (which never
    ends), a socket, a folder. ``stat`` checks the type first; the file is
    then opened with ``O_NONBLOCK``, so that a FIFO swapped in after the check
    cannot block the open, and checked again with ``fstat`` on the open
    descriptor: what is read is what was checked.

    Raises
    ------
    InvalidImageError : not a regular file, or larger than ``max_bytes``.
    OSError : missing or unreadable.
    """
    _check_regular(path, os.stat(path), max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
        os.set_blocking(fd, True)  # no effect on reading a regular file; a plain file object from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (see :func:`open_regular_file`).

    Raises
    ------
    InvalidImageError : not a regular file, or larger than ``max_bytes`` (also when it grew after the check).
    OSError : missing or unreadable.
    """
    with open_regular_file(path, max_bytes) as fh:
        data = fh.read(max_bytes + 1)  # one byte past the limit: the file may have grown since the check
    if len(data) > max_bytes:
        raise InvalidImageError(f"The file is larger than the {max_bytes / 2**20:.0f} MB limit.")
    return data


def _read_path(path: str | os.PathLike, max_bytes: int) -> bytes:
    """Read an image file from disk: regular files only, no larger than ``max_bytes``."""
    try:
        text_path = os.fspath(path)
        if isinstance(text_path, bytes):
            text_path = os.fsdecode(text_path)
        if not os.path.exists(text_path):
            raise invalid_image(f"No file was found at {text_path!r}.")
        return read_regular_file(text_path, max_bytes)
    except FileNotFoundError:
        raise invalid_image(f"No file was found at {text_path!r}.") from None
    except InvalidImageError as exc:
        if ACCEPTED_FORMATS_TEXT in str(exc):
            raise
        raise invalid_image(str(exc)) from None
    except (OSError, ValueError, TypeError) as exc:
        # ValueError: e.g. a NUL byte in the path; OSError: permissions, etc.
        raise invalid_image(f"The file could not be read ({exc}).") from exc


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
        raise invalid_image(f"The uploaded file could not be read ({exc}).") from exc
    if isinstance(data, str):
        raise invalid_image("The file was opened as text, not as binary data; images must be read in binary "
                            "mode ('rb').")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise invalid_image(f"Reading the file gave {type(data).__name__}, not bytes.")
    return bytes(data)


def read_source(source: object, max_bytes: int) -> bytes:
    """Return the raw bytes behind any accepted ``source`` kind."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, memoryview):
        try:
            return source.tobytes()
        except (ValueError, TypeError) as exc:  # released or exotic views
            raise invalid_image(f"The data could not be read ({exc}).") from exc
    if isinstance(source, (str, os.PathLike)):
        return _read_path(source, max_bytes)
    if hasattr(source, "read") or hasattr(source, "getvalue"):
        return _read_file_object(source, max_bytes)
    raise invalid_image(f"Expected image bytes, a file path or an open file, got {type(source).__name__}.")


# Explaining what a file is when Pillow cannot open it

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


def describe_unreadable(data: bytes) -> str:
    """Say, as specifically as possible, what ``data`` is if not an image.

    Only called after Pillow (restricted to the accepted decoders) has failed
    to recognise the data, so the answer is used in the error message only.
    """
    head = data[:SNIFF_BYTES]
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
        cut_at_end = len(head) == SNIFF_BYTES and exc.start >= len(head) - 3
        if not cut_at_end:
            return False
        text = head[: exc.start].decode("utf-8", errors="replace")
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable / len(text) > 0.95
