"""Tests for saliency_core.inputs.images: the odd-file corpus is built here, in memory."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from saliency_core.errors import InvalidImageError, SaliencyError, UnknownSampleError
from saliency_core.inputs import images
from saliency_core.inputs.images import encode_png, image_sha256, load_image, pixels_sha256
from saliency_core.inputs.samples import SampleImage, sample_by_name, sample_images

# --------------------------------------------------------------------------
# Corpus builders
# --------------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise_rgb(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim ``width`` x ``height``."""
    png = bytearray(_save(Image.new("RGB", (8, 8), (10, 20, 30)), "PNG"))
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    # The CRC covers the chunk type and payload (bytes 12..29).
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])) & 0xFFFFFFFF)
    return bytes(png)


@pytest.fixture(scope="module")
def valid_png() -> bytes:
    return _save(_noise_rgb(), "PNG")


@pytest.fixture(scope="module")
def valid_jpeg() -> bytes:
    return _save(_noise_rgb(), "JPEG", quality=90)


def _assert_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size
    array = np.asarray(image)
    assert array.shape == (size[1], size[0], 3)
    assert array.dtype == np.uint8
    return array


def _assert_invalid(source: object, **kwargs: object) -> InvalidImageError:
    with pytest.raises(InvalidImageError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.strip()
    # Every message also says what would be accepted.
    assert "PNG" in message and "JPEG" in message, message
    return info.value


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


class _FakeUploadedFile:
    """Like Streamlit's UploadedFile: .getvalue() is the whole upload."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()


class _ReadOnly:
    """A reader with only .read(), like a socket or HTTP response."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)


def test_all_source_kinds_give_the_same_image(tmp_path: Path, valid_png: bytes) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(valid_png)
    uploaded = _FakeUploadedFile(valid_png)
    uploaded.read()  # a previous reader consumed it; getvalue still has it all
    expected = np.asarray(_noise_rgb())
    with path.open("rb") as fh:
        sources = [
            valid_png,
            bytearray(valid_png),
            memoryview(valid_png),
            str(path),
            path,
            io.BytesIO(valid_png),
            uploaded,
            _ReadOnly(valid_png),
            fh,
        ]
        for source in sources:
            array = _assert_rgb(load_image(source), (64, 48))
            np.testing.assert_array_equal(array, expected)


def test_result_is_detached_from_the_file(tmp_path: Path, valid_png: bytes) -> None:
    path = tmp_path / "gone.png"
    path.write_bytes(valid_png)
    image = load_image(path)
    path.unlink()
    # Pixel access must not need the file any more.
    assert image.getpixel((0, 0)) == _noise_rgb().getpixel((0, 0))
    assert image.info == {}


def test_invalid_image_error_is_a_value_error() -> None:
    assert issubclass(InvalidImageError, ValueError)
    assert issubclass(InvalidImageError, SaliencyError)
    with pytest.raises(ValueError) as info:  # what a caller that only knows ValueError catches
        load_image(b"")
    assert type(info.value) is InvalidImageError and "empty" in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    error = _assert_invalid(tmp_path / "nope.png")
    assert "No file" in str(error)
    _assert_invalid(str(tmp_path / "nope.png"))


def test_directory(tmp_path: Path) -> None:
    error = _assert_invalid(tmp_path)
    assert "folder" in str(error)


def test_path_with_nul_byte() -> None:
    _assert_invalid("bad\x00name.png")


def test_text_mode_file(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("hello")
    with path.open("r") as fh:
        error = _assert_invalid(fh)
    assert "binary" in str(error)


def test_unsupported_source_type() -> None:
    _assert_invalid(12345)


def test_reader_that_raises() -> None:
    class Broken:
        def read(self, size: int = -1) -> bytes:
            raise OSError("connection reset")

    error = _assert_invalid(Broken())
    assert "connection reset" in str(error)


# --------------------------------------------------------------------------
# Things that are not images
# --------------------------------------------------------------------------


def test_empty() -> None:
    error = _assert_invalid(b"")
    assert "empty" in str(error)
    _assert_invalid(io.BytesIO())


def test_random_bytes() -> None:
    data = random.Random(1234).randbytes(5000)
    error = _assert_invalid(data)
    assert "not a recognised image" in str(error)


def test_plain_text() -> None:
    error = _assert_invalid(b"Just some notes, not a picture.\nSecond line.\n")
    assert "text" in str(error)


def test_long_text_with_multibyte_char_at_the_sniff_boundary() -> None:
    data = ("a" * 4095 + "é" * 100).encode("utf-8")  # 'é' straddles byte 4096
    error = _assert_invalid(data)
    assert "text" in str(error)


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- drawn -->\n<svg width="1" height="1"></svg>',
    ],
)
def test_svg(data: bytes) -> None:
    error = _assert_invalid(data)
    assert "SVG" in str(error) and "Vector images are not supported" in str(error)


def test_html() -> None:
    error = _assert_invalid(b"<!DOCTYPE html>\n<html><head><title>x</title></head><body>hi</body></html>")
    assert "HTML" in str(error)


def test_xml() -> None:
    error = _assert_invalid(b'<?xml version="1.0"?><data><item/></data>')
    assert "XML" in str(error)


def test_pdf_header() -> None:
    error = _assert_invalid(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    assert "PDF" in str(error)


def test_ico_is_named_and_refused() -> None:
    data = _save(Image.new("RGB", (16, 16), "red"), "ICO")
    # Pillow could decode it, but only the allowed decoders may run.
    assert Image.open(io.BytesIO(data)).format == "ICO"
    error = _assert_invalid(data)
    assert "ICO" in str(error)


def test_other_pillow_format_is_refused() -> None:
    data = _save(Image.new("RGB", (8, 8), "red"), "PPM")
    _assert_invalid(data)


# --------------------------------------------------------------------------
# Broken and hostile images
# --------------------------------------------------------------------------


def test_truncated_png() -> None:
    data = _save(_noise_rgb(128, 128), "PNG")
    error = _assert_invalid(data[: len(data) // 2])
    assert "truncated or corrupt" in str(error)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg() -> None:
    data = _save(_noise_rgb(128, 128), "JPEG", quality=95)
    error = _assert_invalid(data[: len(data) // 2])
    assert "truncated or corrupt" in str(error)


def test_png_header_only() -> None:
    error = _assert_invalid(b"\x89PNG\r\n\x1a\n")
    assert "PNG" in str(error)


def test_decompression_bomb_is_refused_fast() -> None:
    data = _png_claiming(30_000, 30_000)
    assert len(data) < 200
    start = time.perf_counter()
    _assert_invalid(data)
    assert time.perf_counter() - start < 1.0


def test_over_max_pixels_is_refused_before_decoding() -> None:
    # 64 Mpx: under Pillow's own bomb limit, over our default of 40 Mpx.
    data = _png_claiming(8_000, 8_000)
    start = time.perf_counter()
    error = _assert_invalid(data)
    assert time.perf_counter() - start < 1.0
    assert "megapixel" in str(error)


def test_max_pixels_parameter(valid_png: bytes) -> None:
    _assert_invalid(valid_png, max_pixels=64 * 48 - 1)
    _assert_rgb(load_image(valid_png, max_pixels=64 * 48), (64, 48))


def test_bomb_warning_stays_local(valid_png: bytes) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    load_image(valid_png)
    _assert_invalid(_png_claiming(30_000, 30_000))
    # Neither Pillow's limit nor the warning filters changed globally.
    assert Image.MAX_IMAGE_PIXELS == limit_before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.warn("probe", Image.DecompressionBombWarning, stacklevel=1)
    assert len(caught) == 1


def test_max_bytes(tmp_path: Path, valid_png: bytes) -> None:
    limit = len(valid_png) - 1
    error = _assert_invalid(valid_png, max_bytes=limit)
    assert "MB" in str(error)
    path = tmp_path / "big.png"
    path.write_bytes(valid_png)
    _assert_invalid(path, max_bytes=limit)
    _assert_invalid(_ReadOnly(valid_png), max_bytes=limit)
    _assert_rgb(load_image(valid_png, max_bytes=len(valid_png)), (64, 48))


def test_max_bytes_message_gives_the_limit_in_mb() -> None:
    error = _assert_invalid(b"\x00" * (3 * 1024 * 1024), max_bytes=2 * 1024 * 1024)
    assert "2 MB" in str(error)


def test_fuzzed_png_and_jpeg(valid_png: bytes, valid_jpeg: bytes) -> None:
    """Random byte flips and cuts: an RGB image or InvalidImageError, fast."""
    rng = random.Random(20240601)
    start = time.perf_counter()
    outcomes = {"ok": 0, "invalid": 0}
    for original in (valid_png, valid_jpeg):
        for _ in range(200):
            data = bytearray(original)
            kind = rng.random()
            if kind < 0.6:
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            elif kind < 0.85:
                data = data[: rng.randrange(len(data))]
            else:
                position = rng.randrange(len(data))
                data[position:position] = rng.randbytes(rng.randint(1, 64))
            try:
                image = load_image(bytes(data))
            except InvalidImageError as exc:
                assert str(exc)
                outcomes["invalid"] += 1
            else:
                assert image.mode == "RGB"
                assert image.width > 0 and image.height > 0
                outcomes["ok"] += 1
    assert outcomes["invalid"] > 0
    assert time.perf_counter() - start < 10.0


# --------------------------------------------------------------------------
# Unusual but valid images
# --------------------------------------------------------------------------


def test_one_by_one() -> None:
    array = _assert_rgb(load_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")), (1, 1))
    assert tuple(array[0, 0]) == (1, 2, 3)


def test_very_thin() -> None:
    _assert_rgb(load_image(_save(Image.new("L", (10_000, 1), 77), "PNG")), (10_000, 1))
    _assert_rgb(load_image(_save(Image.new("RGB", (1, 10_000), "blue"), "BMP")), (1, 10_000))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_accepted_format(fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    source = Image.new("RGB", (30, 20), (200, 30, 40))
    kwargs: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    array = _assert_rgb(load_image(_save(source, fmt, **kwargs)), (30, 20))
    assert np.abs(array.astype(int) - [200, 30, 40]).max() <= 8


def test_cmyk_jpeg_cyan() -> None:
    data = _save(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    array = _assert_rgb(load_image(data), (16, 16))
    assert np.abs(array[8, 8].astype(int) - [0, 255, 255]).max() <= 6


def test_16bit_greyscale_png_uses_full_range() -> None:
    values = np.linspace(0, 4000, 40 * 10).reshape(10, 40).astype(np.uint16)
    data = _save(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    array = _assert_rgb(load_image(data), (40, 10))
    assert array.min() == 0 and array.max() == 255
    # Monotonic in the source values, and grey.
    assert np.all(np.diff(array[:, :, 0].ravel().astype(int)) >= 0)
    assert np.array_equal(array[:, :, 0], array[:, :, 1])


def test_16bit_big_endian_tiff() -> None:
    values = np.arange(1000, 1000 + 64, dtype=np.uint16).reshape(8, 8)
    image = Image.frombytes("I;16B", (8, 8), values.astype(">u2").tobytes())
    array = _assert_rgb(load_image(_save(image, "TIFF")), (8, 8))
    assert array[0, 0, 0] == 0 and array[7, 7, 0] == 255


def test_int32_tiff() -> None:
    values = np.linspace(-100_000, 100_000, 64).reshape(8, 8).astype(np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    array = _assert_rgb(load_image(_save(image, "TIFF")), (8, 8))
    assert array.min() == 0 and array.max() == 255


def test_float_tiff_in_unit_range_is_not_black() -> None:
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    data = _save(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    array = _assert_rgb(load_image(data), (8, 8))
    assert array.min() == 0 and array.max() == 255
    assert 120 <= array[4, 0, 0] <= 140  # value ~0.5 in the middle


def test_float_tiff_with_nan_and_inf() -> None:
    values = np.linspace(0.0, 10.0, 16, dtype=np.float32).reshape(4, 4)
    values[0, 0] = np.nan
    values[0, 1] = np.inf
    values[0, 2] = -np.inf
    array = _assert_rgb(load_image(_save(Image.fromarray(values), "TIFF")), (4, 4))
    assert array[0, 0, 0] == 0  # NaN -> darkest
    assert array[0, 1, 0] == 255  # +inf -> brightest
    assert array[0, 2, 0] == 0
    assert array[3, 3, 0] == 255


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("F", 0.5, 128),  # a fraction of full scale
        ("F", 42.0, 42),  # an 8-bit level
        ("F", float("nan"), 128),  # nothing finite: mid-grey
        ("I;16", 65535, 255),
        ("I;16", 0, 0),
        ("I", 300, 255),
    ],
)
def test_constant_high_depth_images(mode: str, value: float, expected: int) -> None:
    if mode == "I;16":
        image = Image.new("I;16", (5, 4), int(value))
    else:
        image = Image.new(mode, (5, 4), value)
    array = _assert_rgb(load_image(_save(image, "TIFF")), (5, 4))
    assert np.all(array == expected)


def test_16bit_rgb_png() -> None:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return _png_chunk(kind, payload)

    width, height = 4, 2
    row = np.tile(np.array([65535, 0, 32896], dtype=">u2"), width).tobytes()
    raw = b"".join(b"\x00" + row for _ in range(height))
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    array = _assert_rgb(load_image(data), (4, 2))
    assert tuple(array[0, 0]) == (255, 0, 128)


def test_rgba_transparent_red_becomes_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    rgba.putpixel((6, 6), (0, 0, 0, 128))
    array = _assert_rgb(load_image(_save(rgba, "PNG")), (10, 10))
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[5, 5]) == (0, 0, 255)
    assert all(abs(int(c) - 127) <= 2 for c in array[6, 6])  # half black over white


def test_la_png() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (50, 255))
    array = _assert_rgb(load_image(_save(la, "PNG")), (4, 4))
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[1, 1]) == (50, 50, 50)


def _two_colour_palette() -> Image.Image:
    image = Image.new("P", (6, 6), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (3 * 254))  # 0 red, 1 blue
    image.putpixel((2, 3), 1)
    return image


def test_gif_with_transparent_index_becomes_white() -> None:
    data = _save(_two_colour_palette(), "GIF", transparency=0)
    array = _assert_rgb(load_image(data), (6, 6))
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[3, 2]) == (0, 0, 255)


def test_palette_png_with_trns() -> None:
    data = _save(_two_colour_palette(), "PNG", transparency=0)
    array = _assert_rgb(load_image(data), (6, 6))
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[3, 2]) == (0, 0, 255)


def test_palette_without_transparency_keeps_colours() -> None:
    array = _assert_rgb(load_image(_save(_two_colour_palette(), "PNG")), (6, 6))
    assert tuple(array[0, 0]) == (255, 0, 0)
    assert tuple(array[3, 2]) == (0, 0, 255)


def test_rgb_png_with_trns_colour() -> None:
    image = Image.new("RGB", (3, 3), (0, 255, 0))
    image.putpixel((1, 1), (9, 9, 9))
    array = _assert_rgb(load_image(_save(image, "PNG", transparency=(0, 255, 0))), (3, 3))
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[1, 1]) == (9, 9, 9)


def _notes(data: bytes) -> list[str]:
    notes: list[str] = []
    load_image(data, notes=notes)
    return notes


def test_filling_transparent_pixels_with_white_is_said_with_how_many() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # 98 of 100 pixels transparent or partly so
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    rgba.putpixel((6, 6), (0, 0, 255, 255))
    assert _notes(_save(rgba, "PNG")) == [images.transparency_note(0.98)]
    assert "98% of the image" in images.transparency_note(0.98) and "filled with white" in images.transparency_note(1)
    assert "under 1 %" in images.transparency_note(0.001)
    half = Image.new("LA", (4, 4), (0, 255))
    half.putpixel((0, 0), (0, 128))  # partly transparent counts: it is blended with white too
    assert _notes(_save(half, "PNG")) == [images.transparency_note(1 / 16)]
    assert _notes(_save(_two_colour_palette(), "GIF", transparency=0)) == [images.transparency_note(35 / 36)]
    image = Image.new("RGB", (3, 3), (0, 255, 0))
    assert _notes(_save(image, "PNG", transparency=(0, 255, 0))) == [images.transparency_note(1.0)]


def test_an_image_without_a_transparent_pixel_gets_no_note() -> None:
    assert _notes(_save(Image.new("RGBA", (4, 4), (1, 2, 3, 255)), "PNG")) == []  # an alpha band, all opaque
    assert _notes(_save(_two_colour_palette(), "PNG")) == []
    assert _notes(_save(Image.new("RGB", (4, 4), (1, 2, 3)), "JPEG")) == []
    assert _notes(_save(Image.new("I;16", (4, 4), 300), "PNG")) == []
    load_image(_save(Image.new("RGBA", (4, 4)), "PNG"))  # without a list to fill, nothing is said


def test_bilevel_png() -> None:
    image = Image.new("1", (8, 8), 0)
    image.putpixel((3, 3), 1)
    array = _assert_rgb(load_image(_save(image, "PNG")), (8, 8))
    assert tuple(array[0, 0]) == (0, 0, 0)
    assert tuple(array[3, 3]) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "colour"),
    [("YCbCr", (76, 85, 255)), ("LAB", (136, 208, 195)), ("PA", (0, 255))],
)
def test_tiff_colour_spaces(mode: str, colour: tuple[int, ...]) -> None:
    image = Image.new(mode, (4, 4), colour)
    if mode == "PA":
        image.putpalette([200, 10, 20] * 256)
    array = _assert_rgb(load_image(_save(image, "TIFF")), (4, 4))
    red, green, blue = (int(c) for c in array[0, 0])
    assert red > 190 and green < 40 and blue < 40, (mode, array[0, 0])


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("La", (0, 0), (255, 255, 255)),
        ("RGBa", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBa", (0, 0, 200, 255), (0, 0, 200)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("CMYK", (0, 255, 0, 0), (255, 0, 255)),
        ("I;16L", 7, (7, 7, 7)),
    ],
)
def test_modes_without_a_file_format(mode: str, colour: object, expected: tuple[int, int, int]) -> None:
    # Pillow cannot write these modes to any accepted format, so check the
    # conversion step itself.
    rgb = images._to_rgb(Image.new(mode, (3, 2), colour))  # type: ignore[arg-type]
    array = _assert_rgb(rgb, (3, 2))
    if mode == "I;16L":
        expected = (int(7 / 257 + 0.5),) * 3  # constant 16-bit image
    assert np.abs(array[0, 0].astype(int) - expected).max() <= 3


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (10, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    array = _assert_rgb(load_image(data), (10, 8))
    assert tuple(array[4, 4]) == (255, 0, 0)


def test_animated_webp_gives_first_frame() -> None:
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    frames = [Image.new("RGB", (10, 8), colour) for colour in ((0, 0, 255), (255, 0, 0))]
    data = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    array = _assert_rgb(load_image(data), (10, 8))
    assert tuple(array[4, 4]) == (0, 0, 255)


def _with_orientation(image: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(image, fmt, exif=exif.tobytes())


def test_exif_orientation_6_is_rotated_upright() -> None:
    # Stored 40 wide x 20 high with a red block at the stored top-left.
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 5, 5))
    array = _assert_rgb(load_image(_with_orientation(stored, 6)), (20, 40))
    # Orientation 6 means "rotate 90 degrees clockwise to display": the
    # stored top-left corner ends up at the top-right.
    assert tuple(array[0, 19]) == (255, 0, 0)
    assert tuple(array[2, 17]) == (255, 0, 0)
    assert tuple(array[0, 0]) == (0, 0, 0)
    assert tuple(array[39, 19]) == (0, 0, 0)


def test_exif_orientation_in_jpeg() -> None:
    stored = Image.new("RGB", (48, 24), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 8, 8))
    array = _assert_rgb(load_image(_with_orientation(stored, 6, "JPEG")), (24, 48))
    assert array[3, 20].min() > 200
    assert array[3, 3].max() < 50


def test_broken_exif_is_ignored_quietly() -> None:
    image = Image.new("RGB", (6, 4), (10, 200, 30))
    data = _save(image, "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        array = _assert_rgb(load_image(data), (6, 4))
    assert caught == []
    assert abs(int(array[2, 2, 1]) - 200) <= 8


def test_mpo_camera_jpeg() -> None:
    left = Image.new("RGB", (12, 10), (250, 0, 0))
    right = Image.new("RGB", (12, 10), (0, 0, 250))
    data = _save(left, "MPO", save_all=True, append_images=[right], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    array = _assert_rgb(load_image(data), (12, 10))
    assert array[5, 5, 0] > 230 and array[5, 5, 2] < 25


# --------------------------------------------------------------------------
# Hashing and encoding
# --------------------------------------------------------------------------


def test_image_sha256() -> None:
    assert image_sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert image_sha256(b"abc") != image_sha256(b"abd")


def _expected_pixels_sha256(array: np.ndarray) -> str:
    """pixels_sha256 computed here, from an (H, W, 3) uint8 array: "RGB WxH\n" and the bytes row by row."""
    h, w, _ = array.shape
    return hashlib.sha256(f"RGB {w}x{h}\n".encode() + np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()


def test_pixels_sha256_hashes_mode_size_and_pixels() -> None:
    # Saved as the sha256 of npz items in batch results, so the digest must not change: two pixels, hashed by hand.
    image = Image.new("RGB", (2, 1))
    image.putpixel((0, 0), (255, 0, 0))
    image.putpixel((1, 0), (0, 0, 255))
    assert pixels_sha256(image) == hashlib.sha256(b"RGB 2x1\n\xff\x00\x00\x00\x00\xff").hexdigest()
    # The same bytes in another shape or mode are another image.
    assert pixels_sha256(Image.frombytes("RGB", (1, 2), image.tobytes())) != pixels_sha256(image)
    assert pixels_sha256(Image.frombytes("L", (6, 1), image.tobytes())) != pixels_sha256(image)
    # Any file with these pixels gives the same digest.
    assert pixels_sha256(load_image(encode_png(image))) == pixels_sha256(image)
    noise = _noise_rgb(7, 5, seed=2)
    assert pixels_sha256(noise) == _expected_pixels_sha256(np.asarray(noise))


def test_encode_png_is_lossless_and_stable() -> None:
    image = _noise_rgb(20, 10, seed=3)
    data = encode_png(image)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data == encode_png(image.copy())
    np.testing.assert_array_equal(np.asarray(load_image(data)), np.asarray(image))


def test_encode_png_drops_icc_profile_and_handles_other_modes() -> None:
    image = _noise_rgb(4, 4)
    image.info["icc_profile"] = b"not really a profile"
    assert b"iCCP" not in encode_png(image)
    for mode in ("CMYK", "F", "I", "RGBA", "L", "I;16"):
        assert Image.open(io.BytesIO(encode_png(Image.new(mode, (3, 3))))).format == "PNG"


# --------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------

_EXPECTED_SAMPLES = [
    ("coffee", 967, "espresso"),
    ("chelsea", 281, "tabby"),
    ("rocket", 657, "missile"),
    ("motorcycle", 665, "moped"),
    ("camera", 872, "tripod"),
]


def test_samples() -> None:
    samples = sample_images()
    assert [(s.name, s.label, s.label_name) for s in samples] == _EXPECTED_SAMPLES
    for sample in samples:
        assert isinstance(sample, SampleImage)
        assert sample.image.mode == "RGB"
        assert min(sample.image.size) >= 128
        assert sample.title and sample.description.endswith(".")
        assert len(sample.sha256) == 64
        assert sample.sha256 == _expected_pixels_sha256(np.asarray(sample.image))  # the pixels, not a file
    assert len({s.sha256 for s in samples}) == 5
    # The greyscale cameraman is stored as RGB with equal channels.
    camera = np.asarray(samples[-1].image)
    assert np.array_equal(camera[..., 0], camera[..., 2])


def test_samples_are_cached_and_copied() -> None:
    first = sample_images()
    first.clear()
    second = sample_images()
    assert len(second) == 5
    third = sample_images()
    assert second is not third
    assert [s.sha256 for s in second] == [s.sha256 for s in third]
    assert second[0] is third[0]  # decoded once per process


def test_sample_is_frozen_and_hashable() -> None:
    sample = sample_images()[0]
    with pytest.raises(AttributeError):
        sample.name = "other"  # type: ignore[misc]
    assert hash(sample) == hash(sample_by_name("coffee"))
    assert sample == sample_by_name("coffee")


def test_sample_by_name() -> None:
    assert sample_by_name("rocket").label == 657
    with pytest.raises(UnknownSampleError) as info:
        sample_by_name("dog")
    assert "coffee" in str(info.value) and "camera" in str(info.value)


def test_samples_are_pixel_for_pixel_scikit_image_data():
    from skimage import data

    expected = {
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
        "camera": np.stack([data.camera()] * 3, axis=-1),
    }
    for sample in sample_images():
        np.testing.assert_array_equal(np.asarray(sample.image), expected[sample.name], err_msg=sample.name)
