"""Every cache of the dashboard, in one place.

``st.cache_resource`` holds what is built once per server process (the
model, the upload store, the shared result cache); ``st.cache_data`` holds
numbers and images, keyed on the sha256 of an image's bytes plus every
option that changes them. Images and tensors are passed as ``_underscore``
arguments beside that key: Streamlit hashes large arrays by sampling, so two
images one pixel apart could share a key otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import streamlit as st
from PIL import Image

from saliency_core import analysis, results, results_access
from saliency_core.analysis import ImageAnalysis
from saliency_core.images import load_image
from saliency_core.lru import LRUCache
from saliency_core.models import LoadedModel, ModelStatus, list_models, load_model
from saliency_core.npz import LabelledImage, load_npz_batch
from saliency_core.store import UploadStore

T = TypeVar("T")
MAX_CACHED_ANALYSES = 32  # about 4 MB each
MAX_PROGRESS_RESULTS = 16


# --------------------------------------------------------------------------- process-wide resources

@st.cache_resource(show_spinner="Loading the model (once per server process)…", max_entries=3)
def get_model(name: str) -> LoadedModel:
    """One shared, frozen model per name and process. Safe to run again after "clear cache"."""
    return load_model(name, device=os.environ.get("SALIENCY_DEVICE", "auto"), allow_download=False)


@st.cache_resource
def upload_store() -> UploadStore:
    return UploadStore.from_env()


@st.cache_data(ttl=60, show_spinner=False)
def model_statuses() -> dict[str, ModelStatus]:
    return {s.name: s for s in list_models()}


# --------------------------------------------------------------------------- images

@st.cache_data(max_entries=64, show_spinner=False)
def decode_image(sha: str, _data: bytes) -> Image.Image:
    """Decoded upload, keyed on the sha256 of its bytes (never on the bytes themselves)."""
    return load_image(_data)


@st.cache_data(max_entries=8, show_spinner=False)
def decode_npz(sha: str, _data: bytes) -> list[LabelledImage]:
    return load_npz_batch(_data)


@st.cache_data(max_entries=64, show_spinner=False)
def thumbnail(key: str, _image: Image.Image) -> Image.Image:
    """A small copy for the sidebar, so reruns don't re-encode a full photo."""
    thumb = _image.copy()
    thumb.thumbnail((480, 480))
    return thumb


# --------------------------------------------------------------------------- analyses

@st.cache_data(max_entries=MAX_CACHED_ANALYSES, show_spinner="Computing score and loss gradients…")
def analyse_one(image_key: str, model_name: str, target: int, label: int | None, reduction: str,
                precision: str, _image: Image.Image) -> ImageAnalysis:
    """Both maps for one image; cached on the image's sha256 and every option that changes the numbers."""
    return analysis.analyse(get_model(model_name), [_image], [target], [label], reduction=reduction,
                            precision=precision)[0]


@st.cache_data(max_entries=16, show_spinner=False)
def analyse_many(image_keys: tuple[str, ...], model_name: str, labels: tuple[int | None, ...], reduction: str,
                 precision: str, _images: tuple[Image.Image, ...]) -> list[ImageAnalysis]:
    """Both maps for several images in one batched computation (automatic targets)."""
    return analysis.analyse(get_model(model_name), list(_images), [None] * len(_images), list(labels),
                            reduction=reduction, precision=precision)


@st.cache_resource
def progress_results() -> LRUCache:
    """Slow results (faithfulness, sanity checks), shared by every session; cleared with the other caches."""
    return LRUCache(max_entries=MAX_PROGRESS_RESULTS)


def cached_with_progress(key: tuple, label: str, compute: Callable[[Callable[[int, int], None]], T]) -> T:
    """``compute(progress)`` once per key, with a progress bar while it runs.

    ``key`` must hold every option that changes the result.
    """
    holder: list = []

    def run() -> T:
        bar = st.progress(0.0, text=label)
        holder.append(bar)

        def progress(done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(1, total)), text=f"{label} {done}/{total}")

        return compute(progress)

    value = progress_results().get_or_compute(key, run)
    for bar in holder:
        bar.empty()
    return value


# --------------------------------------------------------------------------- batch-job results

def results_dir() -> Path:
    return results_access.results_dir()


def results_folders() -> list[str]:
    return results_access.results_folders(results_dir())


def _fingerprint(folder: Path) -> tuple:
    # New parts written by a job still running make a new cache key.
    files = sorted(folder.glob("*/part-*.parquet"))
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@st.cache_data(max_entries=4, show_spinner="Reading the results…")
def _load_results(path: str, fingerprint: tuple) -> results.ResultsFolder:
    return results.load_results(path)


def load_results_folder(name: str) -> results.ResultsFolder:
    """A results folder in :func:`results_dir` by name (never one whose real path is outside it)."""
    folder = results_access.results_folder(results_dir(), name)
    return _load_results(str(folder), _fingerprint(folder))


@st.cache_data(max_entries=4, show_spinner="Reading the Parquet file…")
def load_results_upload(sha: str, _data: bytes) -> results.ResultsFolder:
    return results.load_parquet_bytes(_data)


@st.cache_data(ttl=60, show_spinner=False)
def _dataset_roots(root: str, folders: tuple[str, ...]) -> list[Path]:
    return results_access.dataset_roots(root, folders)


def read_dataset_image(path: str) -> bytes:
    """The bytes of a dataset image named in results, see :func:`saliency_core.results_access.read_dataset_image`."""
    root = results_dir()
    return results_access.read_dataset_image(path, _dataset_roots(str(root), tuple(results_folders())))


@st.cache_data(max_entries=64, show_spinner=False)
def dataset_thumbnail(path: str) -> Image.Image:
    """A dataset image (by its path in the results) shrunk for display; raises OSError or SaliencyError."""
    image = load_image(read_dataset_image(path))
    image.thumbnail((320, 320))
    return image
