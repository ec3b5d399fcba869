"""Plotly figures of saliency maps; built and returned, never shown.

One map as a heatmap, several side by side, and signed maps on a diverging
scale. The traces, axes and input checks they share (pixel coordinates,
large maps drawn as block means, colour scales) are
:mod:`saliency_core.figures.map_traces`; figures that also draw the image
are :mod:`saliency_core.figures.image_figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saliency_core.errors import InvalidInputError
from saliency_core.figures.figure_style import display_range, finish, float32_map, require_nonempty
from saliency_core.figures.map_traces import (
    GRADIENT_PREFIX,
    anchor_squares,
    as_customdata,
    as_range,
    check_colorscale,
    heatmap_trace,
    image_axes,
)

# "RdBu" runs red -> blue in Plotly; reversed, positive values are red.
DIVERGING_SCALE = "RdBu_r"


def _symmetric_range(values: np.ndarray, percentile: float = 100.0) -> float:
    """Half-width m of a zero-centred colour range: a percentile of |values| (100 = max), or 1 if all zero."""
    m = float(np.percentile(np.abs(values), percentile))
    if m <= 0:
        m = float(np.max(np.abs(values)))
    return m if m > 0 else 1.0


def _diverging_figure(values: np.ndarray, title: str | None, label: str, percentile: float = 100.0) -> go.Figure:
    m = _symmetric_range(values, percentile)
    fig = go.Figure(heatmap_trace(values, label=label, colorscale=DIVERGING_SCALE, zmin=-m, zmax=m, zmid=0.0))
    image_axes(fig)
    anchor_squares(fig, 1)
    return finish(fig, title)


# --- public figures ---------------------------------------------------------------


def clip_percentile(saliency: np.ndarray, low: float = 0.0, high: float = 100.0) -> tuple[float, float]:
    """Colour range ``(zmin, zmax)`` that clips the map at two percentiles.

    saliency : (H, W) float array
    low, high : percentiles with 0 <= low <= high <= 100.
    Purely for display: pass the result as ``zmin``/``zmax``; the map itself
    is never changed. A range collapsed to one value (``low == high``, or a
    constant map) becomes a threshold: ``zmax`` a hair above ``zmin``, so that
    values up to it are drawn at the bottom of the scale and larger ones at
    the top (Plotly would otherwise ignore an empty range and scale to the data).
    """
    arr = float32_map(saliency, signed=True)
    if not (0.0 <= low <= high <= 100.0):
        raise InvalidInputError(f"low, high: expected 0 <= low <= high <= 100, got {low!r}, {high!r}")
    zmin, zmax = (float(v) for v in np.percentile(arr, [low, high]))
    if zmax <= zmin:
        spread = float(arr.max() - arr.min()) if arr.size else 0.0
        zmax = zmin + max(spread, abs(zmin), 1e-30) * 1e-6
    return zmin, zmax


def heatmap_figure(
    saliency: np.ndarray,
    *,
    gradients: np.ndarray | None = None,
    colorscale: str = "hot",
    zmin: float | None = None,
    zmax: float | None = None,
    title: str | None = None,
    channel_prefix: str = GRADIENT_PREFIX,
) -> go.Figure:
    """One saliency map as a heatmap.

    saliency : (H, W) float array, >= 0
    gradients : optional (3, H, W) signed gradients (or another method's
        per-channel attributions), shown on hover, each named ``channel_prefix`` + R/G/B.
    zmin, zmax : optional display range (see :func:`clip_percentile`).
    """
    z = float32_map(saliency)
    zmin, zmax = as_range(zmin, zmax)
    fig = go.Figure(
        heatmap_trace(
            z,
            customdata=as_customdata(gradients, z.shape, "gradients"),
            colorscale=check_colorscale(colorscale),
            zmin=zmin,
            zmax=zmax,
            channel_prefix=channel_prefix,
        )
    )
    image_axes(fig)
    anchor_squares(fig, 1)
    return finish(fig, title)


def side_by_side_figure(
    maps: Mapping[str, np.ndarray],
    *,
    gradients: Mapping[str, np.ndarray] | None = None,
    colorscale: str = "hot",
    shared_scale: bool = False,
    zmin_zmax: Mapping[str, tuple[float, float]] | None = None,
    titles: Sequence[str] | None = None,
    channel_prefix: str = GRADIENT_PREFIX,
) -> go.Figure:
    """Several maps of the same image in one row, zoom and pan linked.

    maps : name -> (H, W) float array, >= 0; all the same shape.
    gradients : optional name -> (3, H, W) signed gradients for hover.
    shared_scale : one colour axis for all maps, from the global min to the
        global max (of ``zmin_zmax`` where given); otherwise each map gets
        its own colour bar under its subplot.
    zmin_zmax : optional name -> (zmin, zmax) display range per map.
    titles : subplot titles, default the map names.
    """
    require_nonempty(maps)
    names = list(maps)
    zs = {name: float32_map(maps[name], f"maps[{name!r}]") for name in names}
    shape = zs[names[0]].shape
    for name, z in zs.items():
        if z.shape != shape:
            raise InvalidInputError(f"maps[{name!r}]: expected shape {shape} like the first map, got {z.shape}")
    gradients = gradients or {}
    zmin_zmax = zmin_zmax or {}
    unknown = (set(gradients) | set(zmin_zmax)) - set(names)
    if unknown:
        raise InvalidInputError(f"gradients/zmin_zmax: names {sorted(unknown)} are not in maps")
    titles = list(titles) if titles is not None else names
    if len(titles) != len(names):
        raise InvalidInputError(f"titles: expected {len(names)} titles, got {len(titles)}")
    check_colorscale(colorscale)
    ranges = {}
    for name in names:
        zmin, zmax = as_range(*zmin_zmax.get(name, (None, None)))
        ranges[name] = display_range(zs[name], zmin, zmax)

    n = len(names)
    fig = make_subplots(
        rows=1, cols=n, shared_xaxes=True, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04
    )
    for col, name in enumerate(names, start=1):
        zmin, zmax = ranges[name]
        common = dict(
            customdata=as_customdata(gradients.get(name), shape, f"gradients[{name!r}]"),
            label=name,
            name=name,
            channel_prefix=channel_prefix,
        )
        if shared_scale:
            trace = heatmap_trace(zs[name], coloraxis="coloraxis", **common)
        else:
            # A horizontal bar at the bottom, under its own subplot and no
            # wider than it, so n bars never overlap each other or the plots.
            x0, x1 = fig.layout[f"xaxis{'' if col == 1 else col}"].domain
            colorbar = dict(
                orientation="h",
                x=(x0 + x1) / 2,
                xanchor="center",
                y=0,
                yref="container",
                yanchor="bottom",
                len=0.9 * (x1 - x0),
                thickness=10,
            )
            trace = heatmap_trace(zs[name], colorscale=colorscale, zmin=zmin, zmax=zmax, colorbar=colorbar, **common)
        fig.add_trace(trace, row=1, col=col)
    image_axes(fig)
    anchor_squares(fig, n)
    if shared_scale:
        cmin, cmax = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
        fig.update_layout(
            coloraxis=dict(
                colorscale=colorscale,
                cmin=cmin,
                cmax=cmax,
                colorbar=dict(thickness=10),
            )
        )
    bottom = 30 if shared_scale else 80
    # Fixed height sized for a ~900 px wide page, so the square-pixel
    # constraint leaves little empty space above and below the maps.
    cell = min(450.0, 880.0 / n) * shape[0] / shape[1]
    return finish(fig, None, margin=dict(l=10, r=10, t=40, b=bottom), height=int(cell + 40 + bottom))


def difference_figure(
    a: np.ndarray,
    b: np.ndarray,
    *,
    title: str | None = None,
    names: tuple[str, str] = ("score", "loss"),
) -> go.Figure:
    """``a - b`` on a diverging scale, positive red, zero white, negative blue.

    a, b : (H, W) float arrays of the same shape; usually each first scaled
        by :func:`~saliency_core.evaluation.stats.normalize_max` so their different magnitudes cancel.
    The colour range is symmetric, ``[-m, m]`` with ``m = max |a - b|``
    (1 when the maps are equal), so zero is always the middle colour.
    """
    za = float32_map(a, "a", signed=True)
    zb = float32_map(b, "b", signed=True)
    if za.shape != zb.shape:
        raise InvalidInputError(f"b: expected the same shape as a {za.shape}, got {zb.shape}")
    label = f"{names[0]} − {names[1]}"
    return _diverging_figure(za - zb, title if title is not None else label, label)


def signed_map_figure(values: np.ndarray, *, title: str | None = None, percentile: float = 100.0) -> go.Figure:
    """A signed (H, W) map on the same symmetric diverging scale as :func:`difference_figure`.

    values : (H, W) float array, any sign (e.g. one term of the loss-gradient
        decomposition).
    percentile : the colour range is ``±`` this percentile of ``|values|``;
        below 100 the few extreme pixels saturate instead of washing out the rest.
    """
    if not 0 < percentile <= 100:
        raise InvalidInputError(f"percentile: expected a value in (0, 100], got {percentile}")
    return _diverging_figure(float32_map(values, "values", signed=True), title, "value", percentile)
