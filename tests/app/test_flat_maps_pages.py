"""Every page draws a zero map empty and says why (tests/test_flat_maps.py has the figures alone).

On the Coffee sample, Grad-CAM's −L map for class 0 (tench) is zero everywhere: its ReLU leaves
nothing. Compare drew it solid orange under a −0.4…0.4 colour bar, the Methods grid too, and the
agreement table said "None".
"""

from __future__ import annotations

import numpy as np
import pytest
from test_pages import PAGES, assert_healthy, charts, decode_plotly_array, heatmaps, texts

LOSS = "Grad-CAM · loss −L"
WHY = f"{LOSS} is zero everywhere, so it is drawn empty: Grad-CAM's ReLU left nothing"


def empty(trace: dict) -> bool:
    z = decode_plotly_array(trace["z"])
    return not np.any(z) and trace["zmin"] == 0 and trace["zmax"] > 0


@pytest.mark.slow
def test_compare_draws_the_zero_map_empty_and_the_agreement_says_why(new_app):
    at = new_app(PAGES["compare"], method="grad_cam", target="0").run()
    assert_healthy(at)
    score, loss = heatmaps(charts(at)["side_by_side"])
    assert empty(loss) and not empty(score)
    assert WHY in texts(at.caption)
    (table,) = [df.value for df in at.dataframe if "score vs loss" in df.value.columns]
    cells = table["score vs loss"].astype(str).tolist()
    assert f"undefined: {LOSS} is zero everywhere" in cells and "None" not in cells and "nan" not in cells


@pytest.mark.slow
def test_the_methods_grid_draws_the_zero_map_empty_and_says_why(new_app):
    at = new_app(PAGES["methods"], target="0", methods="gradient,grad_cam").run()
    assert_healthy(at)
    grid = {t["name"]: t for t in heatmaps(charts(at)["grid"])}
    assert empty(grid["Grad-CAM · loss −L"]) and not empty(grid["Grad-CAM · score"])
    assert WHY in texts(at.caption)
    agreement = charts(at)["agreement"]["data"][0]
    reasons = {c for row in agreement["customdata"] for c in row if c}
    assert reasons == {"undefined: Grad-CAM · loss −L is zero everywhere"}, reasons
