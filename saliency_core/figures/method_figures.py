"""Plotly figures of the Methods page: the grid of maps and the agreement matrix; built and returned, never shown.

Every text that comes from data (map labels, method titles) goes through
:func:`saliency_core.figures.figure_style.as_text`, as in :mod:`saliency_core.figures.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.agreement import undefined_agreement
from saliency_core.evaluation.method_comparison import AgreementMatrix
from saliency_core.figures.figure_style import (
    as_text,
    display_range,
    finish,
    float32_map,
    require_nonempty,
    template_text,
)
from saliency_core.figures.map_traces import anchor_squares, check_colorscale, heatmap_trace, image_axes
from saliency_core.methods.registry import ATTRIBUTION_METHODS, map_title

SCALES = ("map", "method")
#: Colour scales of the agreement matrix: ρ is diverging around 0, IoU runs from 0 to 1.
AGREEMENT_STYLE = {"spearman": ("RdBu_r", -1.0, 1.0, "Spearman ρ"), "iou_top5": ("Blues", 0.0, 1.0, "top-5 % IoU"),
                   # leaderboard.head_to_head: the share of images on which the row's map beats the column's
                   "wins": ("RdBu_r", 0.0, 1.0, "share of images the row wins")}
MISSING = "—"
#: The Methods grid in pixels: a map's side, the gap under a row (its colour bars, then the next row's titles),
#: and the margins over the first row's titles and under the last row's colour bars.
GRID_CELL_PX, GRID_GAP_PX, GRID_TOP_PX, GRID_BOTTOM_PX = 200, 72, 30, 44
COLORBAR_PX = 8  # a colour bar's thickness


def method_grid_figure(maps: Mapping[str, Mapping[str, np.ndarray]], *, scale: str = "map",
                       colorscale: str = "hot") -> go.Figure:
    """Maps of several methods: one row per method, one column per objective (score, loss).

    Parameters
    ----------
    maps : method name (a key of :data:`~saliency_core.ATTRIBUTION_METHODS`) ->
        objective ("score", "loss") -> (H, W) float array >= 0, all the same
        shape and every method with the same objectives (e.g.
        ``MethodComparison.by_method()``).
    scale : "map" (each map its own colour range, min to max) or "method"
        (the maps of a method share one range, so score and loss compare).
    colorscale : a Plotly colour scale name.

    Returns
    -------
    Figure with one heatmap trace per map (rows in the order given), each
    with a horizontal colour bar under it (its own range, or its method's),
    zoom and pan linked; subplot titles the maps' titles
    (:func:`~saliency_core.methods.registry.map_title`: "Grad-CAM · loss −L");
    hover shows x, y and the value, as on the Saliency page. Its height is
    fixed (:data:`GRID_CELL_PX` per row and the gaps), so a map is drawn
    :data:`GRID_CELL_PX` high on any page at least two of them wide.
    """
    require_nonempty(maps)
    if scale not in SCALES:
        raise InvalidInputError(f"scale must be one of {SCALES}, got {scale!r}")
    check_colorscale(colorscale)
    methods = list(maps)
    unknown = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if unknown:
        raise InvalidInputError(f"maps: unknown method {unknown[0]!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    objectives = list(maps[methods[0]])
    if not objectives:
        raise InvalidInputError(f"maps[{methods[0]!r}]: expected at least one objective")
    zs: dict[str, dict[str, np.ndarray]] = {}
    shape = None
    for m in methods:
        if list(maps[m]) != objectives:
            raise InvalidInputError(f"maps[{m!r}]: expected the objectives {objectives}, got {list(maps[m])}")
        zs[m] = {obj: float32_map(maps[m][obj], f"maps[{m!r}][{obj!r}]") for obj in objectives}
        for obj, z in zs[m].items():
            shape = shape or z.shape
            if z.shape != shape:
                raise InvalidInputError(f"maps[{m!r}][{obj!r}]: expected shape {shape} like the first map, "
                                        f"got {z.shape}")

    titles = [map_title(m, obj) for m in methods for obj in objectives]  # escaped by finish()
    rows = len(methods)
    plot_px = rows * GRID_CELL_PX + (rows - 1) * GRID_GAP_PX  # the subplots' area, between the margins
    fig = make_subplots(rows=rows, cols=len(objectives), subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=GRID_GAP_PX / plot_px)
    # Maps are drawn GRID_CELL_PX high (narrower where wider than the column allows): each bar as wide.
    bar_px = GRID_CELL_PX * min(1.0, shape[1] / shape[0])
    for row, m in enumerate(methods, start=1):
        shared = display_range(np.stack(list(zs[m].values())))
        for col, obj in enumerate(objectives, start=1):
            z = zs[m][obj]
            zmin, zmax = shared if scale == "method" else display_range(z)
            label = map_title(m, obj)
            axis = (row - 1) * len(objectives) + col
            x0, x1 = fig.layout[f"xaxis{'' if axis == 1 else axis}"].domain
            y0 = fig.layout[f"yaxis{'' if axis == 1 else axis}"].domain[0]
            colorbar = dict(orientation="h", x=(x0 + x1) / 2, xanchor="center", y=y0 - 4 / plot_px, yanchor="top",
                            lenmode="pixels", len=bar_px, xpad=0, thickness=COLORBAR_PX, nticks=4,
                            tickfont=dict(size=10), outlinewidth=0)
            fig.add_trace(heatmap_trace(z, label=label, name=label, colorscale=colorscale, zmin=zmin, zmax=zmax,
                                        colorbar=colorbar), row=row, col=col)
    image_axes(fig)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    anchor_squares(fig, rows * len(objectives))
    return finish(fig, None, height=GRID_TOP_PX + plot_px + GRID_BOTTOM_PX,
                  margin=dict(l=10, r=10, t=GRID_TOP_PX, b=GRID_BOTTOM_PX))


def agreement_heatmap(matrix: AgreementMatrix | pd.DataFrame, order: Sequence[str] | None = None, *,
                      metric: str | None = None, title: str | None = None,
                      maps: Mapping[str, np.ndarray] | None = None) -> go.Figure:
    """The agreement matrix as an annotated heatmap, in clustered order.

    Parameters
    ----------
    matrix : an :class:`~saliency_core.evaluation.method_comparison.AgreementMatrix`, or a
        square DataFrame (index and columns the same labels).
    order : the labels in display order (default: the AgreementMatrix's
        clustered order, or the DataFrame's own); must be a permutation of them.
    metric : "spearman" (diverging scale, -1 to 1), "iou_top5" (0 to 1) or
        "wins" (:func:`saliency_core.jobs.leaderboard.head_to_head`, 0 to 1, even at 0.5);
        default the AgreementMatrix's, else "spearman".
    title : optional figure title (shown as text).
    maps : optional label -> (H, W) map: the hover of an undefined cell then
        says why (:func:`saliency_core.evaluation.agreement.undefined_agreement`,
        e.g. "undefined: Grad-CAM · −L is zero everywhere").

    Returns
    -------
    Figure with one heatmap trace; cells annotated with their value to 2
    decimals and NaN as "—"; the first label of ``order`` at the top left.
    """
    if isinstance(matrix, AgreementMatrix):
        order = list(matrix.order) if order is None else list(order)
        metric = metric or matrix.metric
        frame = matrix.values
    elif isinstance(matrix, pd.DataFrame):
        frame = matrix
        order = list(frame.index) if order is None else list(order)
        metric = metric or "spearman"
    else:
        raise InvalidInputError(f"matrix must be an AgreementMatrix or a DataFrame, got {type(matrix).__name__}")
    if metric not in AGREEMENT_STYLE:
        raise InvalidInputError(f"metric must be one of {tuple(AGREEMENT_STYLE)}, got {metric!r}")
    labels = list(frame.index)
    if list(frame.columns) != labels or sorted(map(str, order)) != sorted(map(str, labels)) or len(order) != len(
            labels):
        raise InvalidInputError("matrix must be square with the same labels as rows and columns, and order a "
                                f"permutation of them; got rows {labels}, order {order}")
    values = frame.loc[order, order].to_numpy(dtype=np.float64)
    text = [[MISSING if math.isnan(v) else f"{v:.2f}" for v in row] for row in values]
    why = [[(undefined_agreement(metric, {a: maps[a], b: maps[b]}) if maps and a in maps and b in maps
             else "undefined") if math.isnan(v) else "" for b, v in zip(order, row, strict=True)]
           for a, row in zip(order, values, strict=True)]
    names = [as_text(label) for label in order]
    colorscale, zmin, zmax, what = AGREEMENT_STYLE[metric]
    fig = go.Figure(go.Heatmap(
        z=values.astype(np.float32), x=names, y=names, text=text, texttemplate="%{text}", colorscale=colorscale,
        zmin=zmin, zmax=zmax, hoverongaps=False, colorbar=dict(title=dict(text=template_text(what)), thickness=10),
        customdata=[[as_text(w) for w in row] for row in why],
        hovertemplate=f"%{{y}} vs %{{x}}<br>{template_text(what)} = %{{text}} %{{customdata}}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-40)
    side = 160 + 40 * len(order)
    return finish(fig, title, height=side + 60, margin=dict(l=10, r=10, t=50 if title else 20, b=10))
