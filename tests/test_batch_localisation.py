"""Objects for the localisation metrics: boxes and masks carried through the model's resize and crop, and the
hostile CSVs and mask folders the job refuses with one line before the model loads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saliency_core.core import limits
from saliency_core.errors import InvalidImageError, InvalidInputError
from saliency_core.inputs.object_masks import box_mask, crop_mask, read_mask_png
from saliency_core.inputs.preprocessing import Preprocessing, crop_image
from saliency_core.jobs import batch as batch_module
from saliency_core.jobs import localisation
from saliency_core.jobs.batch import main
from saliency_core.jobs.imagefolder import discover, write_sample_folder

PREP = Preprocessing(resize=256, crop=224, mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (224, 224), (1000, 120), (90, 60)])
def test_a_box_lands_where_the_crop_puts_its_pixels(size: tuple[int, int]):
    """Paint the box white on black, crop the image as the model's preprocessing does: the box mask is white
    there, away from the one-pixel blur of the resampling at its edges."""
    w, h = size
    box = (round(w * 0.3), round(h * 0.25), round(w * 0.7), round(h * 0.8))  # whole pixels: a mask can paint it
    painted = np.zeros((h, w), dtype=bool)
    painted[box[1]:box[3], box[0]:box[2]] = True
    crop = np.asarray(crop_image(Image.fromarray(painted.astype(np.uint8) * 255), PREP))[..., 0]
    mask = box_mask([box], w, h, PREP)
    assert mask.shape == (224, 224) and mask.any()
    sure = crop > 250, crop < 5
    assert mask[sure[0]].all() and not mask[sure[1]].any()
    assert (mask != (crop > 127)).mean() < 0.03  # only along the edges
    np.testing.assert_array_equal(crop_mask(painted, PREP), mask)  # a painted mask gives the same crop


def test_boxes_are_a_union_and_a_box_outside_the_image_covers_nothing():
    a, b = (0, 0, 50, 50), (300, 300, 400, 400)
    np.testing.assert_array_equal(box_mask([a, b], 400, 400, PREP), box_mask([a], 400, 400, PREP)
                                  | box_mask([b], 400, 400, PREP))
    assert not box_mask([(500, 500, 600, 600)], 400, 400, PREP).any()


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_mask_pngs_of_every_common_mode_read_as_non_zero():
    m = np.zeros((6, 8), dtype=np.uint8)
    m[2:4, 3:6] = 7
    expected = m != 0
    np.testing.assert_array_equal(read_mask_png(_png(m), 8, 6), expected)
    rgba = np.zeros((6, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # alpha everywhere: not the object
    rgba[2:4, 3:6, 1] = 200
    np.testing.assert_array_equal(read_mask_png(_png(rgba), 8, 6), expected)
    np.testing.assert_array_equal(read_mask_png(_png(expected), 8, 6), expected)
    with pytest.raises(InvalidImageError, match="8 x 6 pixels, the image 9 x 6"):
        read_mask_png(_png(m), 9, 6)
    with pytest.raises(InvalidImageError, match="not a readable PNG"):
        read_mask_png(b"\x89PNG\r\n\x1a\n garbage", 8, 6)
    with pytest.raises(InvalidImageError, match="more than"):
        read_mask_png(_png(m), 8, 6, max_pixels=10)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_folder(tmp_path_factory.mktemp("data") / "images", 3, corrupt=0)


def _csv(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "boxes.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_boxes_by_key_or_path_and_rows_of_other_images(images: Path, tmp_path: Path):
    d = discover(images)
    k0, k1 = d.items[0].key, d.items[1].key
    text = (f"path,x0,y0,x1,y1,label\n{images / k0},1,2,30,40,x\n{k1},0,0,10,10,\n{k1},20,20,30,30,\n"
            "n01440764/not_in_this_run.jpg,1,1,2,2,\n")
    boxes, summary = localisation.read_boxes(str(_csv(tmp_path, text)), d)
    assert boxes == {k0: ((1, 2, 30, 40),), k1: ((0, 0, 10, 10), (20, 20, 30, 30))}
    assert summary["rows"] == 4 and summary["images_with_object"] == 2 and summary["rows_of_other_images"] == 1
    boxes, _ = localisation.read_boxes(str(_csv(tmp_path, f"key,x0,y0,x1,y1\n{k0},1,2,3,4\n")), d)
    assert boxes == {k0: ((1, 2, 3, 4),)}


HOSTILE_CSV = {
    "header": ("name,a,b\nx,1,2\n", "header must name key (or path)"),
    "not-a-number": ("key,x0,y0,x1,y1\n{k},1,2,x,4\n", "line 2: x1 is 'x', not a number"),
    "nan": ("key,x0,y0,x1,y1\n{k},nan,2,3,4\n", "line 2: x0 is 'nan'"),
    "huge-coordinate": ("key,x0,y0,x1,y1\n{k},1,2,1e300,4\n", "not from 0 to"),
    "empty-box": ("key,x0,y0,x1,y1\n{k},5,2,5,4\n", "is empty"),
    "ragged": ("key,x0,y0,x1,y1\n{k},1,2,3\n", "line 2: 5 fields expected"),
    "extra-fields": ("key,x0,y0,x1,y1\n{k},1,2,3,4,5,6\n", "line 2: 5 fields expected"),
    "parent": ("key,x0,y0,x1,y1\n../../etc/passwd,1,2,3,4\n", "points outside the dataset"),
    "absolute": ("path,x0,y0,x1,y1\n/etc/passwd,1,2,3,4\n", "points outside the dataset"),
    "no-match": ("key,x0,y0,x1,y1\nn01440764/other.jpg,1,2,3,4\n", "none of its 1 rows names one of the 3 images"),
    "huge-field": ("key,x0,y0,x1,y1\n\"" + "a" * 200_000 + "\",1,2,3,4\n", "not CSV"),
    "binary": (b"\xff\xfe\x00key\x00,\x00x0\n\x80\x81", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CSV))
def test_a_hostile_boxes_csv_is_refused_with_one_line(case: str, images: Path, tmp_path: Path):
    d = discover(images)
    text, says = HOSTILE_CSV[case]
    if isinstance(text, str):
        text = text.replace("{k}", d.items[0].key)
    with pytest.raises(InvalidInputError) as err:
        localisation.read_boxes(str(_csv(tmp_path, text)), d)
    message = str(err.value)
    assert says in message and "\n" not in message and message.startswith("--boxes "), message


def test_a_boxes_csv_too_big_or_too_long_or_not_a_file_is_refused(images: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    d = discover(images)
    rows = "key,x0,y0,x1,y1\n" + f"{d.items[0].key},1,2,3,4\n" * 50
    path = _csv(tmp_path, rows)
    monkeypatch.setattr(limits, "MAX_BOX_ROWS", 10)
    with pytest.raises(InvalidInputError, match="more than 10 rows"):
        localisation.read_boxes(str(path), d)
    monkeypatch.setattr(limits, "MAX_BOXES_PER_IMAGE", 5)
    monkeypatch.setattr(limits, "MAX_BOX_ROWS", 1000)
    with pytest.raises(InvalidInputError, match="more than 5 boxes"):
        localisation.read_boxes(str(path), d)
    monkeypatch.setattr(limits, "MAX_BOXES_BYTES", 100)
    with pytest.raises(InvalidInputError, match="larger than"):
        localisation.read_boxes(str(path), d)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="regular"):
        localisation.read_boxes(str(fifo), d)


def test_a_hostile_masks_folder_is_refused_with_one_line(images: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    d = discover(images)
    masks = tmp_path / "masks"
    key = d.items[0].key
    target = masks / Path(key).with_suffix(".png")
    target.parent.mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="no mask for any of the 3 images"):
        localisation.check_masks(str(masks), d)
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(np.ones((4, 4), dtype=np.uint8)))
    target.symlink_to(outside)
    with pytest.raises(InvalidInputError, match="points outside the masks folder"):
        localisation.check_masks(str(masks), d)
    target.unlink()
    target.write_bytes(b"x" * 2000)
    monkeypatch.setattr(limits, "MAX_MASK_BYTES", 1000)
    with pytest.raises(InvalidInputError, match="more than the"):
        localisation.check_masks(str(masks), d)
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        localisation.check_masks(str(masks), d)
    with pytest.raises(InvalidInputError, match="would be read as images"):
        localisation.check_masks(str(images), d)
    with pytest.raises(InvalidInputError, match="not a folder"):
        localisation.check_masks(str(tmp_path / "none"), d)


def test_the_job_refuses_a_bad_csv_before_the_model_loads(images: Path, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch):
    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(batch_module, "load_model", no_model)
    path = _csv(tmp_path, "key,x0,y0,x1,y1\n../outside.jpg,1,2,3,4\n")
    code = main(["--images", str(images), "--out", str(tmp_path / "out"), "--metrics", "pointing_game",
                 "--boxes", str(path), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "points outside the dataset" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_mask_that_does_not_decode_sends_its_image_to_the_errors_table(images: Path, tmp_path: Path):
    """And an image without a mask gets NaN; one with a mask its pointing game and object share."""
    from saliency_core.jobs.results import load_results

    d = discover(images)
    masks = tmp_path / "masks"
    good, bad = d.items[0].key, d.items[1].key
    for key in (good, bad):
        (masks / key).parent.mkdir(parents=True, exist_ok=True)
    w, h = Image.open(images / good).size
    full = np.zeros((h, w), dtype=np.uint8)
    full[: h // 2] = 1
    (masks / Path(good).with_suffix(".png")).write_bytes(_png(full))
    (masks / Path(bad).with_suffix(".png")).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    assert main(["--images", str(images), "--out", str(out), "--maps", "score", "--metrics", "localisation",
                 "--masks", str(masks), "--workers", "0", "--no-progress"]) == 0
    res = load_results(out)
    rows = res.results.set_index("key")
    assert list(res.errors["key"]) == [bad] and f"its mask {masks / Path(bad).with_suffix('.png')}" in \
        res.errors["error"].iloc[0]
    assert rows.loc[good, "object_share"] == pytest.approx(box_mask([(0, 0, w, h // 2)], w, h, PREP).mean(),
                                                           abs=0.01)
    assert rows.loc[good, "score_pointing_game"] in (0.0, 1.0)
    third = d.items[2].key
    assert np.isnan(rows.loc[third, ["object_share", "score_pointing_game", "score_relevance_mass_accuracy",
                                     "score_relevance_rank_accuracy"]].to_numpy(dtype=float)).all()
