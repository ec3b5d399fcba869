"""A map that is zero or constant (up to float32 rounding) is drawn empty everywhere, and said so.

On the Coffee sample, Grad-CAM's −L map for class 0 is zero everywhere: Compare drew it as solid orange
under a −0.4…0.4 colour bar on the hot scale (Plotly centres an empty range on the value), the Methods
grid and the Faithfulness strip too, while the Saliency page drew it black. A map constant only up to
rounding (three values within 2e-7) was stretched to full contrast and showed speckle.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from saliency_core.evaluation import agreement
from saliency_core.figures import image_figures, method_figures, plots
from saliency_core.figures.figure_style import display_range, flat_note

ZERO = np.zeros((8, 8))
SPECKLE = np.full((8, 8), 0.25)
SPECKLE[2, 3] += 1e-7
SPECKLE[5, 1] -= 1.5e-7  # three values within 2.5e-7: rounding, not structure
LIVE = np.arange(64, dtype=np.float64).reshape(8, 8)


def drawn_empty(trace: dict) -> bool:
    """Every value of the trace is at or below its colour range's bottom: the scale's first colour."""
    z = np.asarray(plots_z(trace))
    return trace["zmin"] < trace["zmax"] and float(z.max()) <= trace["zmin"] + 1e-6 * (trace["zmax"] - trace["zmin"])


def plots_z(trace: dict) -> np.ndarray:
    z = trace["z"]
    if isinstance(z, dict):  # plotly's typed array
        import base64

        shape = [int(n) for n in str(z.get("shape", -1)).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, dtype=np.float64)


def traces(fig) -> list[dict]:
    return [t for t in json.loads(fig.to_json())["data"] if t["type"] == "heatmap"]


@pytest.mark.parametrize("flat", [ZERO, SPECKLE], ids=["zero", "constant up to rounding"])
def test_every_map_figure_draws_a_flat_map_empty(flat):
    figures = {
        "heatmap": plots.heatmap_figure(flat),
        "overlay": image_figures.overlay_figure(np.zeros((8, 8, 3), np.uint8), flat),
        "side by side": plots.side_by_side_figure({"score": LIVE, "loss": flat}),
        "gallery (and the Faithfulness strip)": image_figures.gallery_figure(None, {"loss": [flat]}, ["stage 0"]),
        "methods grid": method_figures.method_grid_figure({"grad_cam": {"score": LIVE, "loss": flat}}),
    }
    for name, fig in figures.items():
        flat_traces = [t for t in traces(fig) if np.ptp(plots_z(t)) < 1e-6]
        assert flat_traces and all(drawn_empty(t) for t in flat_traces), name
    live = traces(figures["side by side"])[0]
    assert (live["zmin"], live["zmax"]) == (0.0, 63.0)  # a map with values keeps its own range


def test_a_shared_scale_of_flat_maps_is_drawn_empty():
    fig = plots.side_by_side_figure({"score": ZERO, "loss": ZERO}, shared_scale=True)
    axis = json.loads(fig.to_json())["layout"]["coloraxis"]
    assert axis["cmin"] == 0 and axis["cmax"] > 0


def test_the_display_range_of_flat_and_live_maps():
    assert display_range(ZERO) == (0.0, 1.0)
    lo, hi = display_range(SPECKLE)
    assert lo == pytest.approx(0.25 - 1.5e-7) and hi > SPECKLE.max()
    assert display_range(LIVE) == (0.0, 63.0)
    assert display_range(LIVE, 10.0, 20.0) == (10.0, 20.0)


def test_a_flat_map_is_named_with_the_reason_where_known():
    assert flat_note("Grad-CAM · −L", ZERO, "Grad-CAM's ReLU left nothing") == \
        "Grad-CAM · −L is zero everywhere, so it is drawn empty: Grad-CAM's ReLU left nothing"
    assert flat_note("Gradient · score", SPECKLE) == \
        "Gradient · score is constant (0.25 everywhere), so it is drawn empty."
    assert flat_note("Gradient · score", LIVE) is None


def test_agreement_with_a_flat_map_is_undefined_and_says_why():
    scores = agreement.agreement(LIVE, SPECKLE)
    assert np.isnan(scores["spearman"]) and np.isnan(scores["pearson"])  # speckle has no ranking
    maps = {"score": LIVE, "Grad-CAM · −L": ZERO}
    assert agreement.undefined_agreement("spearman", maps) == "undefined: Grad-CAM · −L is zero everywhere"
    assert agreement.undefined_agreement("cosine", maps) == "undefined: Grad-CAM · −L is zero everywhere"
    assert agreement.undefined_agreement("pearson", {"a": SPECKLE, "b": LIVE}) == "undefined: a is constant"


def test_the_agreement_matrix_hover_says_why_a_cell_is_undefined():
    import pandas as pd

    labels = ["Gradient · score", "Grad-CAM · −L"]
    frame = pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]], index=labels, columns=labels)
    fig = method_figures.agreement_heatmap(frame, maps={labels[0]: LIVE, labels[1]: ZERO})
    (trace,) = json.loads(fig.to_json())["data"]
    assert trace["customdata"][0][1] == "undefined: Grad-CAM · −L is zero everywhere"
    assert "%{customdata}" in trace["hovertemplate"]


def test_the_batch_jobs_agreement_treats_a_map_constant_up_to_rounding_as_the_pages_do():
    import torch

    from tests.test_tensor_stats import agreement_batch

    batched = agreement_batch(torch.as_tensor(np.stack([LIVE, LIVE])), torch.as_tensor(np.stack([SPECKLE, LIVE])))
    assert np.isnan(float(batched["spearman"][0])) and np.isnan(agreement.agreement(LIVE, SPECKLE)["spearman"])
    assert float(batched["spearman"][1]) == pytest.approx(1.0)
