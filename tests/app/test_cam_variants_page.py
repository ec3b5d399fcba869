"""The Methods page draws the CAM variants of issue 23 (Grad-CAM++, LayerCAM, HiResCAM, Score-CAM).

Nothing in ``pages/`` names them: they are in the page's choices because
the registry lists them, and each map drawn must be
:func:`saliency_core.attribute`'s for the same image, Score-CAM with the
sidebar's parameter (a link's ``channels=4``), the others with defaults.
"""

from __future__ import annotations

import pytest

from saliency_core import ATTRIBUTION_METHODS, attribute
from saliency_core.methods.registry import by_family, map_title
from tests.app.apptest import PAGES, assert_healthy, charts, coffee, decode_plotly_array, heatmaps
from tests.app.test_methods_in_pages import assert_close

pytestmark = pytest.mark.usefixtures("upload_dir")

VARIANTS = ("grad_cam_plus_plus", "layer_cam", "hires_cam", "score_cam")


def test_the_cam_variants_are_offered_and_drawn_as_attribute_computes_them(new_app, lite0):
    assert set(VARIANTS) < set(by_family()["CAM"])
    at = new_app(PAGES["methods"], methods=",".join(VARIANTS), method="score_cam", channels="4").run()
    assert_healthy(at)
    pick = at.multiselect(key="methods_pick")
    assert pick.value == list(VARIANTS)
    assert {f"{ATTRIBUTION_METHODS[m].title} ({ATTRIBUTION_METHODS[m].citation})" for m in VARIANTS} \
        <= set(pick.options)
    drawn = {t["name"]: decode_plotly_array(t["z"]) for t in heatmaps(charts(at)["grid"])}
    assert list(drawn) == [map_title(m, o) for m in VARIANTS for o in ("score", "loss")]
    assert map_title("score_cam", "loss") == "Score-CAM · loss −L"
    x = lite0.preprocess(coffee()).x
    for m in VARIANTS:
        params = {"channels": 4} if m == "score_cam" else {}
        expected = attribute(lite0, x, [967], m, ("score", "loss"), **params)
        for o in ("score", "loss"):
            assert_close(drawn[map_title(m, o)], expected.maps[o])
    used = at.dataframe[0].value
    row = used[used["method"] == "Score-CAM"].iloc[0]
    assert "channels=4" in row["parameters"] and row["from"] == "the sidebar's Advanced"
