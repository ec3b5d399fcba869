"""The Methods page's own choices and their place in the address bar.

``?methods=gradient,smoothgrad&scale=method&agreement=iou_top5&rank=1``:
which methods (default: those fast enough to show by default, as each declares), one colour scale per method instead
of per map, top-5 % IoU instead of Spearman's ρ, and the ranking table on.
Restored on the page's first run in a session (a shared link), or from a
Dataset hand-over (:func:`pages.ui.handover.open_in_methods`); written back
after every run. An unusable value gives a notice and the default.
"""

from __future__ import annotations

import streamlit as st

from pages.ui import handover, method_params, url_state
from pages.ui.text import plain
from saliency_core.methods.registry import shown_by_default

PICK = "methods_pick"  # session keys of the page's widgets
PER_METHOD = "methods_scale_per_method"
IOU = "methods_iou"
RANK = "methods_rank"
RESTORED = "_methods_url_restored"
# URL key -> (widget key, the value that turns the switch on)
SWITCHES = {"scale": (PER_METHOD, "method"), "agreement": (IOU, "iou_top5"), "rank": (RANK, "1")}


def default_methods() -> list[str]:
    """The methods the page shows without a choice: those that declare themselves fast (``default_view``)."""
    return list(shown_by_default())


def parse_methods(text: str) -> list[str] | None:
    """``"gradient,smoothgrad"`` -> those methods in order, each once; None if a name is unknown or none is given."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in method_params.methods() for n in names):
        return None
    return list(dict.fromkeys(names))


def restore() -> list[str]:
    """Set the page's widgets from a hand-over or, on the page's first run, from the link; notices for the link.

    Must run before the widgets are drawn.
    """
    picked = st.session_state.pop(handover.METHODS_PICK, None)
    if picked:
        st.session_state[PICK] = list(picked)
        st.session_state[RESTORED] = True
        return []
    if st.session_state.get(RESTORED):
        return []
    st.session_state[RESTORED] = True
    params = st.query_params.to_dict()
    problems = []
    methods = parse_methods(params["methods"]) if "methods" in params else None
    if "methods" in params and methods is None:
        problems.append(f"**methods={plain(params['methods'], 120)}** is not a comma-separated list of "
                        f"attribution methods ({', '.join(method_params.methods())}); showing the fast ones "
                        "instead.")
    st.session_state[PICK] = methods or default_methods()
    for name, (key, on) in SWITCHES.items():
        value = params.get(name)
        if value is not None and value != on:
            problems.append(f"**{name}={plain(value, 80)}** can only be {on}; ignored.")
        st.session_state[key] = value == on
    return problems


def write() -> None:
    """Mirror the page's choices into the address bar (defaults left out)."""
    picked = list(st.session_state.get(PICK) or [])
    values: dict[str, str | None] = {"methods": ",".join(picked) if picked and picked != default_methods() else None}
    for name, (key, on) in SWITCHES.items():
        values[name] = on if st.session_state.get(key) else None
    url_state.write_page_params(values)
