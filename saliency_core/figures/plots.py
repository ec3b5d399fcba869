"""Plotly figures of saliency maps; built and returned, never shown.

Every image-like figure uses pixel coordinates, x = column and y = row, both
starting at 0 in the top-left corner: the y axis runs downwards
(``autorange="reversed"``) and pixels are square (``scaleanchor``). Images
are ``go.Image`` traces of the (H, W, 3) uint8 crop the model saw; maps are
``go.Heatmap`` traces drawn on top of the same coordinates.

Arrays are handed to Plotly as numpy float32, which Plotly >= 6 sends as
compact typed arrays rather than long JSON lists. Maps and images with a side
longer than :data:`~saliency_core.figures.figure_style.MAX_DISPLAY_SIDE` are drawn as
means of pixel blocks, placed on the same pixel coordinates, and the hover
says so (:func:`_heatmap`, :func:`_image_trace`); downloads (``export``) keep
the full map.

Colour scales are any Plotly named scale ("hot", "viridis", "gray", and
their "_r" reverses); the default "hot" matches the cs231n notebook's
``cmap=plt.cm.hot``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.stats import normalize_max
from saliency_core.figures.figure_style import (
    as_text,
    block_mean,
    display_factor,
    display_range,
    finish,
    float32_map,
    require_nonempty,
    template_text,
)

__all__ = [
    "as_text",
    "clip_percentile",
    "difference_figure",
    "gallery_figure",
    "heatmap_figure",
    "normalize_max",
    "overlay_figure",
    "side_by_side_figure",
    "signed_map_figure",
]

# "RdBu" runs red -> blue in Plotly; reversed, positive values are red.
DIVERGING_SCALE = "RdBu_r"
CHANNELS = ("R", "G", "B")
#: How hover names the per-channel values: "∂/∂R" for gradients; e.g. "attribution " for another method's values.
GRADIENT_PREFIX = "∂/∂"


# --- validation ---------------------------------------------------------------


def _as_image(image: np.ndarray, shape: tuple[int, int] | None, name: str = "image") -> np.ndarray:
    """Validate an (H, W, 3) uint8 image, matching ``shape`` (H, W) if given."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InvalidInputError(f"{name}: expected an (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
    if shape is not None and img.shape[:2] != shape:
        raise InvalidInputError(f"{name}: expected height and width {shape} like the map, got {img.shape[:2]}")
    return img


def _as_customdata(gradients: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    """(3, H, W) signed gradients -> (H, W, 3) float32 for per-pixel hover."""
    if gradients is None:
        return None
    grads = np.asarray(gradients)
    if grads.shape != (3, *shape):
        raise InvalidInputError(f"{name}: expected shape {(3, *shape)}, got {grads.shape}")
    if not np.issubdtype(grads.dtype, np.number) or not np.all(np.isfinite(grads)):
        raise InvalidInputError(f"{name}: expected finite numeric values")
    return np.moveaxis(grads, 0, -1).astype(np.float32)


def _check_colorscale(colorscale: str) -> str:
    try:
        go.Heatmap(colorscale=colorscale)
    except ValueError as exc:
        raise InvalidInputError(
            f"colorscale: expected a Plotly colour scale name such as 'hot' or 'viridis', got {colorscale!r}"
        ) from exc
    return colorscale


def _as_range(zmin: float | None, zmax: float | None) -> tuple[float | None, float | None]:
    for name, value in (("zmin", zmin), ("zmax", zmax)):
        if value is not None and not math.isfinite(value):
            raise InvalidInputError(f"{name}: expected a finite number or None, got {value!r}")
    if zmin is not None and zmax is not None and zmin > zmax:
        raise InvalidInputError(f"zmin, zmax: expected zmin <= zmax, got {zmin!r} > {zmax!r}")
    return zmin, zmax


# --- building blocks ------------------------------------------------------------


def _hovertemplate(label: str, with_gradients: bool, channel_prefix: str = GRADIENT_PREFIX, block: int = 1) -> str:
    where = "x=%{x}, y=%{y}"
    if block > 1:
        where += f" (centre of a {block}×{block} block: mean values, shrunk for display; downloads are full size)"
    template = f"{where}<br>{template_text(label)}=%{{z:.4g}}"
    if with_gradients:
        prefix = template_text(channel_prefix)
        template += "<br>" + ", ".join(f"{prefix}{ch}=%{{customdata[{i}]:.3g}}" for i, ch in enumerate(CHANNELS))
    return template + "<extra></extra>"


def _display_grid(f: int) -> dict[str, float]:
    """Trace coordinates of f x f blocks: each block's centre on the full image's pixel coordinates."""
    return {} if f == 1 else dict(x0=(f - 1) / 2, dx=f, y0=(f - 1) / 2, dy=f)


def _image_trace(img: np.ndarray, **kwargs: object) -> go.Image:
    """An (H, W, 3) uint8 image as a PNG data URI: a fifth of the bytes of a pixel array
    as JSON, and the browser decodes it natively instead of drawing pixel by pixel.
    Larger than the display size, it is shrunk to block means like the map over it."""
    f = display_factor(img.shape)
    if f > 1:
        img = np.rint(block_mean(img, f)).astype(np.uint8)
        kwargs = {**_display_grid(f), **kwargs}
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), "RGB").save(buf, format="PNG", compress_level=1)
    return go.Image(source="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), **kwargs)


def _heatmap(
    z: np.ndarray,
    *,
    customdata: np.ndarray | None = None,
    label: str = "saliency",
    name: str | None = None,
    channel_prefix: str = GRADIENT_PREFIX,
    **kwargs: object,
) -> go.Heatmap:
    """A heatmap of an (H, W) map on pixel coordinates, with (H, W, 3) ``customdata`` for hover.

    Every map figure draws through here. Its colour range is
    :func:`~saliency_core.figures.figure_style.display_range`: a zero or
    constant map is drawn empty, never at the middle of the scale. A map larger than the display size
    (:func:`~saliency_core.figures.figure_style.display_factor`) becomes the means of
    f x f blocks (its customdata too), centred on the pixels they cover, and
    the hover says so. What the browser gets stays near 7 MB per map whatever
    the crop; zoom, linked axes and overlays keep the full image's coordinates.
    """
    if "coloraxis" not in kwargs and "zmid" not in kwargs:  # a shared axis or a signed scale sets its own range
        kwargs["zmin"], kwargs["zmax"] = display_range(z, kwargs.get("zmin"), kwargs.get("zmax"))
    f = display_factor(z.shape)
    if f > 1:
        z = block_mean(z, f)
        customdata = None if customdata is None else block_mean(customdata, f)
        kwargs = {**_display_grid(f), **kwargs}
    return go.Heatmap(
        z=z,
        customdata=customdata,
        hovertemplate=_hovertemplate(label, customdata is not None, channel_prefix, f),
        name=name,
        **kwargs,
    )


def _image_axes(fig: go.Figure) -> None:
    """Make every axis of ``fig`` look like an image: y down, no grid."""
    fig.update_xaxes(constrain="domain", showgrid=False, zeroline=False)
    fig.update_yaxes(autorange="reversed", constrain="domain", showgrid=False, zeroline=False)


def _anchor_squares(fig: go.Figure, n_axes: int) -> None:
    """Square pixels in every subplot, with zoom and pan linked across all.

    Only the first y axis is anchored: plotly.js applies that constraint to
    the whole match group and ignores (with a console warning) a
    ``scaleanchor`` on any axis that also ``matches`` another.
    """
    fig.layout.yaxis.scaleanchor = "x"
    for i in range(2, n_axes + 1):
        fig.layout[f"xaxis{i}"].matches = "x"
        fig.layout[f"yaxis{i}"].matches = "y"


def _symmetric_range(values: np.ndarray, percentile: float = 100.0) -> float:
    """Half-width m of a zero-centred colour range: a percentile of |values| (100 = max), or 1 if all zero."""
    m = float(np.percentile(np.abs(values), percentile))
    if m <= 0:
        m = float(np.max(np.abs(values)))
    return m if m > 0 else 1.0


def _diverging_figure(values: np.ndarray, title: str | None, label: str, percentile: float = 100.0) -> go.Figure:
    m = _symmetric_range(values, percentile)
    fig = go.Figure(_heatmap(values, label=label, colorscale=DIVERGING_SCALE, zmin=-m, zmax=m, zmid=0.0))
    _image_axes(fig)
    _anchor_squares(fig, 1)
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
    zmin, zmax = _as_range(zmin, zmax)
    fig = go.Figure(
        _heatmap(
            z,
            customdata=_as_customdata(gradients, z.shape, "gradients"),
            colorscale=_check_colorscale(colorscale),
            zmin=zmin,
            zmax=zmax,
            channel_prefix=channel_prefix,
        )
    )
    _image_axes(fig)
    _anchor_squares(fig, 1)
    return finish(fig, title)


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
    img = _as_image(image, z.shape)
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float, np.number)) or not 0.0 <= opacity <= 1.0:
        raise InvalidInputError(f"opacity: expected a number in [0, 1], got {opacity!r}")
    zmin, zmax = _as_range(zmin, zmax)
    fig = go.Figure(
        [
            # The heatmap answers hover; the image underneath would only add noise.
            _image_trace(img, hoverinfo="skip", name="image"),
            _heatmap(
                z,
                customdata=_as_customdata(gradients, z.shape, "gradients"),
                colorscale=_check_colorscale(colorscale),
                zmin=zmin,
                zmax=zmax,
                opacity=float(opacity),
                name="saliency",
                channel_prefix=channel_prefix,
            ),
        ]
    )
    _image_axes(fig)
    _anchor_squares(fig, 1)
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
    _check_colorscale(colorscale)
    ranges = {}
    for name in names:
        zmin, zmax = _as_range(*zmin_zmax.get(name, (None, None)))
        ranges[name] = display_range(zs[name], zmin, zmax)

    n = len(names)
    fig = make_subplots(
        rows=1, cols=n, shared_xaxes=True, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04
    )
    for col, name in enumerate(names, start=1):
        zmin, zmax = ranges[name]
        common = dict(
            customdata=_as_customdata(gradients.get(name), shape, f"gradients[{name!r}]"),
            label=name,
            name=name,
            channel_prefix=channel_prefix,
        )
        if shared_scale:
            trace = _heatmap(zs[name], coloraxis="coloraxis", **common)
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
            trace = _heatmap(zs[name], colorscale=colorscale, zmin=zmin, zmax=zmax, colorbar=colorbar, **common)
        fig.add_trace(trace, row=1, col=col)
    _image_axes(fig)
    _anchor_squares(fig, n)
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
        by :func:`normalize_max` so their different magnitudes cancel.
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
    imgs = [_as_image(img, None, f"images[{i}]") for i, img in enumerate(images)] if images is not None else None
    for name, row_maps in maps.items():
        if len(row_maps) != n_cols:
            raise InvalidInputError(f"maps[{name!r}]: expected {n_cols} maps (one per image), got {len(row_maps)}")
    _check_colorscale(colorscale)

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
            fig.add_trace(_image_trace(imgs[col - 1], name=str(titles[col - 1])), row=1, col=col)
        shape = imgs[col - 1].shape[:2] if imgs is not None else None
        for row, (name, row_maps) in enumerate(maps.items(), start=first_map_row):
            z = float32_map(row_maps[col - 1], f"maps[{name!r}][{col - 1}]")
            shape = shape or z.shape
            if z.shape != shape:
                raise InvalidInputError(
                    f"maps[{name!r}][{col - 1}]: expected shape {shape} like its image, got {z.shape}"
                )
            fig.add_trace(
                _heatmap(z, label=name, name=name, colorscale=colorscale, showscale=False),
                row=row,
                col=col,
            )
    _image_axes(fig)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    # Map names label the rows on the left, as in the cs231n figure.
    for row, name in enumerate(maps, start=first_map_row):
        fig.update_yaxes(title_text=name, row=row, col=1)
    _anchor_squares(fig, n_rows * n_cols)
    return finish(fig, None, height=60 + 200 * n_rows)
