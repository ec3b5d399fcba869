"""Tests for saliency_core.figures (plots, image_figures, charts, ...): decode the figures and check what they hold."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from PIL import Image

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import stats
from saliency_core.figures import charts, image_figures, map_files, method_figures, plots

H, W = 6, 8


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1)


@pytest.fixture
def saliency(rng) -> np.ndarray:
    return rng.random((H, W))


@pytest.fixture
def gradients(rng) -> np.ndarray:
    return rng.normal(size=(3, H, W))


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def assert_image_axes(fig: go.Figure) -> None:
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.template == pio.templates["plotly_white"]


# --- heatmap -------------------------------------------------------------------------


def test_heatmap_holds_map_and_gradients(saliency, gradients):
    fig = plots.heatmap_figure(saliency, gradients=gradients, title="score")
    assert len(fig.data) == 1
    trace = fig.data[0]
    assert isinstance(trace, go.Heatmap)
    np.testing.assert_allclose(np.asarray(trace.z), saliency, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(trace.customdata), np.moveaxis(gradients, 0, -1), rtol=1e-6)
    for channel in ("R", "G", "B"):
        assert f"∂/∂{channel}" in trace.hovertemplate
    assert "customdata[2]" in trace.hovertemplate and "%{z" in trace.hovertemplate
    assert trace.colorscale == go.Heatmap(colorscale="hot").colorscale
    assert fig.layout.title.text == "score"
    assert_image_axes(fig)


def test_heatmap_without_gradients_and_range(saliency):
    fig = plots.heatmap_figure(saliency, colorscale="viridis", zmin=0.1, zmax=0.5)
    trace = fig.data[0]
    assert trace.customdata is None and "customdata" not in trace.hovertemplate
    assert (trace.zmin, trace.zmax) == (0.1, 0.5)
    assert trace.colorscale == go.Heatmap(colorscale="viridis").colorscale


def test_heatmap_json_uses_typed_arrays(saliency, gradients):
    data = json.loads(plots.heatmap_figure(saliency, gradients=gradients).to_json())["data"][0]
    assert data["z"]["dtype"] == "f4" and "bdata" in data["z"]
    assert data["customdata"]["shape"].replace(" ", "") == f"{H},{W},3"


def test_heatmap_validation(saliency):
    with pytest.raises(InvalidInputError, match="colorscale"):
        plots.heatmap_figure(saliency, colorscale="no-such-scale")
    with pytest.raises(InvalidInputError, match="gradients"):
        plots.heatmap_figure(saliency, gradients=np.zeros((H, W, 3)))
    with pytest.raises(InvalidInputError, match="2-D"):
        plots.heatmap_figure(np.zeros((3, H, W)))
    with pytest.raises(InvalidInputError, match="zmin"):
        plots.heatmap_figure(saliency, zmin=2.0, zmax=1.0)


def test_clip_percentile_does_not_touch_map():
    m = np.arange(101.0).reshape(1, 101)
    before = m.copy()
    assert plots.clip_percentile(m) == (0.0, 100.0)
    assert plots.clip_percentile(m, 5, 95) == pytest.approx((5.0, 95.0))
    np.testing.assert_array_equal(m, before)
    with pytest.raises(InvalidInputError, match="low, high"):
        plots.clip_percentile(m, 60, 40)


def test_a_collapsed_clip_range_is_a_threshold_not_an_empty_range():
    """95-95 on the slider: Plotly ignores zmin == zmax (it scales to the data), so the range gets a hair of
    width: values up to the 95th percentile are drawn at the bottom of the scale, the rest at the top."""
    m = np.arange(101.0).reshape(1, 101)
    zmin, zmax = plots.clip_percentile(m, 95, 95)
    assert zmin == 95.0 and 95.0 < zmax < 95.001
    rgb = map_files.map_to_rgb(m, "hot", zmin, zmax)[0]
    assert (rgb[:96] == rgb[0]).all() and (rgb[96:] == rgb[-1]).all() and not (rgb[0] == rgb[-1]).all()
    lo, hi = plots.clip_percentile(np.full((4, 4), 2.5), 0, 100)  # a constant map
    assert lo == 2.5 and hi > lo
    lo, hi = plots.clip_percentile(np.zeros((4, 4)), 10, 90)
    assert lo == 0.0 and hi > 0.0


# --- overlay -------------------------------------------------------------------------------


def decode_image_source(trace: go.Image) -> np.ndarray:
    """The pixels of an image trace sent as a PNG data URI (lossless)."""
    import base64
    import io

    from PIL import Image

    head, data = trace.source.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_overlay(image, saliency, gradients):
    fig = image_figures.overlay_figure(image, saliency, opacity=0.3, gradients=gradients)
    img, heat = fig.data
    assert isinstance(img, go.Image) and isinstance(heat, go.Heatmap)
    np.testing.assert_array_equal(decode_image_source(img), image)
    np.testing.assert_allclose(np.asarray(heat.z), saliency, rtol=1e-6)
    assert heat.opacity == 0.3
    assert "∂/∂G" in heat.hovertemplate
    assert_image_axes(fig)


@pytest.mark.parametrize("opacity", [-0.1, 1.5, float("nan"), "0.5", True])
def test_overlay_rejects_bad_opacity(image, saliency, opacity):
    with pytest.raises(InvalidInputError, match="opacity"):
        image_figures.overlay_figure(image, saliency, opacity=opacity)


def test_overlay_rejects_mismatched_image(saliency):
    with pytest.raises(InvalidInputError, match="image"):
        image_figures.overlay_figure(np.zeros((H + 1, W, 3), dtype=np.uint8), saliency)
    with pytest.raises(InvalidInputError, match="image"):
        image_figures.overlay_figure(np.zeros((H, W, 3)), saliency)


# --- side by side ----------------------------------------------------------------------------


def test_side_by_side_linked_axes_and_own_scales(rng, gradients):
    maps = {"score": rng.random((H, W)), "loss": 5 * rng.random((H, W)), "other": rng.random((H, W))}
    fig = plots.side_by_side_figure(maps, gradients={"loss": gradients}, zmin_zmax={"score": (0.2, 0.4)})
    assert len(fig.data) == 3
    for i, (name, trace) in enumerate(zip(maps, fig.data, strict=True), start=1):
        np.testing.assert_allclose(np.asarray(trace.z), maps[name], rtol=1e-6)
        assert fig.layout[f"yaxis{'' if i == 1 else i}"].autorange == "reversed"
        if i > 1:
            assert fig.layout[f"xaxis{i}"].matches == "x"
            assert fig.layout[f"yaxis{i}"].matches == "y"
    assert fig.layout.yaxis.scaleanchor == "x"
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.2, 0.4)
    assert fig.data[1].zmax == pytest.approx(maps["loss"].max())
    assert fig.data[1].customdata is not None and fig.data[0].customdata is None
    # One colour bar per map, centred under its own subplot.
    xs = [trace.colorbar.x for trace in fig.data]
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert [a.text for a in fig.layout.annotations] == ["score", "loss", "other"]


def test_side_by_side_shared_scale(rng):
    maps = {"score": rng.random((H, W)), "loss": 5 * rng.random((H, W))}
    fig = plots.side_by_side_figure(maps, shared_scale=True, titles=["S", "L"])
    assert len(fig.data) == 2 and all(trace.coloraxis == "coloraxis" for trace in fig.data)
    assert fig.layout.coloraxis.cmin == pytest.approx(min(m.min() for m in maps.values()))
    assert fig.layout.coloraxis.cmax == pytest.approx(max(m.max() for m in maps.values()))
    assert [a.text for a in fig.layout.annotations] == ["S", "L"]


def test_side_by_side_validation(saliency):
    with pytest.raises(InvalidInputError, match="shape"):
        plots.side_by_side_figure({"a": saliency, "b": np.ones((H, W + 1))})
    with pytest.raises(InvalidInputError, match="maps"):
        plots.side_by_side_figure({})
    with pytest.raises(InvalidInputError, match="titles"):
        plots.side_by_side_figure({"a": saliency}, titles=["x", "y"])


# --- diverging maps -------------------------------------------------------------------------


def test_difference_figure_symmetric_range(rng):
    a, b = rng.random((H, W)), rng.random((H, W))
    fig = plots.difference_figure(a, b, names=("score", "loss"))
    trace = fig.data[0]
    np.testing.assert_allclose(np.asarray(trace.z), a - b, rtol=1e-5, atol=1e-6)
    m = np.abs(a - b).max()
    assert trace.zmin == pytest.approx(-m) and trace.zmax == pytest.approx(m)
    assert trace.zmid == 0
    # Positive differences are red.
    assert trace.colorscale[-1][1] == "rgb(103,0,31)"
    assert fig.layout.title.text == "score − loss"
    assert_image_axes(fig)


def test_difference_of_equal_maps_uses_unit_range(saliency):
    trace = plots.difference_figure(saliency, saliency).data[0]
    assert (trace.zmin, trace.zmax) == (-1.0, 1.0)


def test_signed_map_shares_the_diverging_scale(rng):
    values = rng.normal(size=(H, W))
    trace = plots.signed_map_figure(values, title="term").data[0]
    diff = plots.difference_figure(values, np.zeros((H, W))).data[0]
    assert trace.zmax == pytest.approx(np.abs(values).max()) and trace.zmin == -trace.zmax
    assert trace.colorscale == diff.colorscale and trace.zmid == 0


def test_normalize_max_divides_by_the_maximum():
    np.testing.assert_allclose(stats.normalize_max(np.array([[1.0, 4.0]])), [[0.25, 1.0]])


# --- histogram and concentration -------------------------------------------------------------


def test_histogram_figure(rng):
    maps = {"score": rng.random((H, W)), "loss": 2 * rng.random((H, W))}
    fig = charts.histogram_figure(maps, bins=10)
    assert [trace.name for trace in fig.data] == ["score", "loss"]
    assert fig.layout.barmode == "overlay"
    assert fig.layout.yaxis.type == "log"
    for trace in fig.data:
        assert len(trace.x) == 10 and sum(trace.y) == H * W and 0 < trace.opacity < 1
    # Shared bin edges so the bars line up.
    np.testing.assert_allclose(fig.data[0].x, fig.data[1].x)
    assert charts.histogram_figure(maps, log_y=False).layout.yaxis.type == "linear"


def test_concentration_figure(rng):
    m = rng.random((H, W))
    fig = charts.concentration_figure({"score": m})
    assert len(fig.data) == 2
    x, y = stats.concentration_curve(m)
    np.testing.assert_allclose(fig.data[0].x, x)
    np.testing.assert_allclose(fig.data[0].y, y)
    diagonal = fig.data[-1]
    assert list(diagonal.x) == [0.0, 1.0] and list(diagonal.y) == [0.0, 1.0]
    assert fig.layout.xaxis.title.text == "share of pixels (most salient first)"
    assert fig.layout.yaxis.title.text == "share of total saliency"
    assert tuple(fig.layout.xaxis.range) == (0, 1) and tuple(fig.layout.yaxis.range) == (0, 1)


# --- gallery -------------------------------------------------------------------------------------


def test_gallery_figure(rng):
    n_images = 3
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n_images)]
    maps = {method: [rng.random((H, W)) for _ in range(n_images)] for method in ("score", "loss")}
    fig = image_figures.gallery_figure(images, maps, ["cat", "dog", "ship"])
    assert len(fig.data) == n_images * (1 + len(maps))
    assert sum(isinstance(t, go.Image) for t in fig.data) == n_images
    for img, expected in zip([t for t in fig.data if isinstance(t, go.Image)], images, strict=True):
        np.testing.assert_array_equal(decode_image_source(img), expected)
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert all(t.showscale is False for t in heatmaps)
    assert [a.text for a in fig.layout.annotations] == ["cat", "dog", "ship"]
    assert fig.layout.yaxis4.title.text == "score" and fig.layout.yaxis7.title.text == "loss"
    n_axes = n_images * 3
    for i in range(2, n_axes + 1):
        assert fig.layout[f"xaxis{i}"].matches == "x" and fig.layout[f"yaxis{i}"].matches == "y"
        assert fig.layout[f"yaxis{i}"].showticklabels is False
    assert fig.layout.yaxis.autorange == "reversed"
    # Row 2, column 3 holds the score map of the third image.
    (trace,) = [t for t in fig.data if t.xaxis == "x6"]
    np.testing.assert_allclose(np.asarray(trace.z), maps["score"][2], rtol=1e-6)
    one_row = image_figures.gallery_figure(images, {"score": maps["score"]}, ["cat", "dog", "ship"])
    assert one_row.layout.height < fig.layout.height


def test_gallery_validation(rng):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    with pytest.raises(InvalidInputError, match="titles"):
        image_figures.gallery_figure([image], {"score": [np.ones((H, W))]}, ["a", "b"])
    with pytest.raises(InvalidInputError, match="score"):
        image_figures.gallery_figure([image], {"score": []}, ["a"])
    with pytest.raises(InvalidInputError, match="shape"):
        image_figures.gallery_figure([image], {"score": [np.ones((H, W + 2))]}, ["a"])


def test_image_row_figure_draws_the_image_then_each_map_on_its_own_scale(rng):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    maps = {"Gradient · score": rng.random((H, W)), "<b>Grad-CAM</b> · loss −L": 5 * rng.random((H, W))}
    fig = image_figures.image_row_figure(image, maps, image_title="the model's crop")
    assert [type(t).__name__ for t in fig.data] == ["Image", "Heatmap", "Heatmap"]
    np.testing.assert_array_equal(decode_image_source(fig.data[0]), image)
    assert [a.text for a in fig.layout.annotations] == ["the model's crop", "Gradient · score",
                                                        "&lt;b&gt;Grad-CAM&lt;/b&gt; · loss −L"]  # text, not HTML
    for trace, z in zip(fig.data[1:], maps.values(), strict=True):
        np.testing.assert_allclose(np.asarray(trace.z), z, rtol=1e-6)
        assert trace.zmax == pytest.approx(z.max()) and trace.showscale is False
    assert fig.layout.xaxis3.matches == "x" and fig.layout.yaxis.autorange == "reversed"
    alone = image_figures.image_row_figure(None, maps)
    assert [type(t).__name__ for t in alone.data] == ["Heatmap", "Heatmap"]
    with pytest.raises(InvalidInputError, match="shape"):
        image_figures.image_row_figure(image, {"a": np.ones((H, W + 1))})
    with pytest.raises(InvalidInputError, match="at least one map"):
        image_figures.image_row_figure(image, {})


def test_signed_map_percentile_range_saturates_outliers():
    values = np.zeros((10, 10))
    values[0, 0] = 100.0  # one extreme pixel
    values[1:, :] = np.linspace(-1, 1, 90).reshape(9, 10)
    full = plots.signed_map_figure(values)
    clipped = plots.signed_map_figure(values, percentile=99)
    assert full.data[0].zmax == 100.0
    assert 0.9 <= clipped.data[0].zmax < 2.0 and clipped.data[0].zmin == -clipped.data[0].zmax
    with pytest.raises(InvalidInputError, match=r"percentile: expected a value in \(0, 100\], got 0"):
        plots.signed_map_figure(values, percentile=0)


def test_gallery_figure_without_images_is_a_grid_of_maps(rng):
    maps = {m: [rng.random((H, W)) for _ in range(4)] for m in ("score", "loss")}
    fig = image_figures.gallery_figure(None, maps, ["original", "fc", "block 16", "stem"])
    assert len(fig.data) == 8 and not any(isinstance(t, go.Image) for t in fig.data)
    assert fig.layout.yaxis.title.text == "score" and fig.layout.yaxis5.title.text == "loss"
    (trace,) = [t for t in fig.data if t.xaxis == "x7"]  # row 2 (loss), column 3
    np.testing.assert_allclose(np.asarray(trace.z), maps["loss"][2], rtol=1e-6)


def test_curves_figure_draws_one_line_per_curve():
    x = np.linspace(0, 1, 5)
    fig = charts.curves_figure(x, {"score": x, "random order": 1 - x})
    assert [t.name for t in fig.data] == ["score", "random order"]
    assert fig.data[1].line.dash == "dot"
    with pytest.raises(InvalidInputError, match=r"curves\['bad'\]: expected shape \(5,\)"):
        charts.curves_figure(x, {"bad": np.zeros(3)})


def test_hover_text_is_dark_on_white_over_any_map(saliency, gradients, image):
    figures = [
        plots.heatmap_figure(saliency, gradients=gradients, colorscale="hot"),
        image_figures.overlay_figure(image, saliency, gradients=gradients),
        plots.side_by_side_figure({"score": saliency, "loss": saliency / 2}, gradients={"score": gradients}),
        plots.difference_figure(saliency, saliency / 2),
        image_figures.gallery_figure([image], {"score": [saliency], "loss": [saliency]}, ["x"]),
    ]
    for fig in figures:
        label = fig.layout.hoverlabel
        assert (label.bgcolor, label.font.color) == ("white", "#111111"), fig.layout.title.text


def test_text_from_data_is_never_rendered_as_plotly_html(saliency):
    hostile = '<a href="http://127.0.0.1:8622/phish">docs</a> %{x} <b>'
    figures = [
        charts.values_histogram_figure({hostile: np.arange(10.0)}, x_title=hostile),
        charts.curves_figure(np.linspace(0, 1, 3), {hostile: np.zeros(3)}, title=hostile, x_title=hostile),
        plots.heatmap_figure(saliency, title=hostile),
        image_figures.gallery_figure(None, {"score": [saliency]}, [hostile]),
    ]
    for fig in figures:
        spec = fig.to_json()
        assert "<a href" not in spec and "<b>" not in spec and "&lt;a href" in spec, spec[:300]
        for trace in fig.data:
            assert "%{x} &lt;" not in (trace.hovertemplate or "")  # the literal %{x} is no template variable


# What the browser may get for a 2048 x 2048 map with per-channel hover: 114 MB before, more than it could
# turn into a string ("RangeError: Invalid string length"); shrunk to 512 x 512 block means it is about 6 MB.
LARGE_FIGURE_BOUND = 8_000_000


def test_a_2048_px_map_is_drawn_as_block_means_and_the_downloads_keep_every_pixel():
    from saliency_core.figures.figure_style import MAX_DISPLAY_SIDE, block_mean

    rng = np.random.default_rng(0)
    side = 2048
    z = rng.random((side, side), dtype=np.float32)
    grads = rng.normal(size=(3, side, side)).astype(np.float32)
    img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    z[100, 2000] = 50.0  # one bright pixel still shows in its block's mean

    fig = plots.heatmap_figure(z, gradients=grads)
    assert len(fig.to_json()) < LARGE_FIGURE_BOUND
    (trace,) = fig.data
    shown = np.asarray(trace.z)
    assert shown.shape == (MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE)
    np.testing.assert_allclose(shown[0, 0], z[:4, :4].mean(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(trace.customdata)[0, 0], grads[:, :4, :4].mean(axis=(1, 2)), rtol=1e-5)
    assert shown[100 // 4, 2000 // 4] > 3  # 50 / 16 plus the rest of its block
    # The blocks sit on the full map's pixel coordinates: block (i, j) centred on pixel (4i + 1.5, 4j + 1.5).
    assert (trace.x0, trace.dx, trace.y0, trace.dy) == (1.5, 4, 1.5, 4)
    assert "4×4 block" in trace.hovertemplate and "downloads are full size" in trace.hovertemplate

    overlay = image_figures.overlay_figure(img, z, gradients=grads)
    assert len(overlay.to_json()) < LARGE_FIGURE_BOUND + 1_000_000  # and the crop under it, as a PNG
    picture = overlay.data[0]
    assert decode_image_source(picture).shape == (MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE, 3)
    assert (picture.x0, picture.dx) == (1.5, 4)
    np.testing.assert_array_equal(decode_image_source(picture)[0, 0], np.rint(block_mean(img, 4)[0, 0]))

    pair = plots.side_by_side_figure({"score": z, "loss": z / 2}, gradients={"score": grads, "loss": grads})
    assert len(pair.to_json()) < 2 * LARGE_FIGURE_BOUND
    grid = method_figures.method_grid_figure({"gradient": {"score": z, "loss": z}, "smoothgrad": {"score": z,
                                                                                                  "loss": z}})
    assert all(np.asarray(t.z).shape == (MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE) for t in grid.data)
    assert len(plots.difference_figure(z, z / 3).to_json()) < LARGE_FIGURE_BOUND

    png = map_files.map_png(z)  # the download: one pixel per map pixel
    assert Image.open(io.BytesIO(png)).size == (side, side)


def test_maps_up_to_the_display_size_are_drawn_exactly_and_the_csv_keeps_every_pixel_of_larger_ones():
    from saliency_core.figures.figure_style import MAX_DISPLAY_SIDE

    rng = np.random.default_rng(1)
    exact = rng.random((MAX_DISPLAY_SIDE, 300), dtype=np.float32)
    (trace,) = plots.heatmap_figure(exact).data
    np.testing.assert_array_equal(np.asarray(trace.z), exact)
    assert trace.x0 is None and "block" not in trace.hovertemplate

    larger = rng.random((600, 520), dtype=np.float32)  # 2 x 2 blocks, the last row and column partial
    (trace,) = plots.heatmap_figure(larger).data
    assert np.asarray(trace.z).shape == (300, 260)
    csv = map_files.map_csv(larger, rng.normal(size=(3, 600, 520)))
    frame = pd.read_csv(io.BytesIO(csv))
    assert len(frame) == 600 * 520 and frame["x"].max() == 519 and frame["y"].max() == 599
