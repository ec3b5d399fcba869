"""Where the object is, as a person gives it (saliency_core/inputs/object_mask.py): a box, a dragged rectangle,
an uploaded PNG; each wrong one refused with a message that says what to do."""

import io

import numpy as np
import pytest
from PIL import Image

from saliency_core.errors import InvalidImageError, InvalidInputError
from saliency_core.inputs import object_mask
from saliency_core.inputs.object_mask import box_from_ranges, box_mask, box_text, check_box, mask_from_png, parse_box

SHAPE = (24, 32)  # (H, W): a crop wider than tall, so that x and y can't be swapped unnoticed


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_a_box_is_checked_against_the_crop():
    assert check_box((0, 0, 32, 24), SHAPE) == (0, 0, 32, 24)  # the whole crop: x1, y1 exclusive
    assert check_box([1.0, 2.0, 3.0, 4.0], SHAPE) == (1, 2, 3, 4)
    for bad, message in [((0, 0, 33, 24), "within the 32 × 24 crop"), ((0, 0, 32, 25), "within"),
                         ((5, 0, 5, 10), "not be empty"), ((-1, 0, 4, 4), "within"), ((1.5, 0, 4, 4), "whole"),
                         ((1, 2, 3), "four whole numbers"), (("a", 0, 1, 1), "four whole numbers"),
                         (None, "four whole numbers")]:
        with pytest.raises(InvalidInputError, match=message):
            check_box(bad, SHAPE)


def test_a_links_box_round_trips_and_a_bad_one_says_the_form():
    assert parse_box(" 1, 2 ,30,20", SHAPE) == (1, 2, 30, 20)
    assert parse_box(box_text((4, 5, 6, 7)), SHAPE) == (4, 5, 6, 7)
    for bad in ("1,2,3", "1,2,3,4,5", "a,b,c,d", "1.5,2,3,4", ""):
        with pytest.raises(InvalidInputError, match="x0,y0,x1,y1"):
            parse_box(bad, SHAPE)
    with pytest.raises(InvalidInputError, match="within"):
        parse_box("0,0,40,10", SHAPE)


def test_a_dragged_rectangle_holds_the_pixels_whose_centres_it_covers():
    # pixel (r, c) is centred on x = c, y = r: x from 0.5 to 2.5 covers columns 1 and 2.
    assert box_from_ranges([0.5, 2.5], [3.2, 5.0], SHAPE) == (1, 4, 3, 6)
    assert box_from_ranges([2.5, 0.5], [5.0, 3.2], SHAPE) == (1, 4, 3, 6)  # dragged right to left, bottom up
    assert box_from_ranges([-10, 100], [-3, 50], SHAPE) == (0, 0, 32, 24)  # clipped to the crop
    assert box_from_ranges([0.2, 0.8], [1, 3], SHAPE) is None  # between two centres: no pixel
    assert box_from_ranges([40, 50], [1, 3], SHAPE) is None  # right of the crop
    assert box_from_ranges([float("nan"), 3], [1, 3], SHAPE) is None


def test_a_box_mask_is_true_inside_the_box_only():
    m = box_mask((2, 3, 7, 5), SHAPE)
    assert m.shape == SHAPE and m.dtype == bool
    assert m.sum() == (7 - 2) * (5 - 3)
    assert m[3:5, 2:7].all() and not m[2, 2] and not m[3, 7]  # rows are y, columns x


def test_a_png_mask_is_true_where_any_colour_is_non_zero():
    grey = np.zeros(SHAPE, dtype=np.uint8)
    grey[4:9, 10:20] = 255
    np.testing.assert_array_equal(mask_from_png(png(grey), SHAPE), grey > 0)
    rgb = np.zeros((*SHAPE, 3), dtype=np.uint8)
    rgb[0, 0, 2] = 1  # only blue, faintly
    rgb[10, 5] = (9, 0, 0)
    expected = np.zeros(SHAPE, dtype=bool)
    expected[0, 0] = expected[10, 5] = True
    np.testing.assert_array_equal(mask_from_png(png(rgb), SHAPE), expected)
    palette = Image.fromarray(grey).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    np.testing.assert_array_equal(mask_from_png(buf.getvalue(), SHAPE), grey > 0)


def test_alpha_is_ignored_so_a_transparent_black_mask_is_empty():
    rgba = np.zeros((*SHAPE, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque, but black everywhere
    with pytest.raises(InvalidInputError, match="The mask is empty"):
        mask_from_png(png(rgba), SHAPE)
    rgba[2, 3, :3] = 200
    rgba[2, 3, 3] = 0  # transparent, yet coloured: counts
    assert mask_from_png(png(rgba), SHAPE).sum() == 1


def test_wrong_masks_are_refused_with_what_to_do():
    with pytest.raises(InvalidInputError, match=r"The mask is 24 × 32 pixels; it must be the crop's size, 32 × 24"):
        mask_from_png(png(np.ones((32, 24), dtype=np.uint8)), SHAPE)  # transposed
    buf = io.BytesIO()
    Image.fromarray(np.full((*SHAPE, 3), 200, dtype=np.uint8)).save(buf, format="JPEG")
    with pytest.raises(InvalidImageError, match="not a readable PNG"):
        mask_from_png(buf.getvalue(), SHAPE)
    with pytest.raises(InvalidImageError, match="not a readable PNG"):
        noisy = png(np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8))
        mask_from_png(noisy[: len(noisy) // 2], SHAPE)  # cut off in the middle of its pixels
    with pytest.raises(InvalidImageError, match="MB"):
        mask_from_png(b"\0" * (object_mask.MAX_MASK_BYTES + 1), SHAPE)
