"""What every map figure draws with: heatmap and image traces, image-like axes, and the checks of their inputs.

Every image-like figure uses pixel coordinates, x = column and y = row, both
starting at 0 in the top-left corner: the y axis runs downwards
(``autorange="reversed"``) and pixels are square (``scaleanchor``). Images
are ``go.Image`` traces of the (H, W, 3) uint8 crop the model saw; maps are
``go.Heatmap`` traces drawn on top of the same coordinates.

Arrays are handed to Plotly as numpy float32, which Plotly >= 6 sends as
compact typed arrays rather than long JSON lists. Maps and images with a side
longer than :data:`~saliency_core.figures.figure_style.MAX_DISPLAY_SIDE` are drawn as
means of pixel blocks, placed on the same pixel coordinates, and the hover
says so (:func:`heatmap_trace`, :func:`image_trace`); downloads (``export``) keep
the full map.

Colour scales are any Plotly named scale ("hot", "viridis", "gray", and
their "_r" reverses); the default "hot" matches the cs231n notebook's
``cmap=plt.cm.hot``.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from saliency_core.errors import InvalidInputError
from saliency_core.figures.figure_style import block_mean, display_factor, display_range, template_text

CHANNELS = ("R", "G", "B")
#: How hover names the per-channel values: "∂/∂R" for gradients; e.g. "attribution " for another method's values.
GRADIENT_PREFIX = "∂/∂"


# --- validation ---------------------------------------------------------------


def as_image(image: np.ndarray, shape: tuple[int, int] | None, name: str = "image") -> np.ndarray:
    """Validate an (H, W, 3) uint8 image, matching ``shape`` (H, W) if given."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InvalidInputError(f"{name}: expected an (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
    if shape is not None and img.shape[:2] != shape:
        raise InvalidInputError(f"{name}: expected height and width {shape} like the map, got {img.shape[:2]}")
    return img


def as_customdata(gradients: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    """(3, H, W) signed gradients -> (H, W, 3) float32 for per-pixel hover."""
    if gradients is None:
        return None
    grads = np.asarray(gradients)
    if grads.shape != (3, *shape):
        raise InvalidInputError(f"{name}: expected shape {(3, *shape)}, got {grads.shape}")
    if not np.issubdtype(grads.dtype, np.number) or not np.all(np.isfinite(grads)):
        raise InvalidInputError(f"{name}: expected finite numeric values")
    return np.moveaxis(grads, 0, -1).astype(np.float32)


def check_colorscale(colorscale: str) -> str:
    try:
        go.Heatmap(colorscale=colorscale)
    except ValueError as exc:
        raise InvalidInputError(
            f"colorscale: expected a Plotly colour scale name such as 'hot' or 'viridis', got {colorscale!r}"
        ) from exc
    return colorscale


def as_range(zmin: float | None, zmax: float | None) -> tuple[float | None, float | None]:
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


def image_trace(img: np.ndarray, **kwargs: object) -> go.Image:
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


def heatmap_trace(
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


def image_axes(fig: go.Figure) -> None:
    """Make every axis of ``fig`` look like an image: y down, no grid."""
    fig.update_xaxes(constrain="domain", showgrid=False, zeroline=False)
    fig.update_yaxes(autorange="reversed", constrain="domain", showgrid=False, zeroline=False)


def anchor_squares(fig: go.Figure, n_axes: int) -> None:
    """Square pixels in every subplot, with zoom and pan linked across all.

    Only the first y axis is anchored: plotly.js applies that constraint to
    the whole match group and ignores (with a console warning) a
    ``scaleanchor`` on any axis that also ``matches`` another.
    """
    fig.layout.yaxis.scaleanchor = "x"
    for i in range(2, n_axes + 1):
        fig.layout[f"xaxis{i}"].matches = "x"
        fig.layout[f"yaxis{i}"].matches = "y"
