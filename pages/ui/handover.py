"""The Dataset page's "Open in Compare": a dataset image becomes the current image, then the page moves."""

from __future__ import annotations

import streamlit as st

from pages.ui import caches
from pages.ui.text import plain
from saliency_core.analysis import AUTO_TARGET
from saliency_core.errors import SaliencyError
from saliency_core.images import image_sha256, load_image
from saliency_core.models import REGISTRY

GOTO_COMPARE = "goto_compare"  # session key the Dataset page reads at its top
PROBLEM = "dataset_problem"  # session key: why the image could not be opened


def open_in_compare(path: str, key: str, label: int | None, model_name: str | None) -> None:
    """Button callback: make a dataset image the current one and ask the Dataset page to move to Compare.

    The image is kept in the upload store like an upload, so the Compare
    page's link can be shared. Only images that
    :func:`saliency_core.results_access.read_dataset_image` allows are read.
    """
    try:
        data = caches.read_dataset_image(path)
        load_image(data)
    except (OSError, SaliencyError) as exc:
        st.session_state[PROBLEM] = f"**{plain(key)}** can't be opened: {plain(exc, 1000)}"
        return
    sha = image_sha256(data)
    meta = {"name": key, "origin": "the dataset results"}
    if label is not None:
        meta["label"] = int(label)
    caches.upload_store().put(sha, data, meta)
    st.session_state.update(source="upload", image_sha=sha, prefer_stored=True, target=AUTO_TARGET)
    st.session_state[GOTO_COMPARE] = True
    if model_name in REGISTRY and caches.model_statuses()[model_name].available:
        st.session_state["model"] = model_name
