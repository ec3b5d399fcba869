"""Plotly figures that draw the image the model saw with its maps: the overlay, the cs231n gallery, and one
image with its maps in a row.

Built and returned, never shown; the traces and axes are those of every map
figure (:mod:`saliency_core.figures.map_traces`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saliency_core.errors import InvalidInputError
from saliency_core.figures.figure_style import finish, float32_map, require_nonempty
from saliency_core.figures.map_traces import (
    GRADIENT_PREFIX,
    anchor_squares,
    as_customdata,
    as_image,
    as_range,
    check_colorscale,
    heatmap_trace,
    image_axes,
    image_trace,
)


def overlay_figure(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    opacity: float = 0.5,
    colorscale: str = "hot",
    zmin: float | None = None,
    zmax: float | None = None,
    gradients: np.ndarray | None = None,
    title: str | None = None,
    channel_prefix: str = GRADIENT_PREFIX,
) -> go.Figure:
    """The displayed crop with the saliency heatmap drawn over it.

    image : (H, W, 3) uint8, the crop the model saw.
    saliency : (H, W) float array, >= 0, pixel for pixel with ``image``.
    opacity : heatmap opacity in [0, 1].
    gradients : optional (3, H, W) signed gradients, shown on hover.
    """
    z = float32_map(saliency)
    img = as_image(image, z.shape)
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float, np.number)) or not 0.0 <= opacity <= 1.0:
        raise InvalidInputError(f"opacity: expected a number in [0, 1], got {opacity!r}")
    zmin, zmax = as_range(zmin, zmax)
    fig = go.Figure(
        [
            # The heatmap answers hover; the image underneath would only add noise.
            image_trace(img, hoverinfo="skip", name="image"),
            heatmap_trace(
                z,
                customdata=as_customdata(gradients, z.shape, "gradients"),
                colorscale=check_colorscale(colorscale),
                zmin=zmin,
                zmax=zmax,
                opacity=float(opacity),
                name="saliency",
                channel_prefix=channel_prefix,
            ),
        ]
    )
    image_axes(fig)
    anchor_squares(fig, 1)
    return finish(fig, title)


def gallery_figure(
    images: Sequence[np.ndarray] | None,
    maps: Mapping[str, Sequence[np.ndarray]],
    titles: Sequence[str],
    *,
    colorscale: str = "hot",
) -> go.Figure:
    """The cs231n saliency figure: images on top, one row per map.

    images : sequence of (H, W, 3) uint8 crops, one column each; None for a
        grid of maps only (e.g. one column per randomisation stage).
    maps : map name ("score", "loss", ...) -> one (H, W) map per column.
    titles : one column title per image (e.g. its class name).
    Each map uses its own colour range (no colour bars); axes are linked and
    carry no tick labels; the height grows with the number of rows.
    """
    n_cols = len(images) if images is not None else len(titles)
    if n_cols == 0:
        raise InvalidInputError("images: expected at least one image, got none")
    if len(titles) != n_cols:
        raise InvalidInputError(f"titles: expected {n_cols} titles (one per image), got {len(titles)}")
    imgs = [as_image(img, None, f"images[{i}]") for i, img in enumerate(images)] if images is not None else None
    for name, row_maps in maps.items():
        if len(row_maps) != n_cols:
            raise InvalidInputError(f"maps[{name!r}]: expected {n_cols} maps (one per image), got {len(row_maps)}")
    check_colorscale(colorscale)

    n_rows = (imgs is not None) + len(maps)
    first_map_row = 1 + (imgs is not None)
    # No shared_xaxes/shared_yaxes here: in a grid they chain each column to
    # its bottom axis, which would loop with the all-to-"x" links below.
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        column_titles=[str(t) for t in titles],
        horizontal_spacing=0.01,
        vertical_spacing=0.02,
    )
    for col in range(1, n_cols + 1):
        if imgs is not None:
            fig.add_trace(image_trace(imgs[col - 1], name=str(titles[col - 1])), row=1, col=col)
        shape = imgs[col - 1].shape[:2] if imgs is not None else None
        for row, (name, row_maps) in enumerate(maps.items(), start=first_map_row):
            z = float32_map(row_maps[col - 1], f"maps[{name!r}][{col - 1}]")
            shape = shape or z.shape
            if z.shape != shape:
                raise InvalidInputError(
                    f"maps[{name!r}][{col - 1}]: expected shape {shape} like its image, got {z.shape}"
                )
            fig.add_trace(
                heatmap_trace(z, label=name, name=name, colorscale=colorscale, showscale=False),
                row=row,
                col=col,
            )
    image_axes(fig)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    # Map names label the rows on the left, as in the cs231n figure.
    for row, name in enumerate(maps, start=first_map_row):
        fig.update_yaxes(title_text=name, row=row, col=1)
    anchor_squares(fig, n_rows * n_cols)
    return finish(fig, None, height=60 + 200 * n_rows)


def image_row_figure(
    image: np.ndarray | None,
    maps: Mapping[str, np.ndarray],
    *,
    image_title: str = "image",
    colorscale: str = "hot",
    height: int = 190,
) -> go.Figure:
    """One image and its maps in one row: the image the model saw, then each map on its own colour scale.

    image : (H, W, 3) uint8 crop, or None for the maps alone.
    maps : title -> (H, W) map >= 0, the image's height and width.
    Each map uses its own colour range (no colour bars: the figure is small); axes are linked and carry no
    tick labels; subplot titles ``image_title`` and the maps' titles.
    """
    require_nonempty(maps)
    img = as_image(image, None, "image") if image is not None else None
    check_colorscale(colorscale)
    zs = {title: float32_map(z, f"maps[{title!r}]") for title, z in maps.items()}
    shape = img.shape[:2] if img is not None else next(iter(zs.values())).shape
    for title, z in zs.items():
        if z.shape != shape:
            raise InvalidInputError(f"maps[{title!r}]: expected shape {shape} like the first, got {z.shape}")
    titles = ([image_title] if img is not None else []) + [str(t) for t in zs]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.02)
    col = 1
    if img is not None:
        fig.add_trace(image_trace(img, name=image_title), row=1, col=1)
        col = 2
    for title, z in zs.items():
        fig.add_trace(heatmap_trace(z, label=title, name=title, colorscale=colorscale, showscale=False), row=1,
                      col=col)
        col += 1
    image_axes(fig)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    anchor_squares(fig, len(titles))
    return finish(fig, None, height=height, margin=dict(l=0, r=0, t=24, b=0))


OBJECT_GRID_PX = 4  # the invisible points that make the image box-selectable, one every this many pixels


def object_figure(image: np.ndarray, box: Sequence[int] | None = None, *, title: str | None = None) -> go.Figure:
    """The crop, to draw the object's box on (Plotly's box select; the plot's coordinates are pixels, pixel
    (r, c) centred on x = c, y = r), with ``box`` (x0, y0, x1, y1, x1 and y1 exclusive) outlined if given.

    image : (H, W, 3) uint8, the crop the model saw.
    An invisible grid of points lies over the image: Plotly selects only over traces that have points.
    """
    img = as_image(image, None)
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h:OBJECT_GRID_PX, 0:w:OBJECT_GRID_PX]
    fig = go.Figure([
        image_trace(img, hoverinfo="skip", name="image"),
        go.Scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", marker={"opacity": 0, "size": 4},
                   hoverinfo="skip", showlegend=False, name="pixels", unselected={"marker": {"opacity": 0}},
                   selected={"marker": {"opacity": 0}}),
    ])
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        fig.add_shape(type="rect", x0=x0 - 0.5, y0=y0 - 0.5, x1=x1 - 0.5, y1=y1 - 0.5,
                      line={"color": "#00e5ff", "width": 2}, fillcolor="rgba(0,229,255,0.12)")
    image_axes(fig)
    anchor_squares(fig, 1)
    return finish(fig, title, dragmode="select", clickmode="none", height=340)
