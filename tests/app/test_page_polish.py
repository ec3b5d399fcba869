"""Small things seen on the pages (issue 22), driven with AppTest: what the pages say.

The Gallery names Grad-CAM's layer as the maps used it ("layer=_blocks.15", not "layer=None"), and an upload
with transparent pixels says that they were filled with white (saliency_core.inputs.images.load_image's notes).
What needs a browser to be seen (text cut off, an empty table row, colour bars) is in test_browser_polish.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from saliency_core.inputs.images import transparency_note
from tests.app.apptest import PAGES, assert_healthy, main_markdown, shown, texts

pytestmark = pytest.mark.usefixtures("upload_dir")


def test_the_gallery_names_grad_cams_layer_as_used_not_none(new_app, lite0):
    at = new_app(PAGES["gallery"], method="grad_cam").run()
    assert_healthy(at)
    said = main_markdown(at) + "\n" + texts(at.main.caption)
    layer = lite0.spec.cam_layer
    assert "layer=None" not in said, said
    assert said.count(f"Grad-CAM (Selvaraju et al. 2017; layer={layer})") == 2, said  # the intro and the caption


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def cutout() -> Image.Image:
    """A 64 x 64 red square on a fully transparent 128 x 128 canvas: 75 % of its pixels transparent."""
    canvas = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    canvas.paste(Image.new("RGBA", (64, 64), (200, 30, 30, 255)), (32, 32))
    return canvas


def sidebar_notes(at) -> str:
    return texts(at.sidebar.info)


def test_a_transparent_upload_says_its_transparent_pixels_were_filled_with_white(new_app):
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("cutout.png", png(cutout()), "image/png").run()
    assert_healthy(at)
    assert shown(transparency_note(0.75)) in sidebar_notes(at), sidebar_notes(at)
    assert "75% of the image" in sidebar_notes(at)
    at.radio(key="objective").set_value("loss").run()  # a rerun: the decode is cached, the note still said
    assert shown(transparency_note(0.75)) in sidebar_notes(at)
    # Opened from its link, by another session: the stored upload says it too.
    again = new_app(PAGES["saliency"], source="upload", image=at.query_params["image"]).run()
    assert_healthy(again)
    assert shown(transparency_note(0.75)) in sidebar_notes(again)


def test_an_opaque_upload_gets_no_such_note(new_app):
    at = new_app(PAGES["saliency"]).run()
    opaque = cutout().convert("RGB")  # the same picture without its alpha band
    at.file_uploader(key="upload_file").upload("opaque.png", png(opaque), "image/png").run()
    assert_healthy(at)
    assert "filled with white" not in sidebar_notes(at)
    assert np.asarray(opaque).shape == (128, 128, 3)
