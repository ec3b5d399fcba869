"""What every figure shares: the template, the hover style, validation, and text that stays text.

:mod:`saliency_core.plots` (maps) and :mod:`saliency_core.charts` (curves and
histograms) finish each figure with :func:`finish`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from saliency_core import stats
from saliency_core.errors import InvalidInputError

TEMPLATE = "plotly_white"

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


def require_nonempty(maps: Mapping[str, object], name: str = "maps") -> None:
    if len(maps) == 0:
        raise InvalidInputError(f"{name}: expected at least one map, got none")
