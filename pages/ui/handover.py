"""The Dataset page's hand-overs: a dataset image becomes the current image, then another page opens it.

"Open in Compare" (:func:`open_in_compare`) and "Open in Methods"
(:func:`open_in_methods`) share :func:`make_current`; each sets the session
flag of its page. :func:`follow` moves to the page a hand-over asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from pages.ui import caches, model_cache
from pages.ui.text import plain
from saliency_core.errors import SaliencyError
from saliency_core.evaluation.analysis import AUTO_TARGET
from saliency_core.inputs.images import image_sha256, load_image
from saliency_core.methods.registry import ATTRIBUTION_METHODS

GOTO_COMPARE = "goto_compare"  # session key the Dataset page reads at its top
GOTO_METHODS = "goto_methods"  # the same for the Methods page (see follow())
METHODS_PICK = "handover_methods"  # session key: the methods the Methods page preselects, read (and dropped) there
PROBLEM = "dataset_problem"  # session key: why the image could not be opened
PAGE_FILES = {GOTO_COMPARE: "pages/compare.py", GOTO_METHODS: "pages/methods.py"}


def make_current(path: str, key: str, label: int | None, model_name: str | None) -> bool:
    """Make a dataset image the current one (and its model the sidebar's, when it loads here).

    The image is kept in the upload store like an upload, so the next page's
    link can be shared. Only images that
    :func:`saliency_core.jobs.results_access.read_dataset_image` allows are read.
    Returns False, with the reason in ``st.session_state[PROBLEM]``, when it can't be opened.
    """
    try:
        data = caches.read_dataset_image(path)
        load_image(data)
    except (OSError, SaliencyError) as exc:
        st.session_state[PROBLEM] = f"**{plain(key)}** can't be opened: {plain(exc, 1000)}"
        return False
    sha = image_sha256(data)
    meta = {"name": key, "origin": "the dataset results"}
    if label is not None:
        meta["label"] = int(label)
    caches.upload_store().put(sha, data, meta)
    st.session_state.update(source="upload", image_sha=sha, prefer_stored=True, target=AUTO_TARGET)
    status = model_cache.model_statuses().get(model_name or "")  # built-in or custom:NAME
    if status is not None and status.available:
        st.session_state["model"] = model_name
    return True


def open_in_compare(path: str, key: str, label: int | None, model_name: str | None) -> None:
    """Button callback: make a dataset image the current one and ask the Dataset page to move to Compare."""
    if make_current(path, key, label, model_name):
        st.session_state[GOTO_COMPARE] = True


def open_in_methods(path: str, key: str, label: int | None, model_name: str | None,
                    methods: Sequence[str] | None = None) -> None:
    """Button callback: make a dataset image the current one and ask the Dataset page to move to Methods.

    ``methods``: names from :data:`~saliency_core.ATTRIBUTION_METHODS` the
    Methods page preselects (e.g. the two whose maps disagree most on this
    image); unknown names are dropped, and None (or nothing left) keeps the
    page's own choice.
    """
    if not make_current(path, key, label, model_name):
        return
    picked = list(dict.fromkeys(m for m in (methods or ()) if m in ATTRIBUTION_METHODS))
    if picked:
        st.session_state[METHODS_PICK] = picked
    st.session_state[GOTO_METHODS] = True


def follow() -> None:
    """At the top of the Dataset page: move to the page a hand-over button asked for, if any."""
    for flag, page in PAGE_FILES.items():
        if st.session_state.pop(flag, False):
            st.switch_page(page)
