"""The models, each loaded once per server process and shared by every session; their weights downloaded with a
progress bar; a model that just failed remembered for a moment.

Results computed with a model are cached in :mod:`pages.ui.caches`, on the
model's :attr:`~saliency_core.models.registry.LoadedModel.key`.
"""

from __future__ import annotations

import copy
import os

import streamlit as st

from saliency_core.errors import SaliencyError
from saliency_core.models.loading import ModelStatus, list_models, load_model
from saliency_core.models.loading import download_weights as _download_weights
from saliency_core.models.registry import LoadedModel, model_fingerprint
from saliency_core.serving.recent_failures import RecentFailures

MODEL_FAILURE_MEMORY_S = 60.0  # a model that failed to download or load is tried again after this, or on request


def get_model(name: str) -> LoadedModel:
    """One shared, frozen model per name and process. Safe to run again after "clear cache".

    A custom model is kept with the fingerprint of its files (:func:`saliency_core.models.registry.model_fingerprint`):
    when an admin replaces its file or sidecar, the next call loads the new one and drops the old. Results
    computed with a model are cached on its :attr:`~saliency_core.models.registry.LoadedModel.key`, so the new
    model's are computed afresh too.
    """
    fingerprint = model_fingerprint(name)
    loaded = _loaded_fingerprints()
    old = loaded.get(name)
    if old is not None and old != fingerprint:
        _load_model.clear(name, old)  # the replaced model's memory goes now, not when evicted
    loaded[name] = fingerprint
    return _load_model(name, fingerprint)


@st.cache_resource(show_spinner="Loading the model (once per server process)…", max_entries=3)
def _load_model(name: str, fingerprint: tuple) -> LoadedModel:
    return load_model(name, device=os.environ.get("SALIENCY_DEVICE", "auto"), allow_download=False)


@st.cache_resource
def _loaded_fingerprints() -> dict[str, tuple]:
    """The fingerprint each model name was last loaded with (see :func:`get_model`)."""
    return {}


@st.cache_resource
def _model_failures() -> RecentFailures:
    return RecentFailures(MODEL_FAILURE_MEMORY_S)


def prepare_model(status: ModelStatus) -> LoadedModel:
    """The model a user chose, its weights downloaded first if needed (:func:`download_weights`).

    A failure to download or load it is remembered for
    :data:`MODEL_FAILURE_MEMORY_S` for every session, by model and the
    fingerprint of its files: until then, or until
    :func:`forget_model_failure`, the same error is raised again without
    touching the network or the files (a page reruns on every click).

    Raises
    ------
    SaliencyError : the download or the model failed, now or a moment ago.
    """
    key = (status.name, model_fingerprint(status.name))
    failed = _model_failures().get(key)
    if failed is not None:
        raise copy.copy(failed)  # a copy: sessions raise it at once, each with its own traceback
    try:
        if status.downloadable:
            download_weights(status.name, status.title)
        return get_model(status.name)
    except SaliencyError as exc:
        _model_failures().remember(key, exc)
        raise


def forget_model_failure(name: str) -> None:
    """Let :func:`prepare_model` try the model ``name`` again at once (the "Try again" button)."""
    _model_failures().forget((name, model_fingerprint(name)))


@st.cache_data(ttl=60, show_spinner=False)
def model_statuses() -> dict[str, ModelStatus]:
    return {s.name: s for s in list_models()}


def download_weights(name: str, title: str) -> None:
    """Download a torchvision model's weights into the local cache with a progress bar (once per server).

    Outside :func:`get_model` on purpose: a cached function's elements are
    replayed on every cache hit, and a progress bar must show only while it
    runs. Raises ModelUnavailableError (a SaliencyError) when it fails.
    """
    bar = st.progress(0.0, text=f"Downloading the weights of {title}…")

    def progress(done: int, total: int) -> None:
        mb = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        bar.progress(min(1.0, done / total) if total else 0.0, text=f"Downloading the weights of {title}: {mb}")

    try:
        _download_weights(name, progress)
    finally:
        bar.empty()
        model_statuses.clear()
