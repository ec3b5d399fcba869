"""One line under a figure for each map that is zero or constant: it is drawn empty, and this says why.

A map with nothing in it (Grad-CAM whose ReLU left nothing for the class, a
saturated model's loss gradient) used to look "salient everywhere" where a
colour scale was stretched over it. Figures now draw it empty
(:func:`saliency_core.figures.figure_style.display_range`); this says so in
words, with the method's own reason where it has one
(``AttributionMethod.empty_reason``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import streamlit as st

from pages.ui.text import plain
from saliency_core.figures.figure_style import flat_note
from saliency_core.methods.registry import ATTRIBUTION_METHODS


def note(title: str, saliency: np.ndarray, method: str | None = None) -> str | None:
    """The line for one map (None when it has values to show); ``method`` gives the reason where known."""
    spec = ATTRIBUTION_METHODS.get(method) if method else None
    reason = spec.empty_reason if spec is not None and not np.any(saliency) else ""
    return flat_note(title, saliency, reason)


def caption_flat_maps(maps: Iterable[tuple[str, np.ndarray, str | None]]) -> None:
    """``st.caption`` one line per zero or constant map of ``(title, map, method)``."""
    lines = [line for title, z, method in maps if (line := note(title, z, method))]
    if lines:
        st.caption("  \n".join(plain(line, 600) for line in lines))
