"""Small things seen on the pages (issue 22), driven with AppTest: what the pages say.

The Gallery names Grad-CAM's layer as the maps used it ("layer=_blocks.15", not "layer=None").
What needs a browser to be seen (text cut off, an empty table row, colour bars) is in test_browser_polish.py.
"""

from __future__ import annotations

import pytest

from tests.app.test_pages import PAGES, assert_healthy, main_markdown, texts

pytestmark = pytest.mark.usefixtures("upload_dir")


def test_the_gallery_names_grad_cams_layer_as_used_not_none(new_app, lite0):
    at = new_app(PAGES["gallery"], method="grad_cam").run()
    assert_healthy(at)
    said = main_markdown(at) + "\n" + texts(at.main.caption)
    layer = lite0.spec.cam_layer
    assert "layer=None" not in said, said
    assert said.count(f"Grad-CAM (Selvaraju et al. 2017; layer={layer})") == 2, said  # the intro and the caption

