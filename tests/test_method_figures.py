"""The Methods page's figures: one trace per map, the right titles and colour ranges, text kept as text."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.method_comparison import agreement_matrix
from saliency_core.figures.method_figures import agreement_heatmap, method_grid_figure
from saliency_core.methods import registry as attribution


def grid_maps(methods=("gradient", "grad_cam", "smoothgrad"), size: int = 8) -> dict:
    rng = np.random.default_rng(0)
    return {m: {"score": rng.random((size, size)), "loss": 3 * rng.random((size, size))} for m in methods}


def test_grid_has_a_trace_per_map_and_titles_that_mark_minus_l():
    maps = grid_maps()
    fig = method_grid_figure(maps)
    assert len(fig.data) == 6 and all(t.type == "heatmap" for t in fig.data)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Gradient · score", "Gradient · loss", "Grad-CAM · score", "Grad-CAM · loss −L",
                      "SmoothGrad · score", "SmoothGrad · loss"]
    assert "x=%{x}, y=%{y}" in fig.data[0].hovertemplate and "%{z" in fig.data[0].hovertemplate
    np.testing.assert_array_equal(np.asarray(fig.data[3].z), maps["grad_cam"]["loss"].astype(np.float32))



def test_every_map_of_the_grid_has_its_colour_bar_under_it():
    fig = method_grid_figure(grid_maps())
    assert all(t.showscale is not False for t in fig.data)  # Plotly's default: a bar for each heatmap
    height = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b  # the subplots' area, in pixels
    for i, trace in enumerate(fig.data, start=1):
        bar = trace.colorbar
        x0, x1 = fig.layout[f"xaxis{'' if i == 1 else i}"].domain
        y0, _ = fig.layout[f"yaxis{'' if i == 1 else i}"].domain
        assert bar.orientation == "h" and bar.xanchor == "center" and bar.x == pytest.approx((x0 + x1) / 2)
        assert bar.yanchor == "top" and 0 < (y0 - bar.y) * height < 10  # just under its map
        assert bar.lenmode == "pixels" and bar.len == 200  # as wide as the map is drawn
    rows = [round(t.colorbar.y, 6) for t in fig.data]
    assert len(set(rows)) == 3 and rows[0] == rows[1]  # one row of bars per method
    # The bars of the last row fit in the bottom margin, with their tick labels.
    assert fig.data[-1].colorbar.y * height + fig.layout.margin.b >= 8 + 20


def test_grid_colour_scale_per_map_or_per_method():
    maps = grid_maps(("gradient",))
    score, loss = maps["gradient"]["score"], maps["gradient"]["loss"]
    per_map = method_grid_figure(maps, scale="map")
    assert per_map.data[0].zmax == pytest.approx(score.max()) and per_map.data[1].zmax == pytest.approx(loss.max())
    per_method = method_grid_figure(maps, scale="method", colorscale="viridis")
    top, bottom = max(score.max(), loss.max()), min(score.min(), loss.min())
    for trace in per_method.data:
        assert (trace.zmin, trace.zmax) == (pytest.approx(bottom), pytest.approx(top))


def test_grid_titles_are_escaped(monkeypatch):
    spec = attribution.ATTRIBUTION_METHODS["gradient"]
    monkeypatch.setitem(attribution.ATTRIBUTION_METHODS, "gradient",
                        dataclasses.replace(spec, title='<a href="x">Grad</a> & co'))
    fig = method_grid_figure(grid_maps(("gradient",)))
    assert fig.layout.annotations[0].text == '&lt;a href="x"&gt;Grad&lt;/a&gt; &amp; co · score'
    assert fig.data[0].name.startswith("&lt;a href")


def test_grid_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="scale"):
        method_grid_figure(grid_maps(), scale="global")
    with pytest.raises(InvalidInputError, match="unknown method"):
        method_grid_figure({"no_such_method": {"score": np.ones((2, 2))}})
    maps = grid_maps()
    maps["grad_cam"] = {"score": np.ones((8, 8))}
    with pytest.raises(InvalidInputError, match="objectives"):
        method_grid_figure(maps)
    with pytest.raises(InvalidInputError, match="at least one"):
        method_grid_figure({})


def test_agreement_heatmap_in_clustered_order_with_two_decimals_and_dashes_for_nan():
    rng = np.random.default_rng(1)
    maps = {"<b>a</b>": rng.random((6, 6)), "flat": np.zeros((6, 6)), "b": rng.random((6, 6))}
    maps["a twin"] = maps["<b>a</b>"] * 2
    matrix = agreement_matrix(maps)
    fig = agreement_heatmap(matrix)
    assert len(fig.data) == 1
    trace = fig.data[0]
    names = list(trace.x)
    assert names == list(trace.y) == [n.replace("<", "&lt;").replace(">", "&gt;") for n in matrix.order]
    ordered = matrix.ordered().to_numpy()
    for i, row in enumerate(trace.text):
        for j, cell in enumerate(row):
            assert cell == ("—" if math.isnan(ordered[i, j]) else f"{ordered[i, j]:.2f}")
    assert (trace.zmin, trace.zmax, trace.colorscale[0][1]) == (-1.0, 1.0, "rgb(5,48,97)")
    assert fig.layout.yaxis.autorange == "reversed"
    iou = agreement_heatmap(agreement_matrix(maps, "iou_top5"), title="<i>IoU</i>")
    assert iou.data[0].zmin == 0.0 and iou.layout.title.text == "&lt;i&gt;IoU&lt;/i&gt;"


def test_agreement_heatmap_from_a_dataframe_and_bad_orders():
    frame = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["x", "y"], columns=["x", "y"])
    fig = agreement_heatmap(frame, ["y", "x"])
    assert list(fig.data[0].x) == ["y", "x"] and list(fig.data[0].text[0]) == ["1.00", "0.50"]
    with pytest.raises(InvalidInputError, match="permutation"):
        agreement_heatmap(frame, ["x", "z"])
    with pytest.raises(InvalidInputError, match="metric"):
        agreement_heatmap(frame, metric="pearson")
