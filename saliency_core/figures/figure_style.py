"""What every figure shares: the template, the hover style, validation, text that stays text, and display size.

:mod:`saliency_core.figures.plots` and :mod:`saliency_core.figures.image_figures` (maps) and
:mod:`saliency_core.figures.charts` (curves and histograms) finish each figure with :func:`finish`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import stats
from saliency_core.evaluation.agreement import flat_value

TEMPLATE = "plotly_white"

#: Maps (and the images under them) with a side longer than this are drawn as means of f x f pixel
#: blocks, f = ceil(side / MAX_DISPLAY_SIDE); downloads keep every pixel. A 512 x 512 heatmap with
#: per-channel hover is about 7 MB of figure JSON; a 2048 x 2048 one was 114 MB, more than the
#: browser could turn into a string ("RangeError: Invalid string length"). 512 keeps the 224 px
#: maps of the built-in models, and crops up to 512 px, exact.
MAX_DISPLAY_SIDE = 512

# Hover boxes take the colour of the point by default: grey text on a dark box over a "hot" map.
# Dark text on white reads the same over every colour scale.
HOVER_LABEL = dict(bgcolor="white", bordercolor="#333333", font=dict(color="#111111"))


def as_text(value: object) -> str:
    """``value`` as Plotly shows it literally: Plotly renders a subset of HTML (links included) in titles,
    names and annotations, so ``<``, ``>`` and ``&`` are escaped. Names of files, classes and columns
    come from uploads and datasets: they are data."""
    return html.escape(str(value), quote=False)


def template_text(value: object) -> str:
    """:func:`as_text` for a hover template, where ``%{`` would start a variable."""
    return as_text(value).replace("%{", "% {")


def finish(fig: go.Figure, title: str | None, **layout: object) -> go.Figure:
    """Template, margins, hover style; every title, trace name and annotation given by a caller as text."""
    layout.setdefault("margin", dict(l=10, r=10, t=50 if title else 30, b=10))
    layout.setdefault("hoverlabel", HOVER_LABEL)
    fig.update_layout(template=TEMPLATE, title=dict(text=as_text(title)) if title else None, **layout)
    for trace in fig.data:
        if trace.name is not None:
            trace.name = as_text(trace.name)
    for annotation in fig.layout.annotations:
        annotation.text = as_text(annotation.text)
    fig.for_each_xaxis(lambda axis: axis.title.text is not None and axis.title.update(text=as_text(axis.title.text)))
    fig.for_each_yaxis(lambda axis: axis.title.text is not None and axis.title.update(text=as_text(axis.title.text)))
    return fig


def float32_map(saliency: np.ndarray, name: str = "saliency", *, signed: bool = False) -> np.ndarray:
    """Validate an (H, W) map as :mod:`stats` does; float32 keeps the JSON small."""
    return stats.check_map(saliency, name, signed=signed).astype(np.float32)


def flat_range(value: float) -> tuple[float, float]:
    """A colour range that puts a constant map at the bottom of the scale: drawn empty (black on "hot"),
    never at the scale's middle, as Plotly does when zmin == zmax."""
    return value, value + (abs(value) or 1.0)


def display_range(z: np.ndarray, zmin: float | None = None, zmax: float | None = None) -> tuple[float, float]:
    """The colour range a map is drawn with: ``zmin``/``zmax`` where given, else its own min and max; a
    constant map (:func:`~saliency_core.evaluation.agreement.flat_value`) gets :func:`flat_range`."""
    lo = float(np.min(z)) if zmin is None else float(zmin)
    hi = float(np.max(z)) if zmax is None else float(zmax)
    value = flat_value(z)
    if value is not None and (hi <= lo or (zmin is None and zmax is None)):
        return flat_range(value)
    return lo, hi


def flat_note(title: str, z: np.ndarray, reason: str = "") -> str | None:
    """One line under a figure for a map that is zero or constant (drawn empty): what it is and, where the
    method knows (``reason``), why; None for any other map."""
    value = flat_value(z)
    if value is None:
        return None
    what = "zero everywhere" if value == 0 else f"constant ({value:.3g} everywhere)"
    return f"{title} is {what}, so it is drawn empty" + (f": {reason}" if reason else ".")


def require_nonempty(maps: Mapping[str, object], name: str = "maps") -> None:
    if len(maps) == 0:
        raise InvalidInputError(f"{name}: expected at least one map, got none")


def display_factor(shape: tuple[int, ...]) -> int:
    """f, the side of the pixel blocks an (H, W, ...) map or image is drawn with: 1 when H and W are at most
    :data:`MAX_DISPLAY_SIDE`, else ``ceil(max(H, W) / MAX_DISPLAY_SIDE)``. The one place that decides."""
    return max(1, math.ceil(max(int(shape[0]), int(shape[1])) / MAX_DISPLAY_SIDE))


def block_mean(values: np.ndarray, f: int) -> np.ndarray:
    """(H, W, ...) -> (ceil(H / f), ceil(W / f), ...) float32: each value the mean of its f x f block.

    Blocks at the right and bottom edges may be partial (the mean of the
    pixels they hold). Means, not every f-th pixel: a block keeps the share
    of each of its pixels, so a small bright spot still shows. ``f`` 1
    returns ``values`` as given.
    """
    if f == 1:
        return values
    h, w = values.shape[:2]
    hh, ww = -(-h // f), -(-w // f)
    pad = [(0, hh * f - h), (0, ww * f - w)] + [(0, 0)] * (values.ndim - 2)
    sums = np.pad(values, pad).reshape(hh, f, ww, f, *values.shape[2:]).sum(axis=(1, 3), dtype=np.float64)
    counts = np.pad(np.ones((h, w)), pad[:2]).reshape(hh, f, ww, f).sum(axis=(1, 3))
    return (sums / counts.reshape(hh, ww, *([1] * (values.ndim - 2)))).astype(np.float32)
