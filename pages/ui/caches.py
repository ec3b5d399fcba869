"""Every cache of the dashboard but the model's (:mod:`pages.ui.model_cache`), in one place.

``st.cache_resource`` holds what is built once per server process (the
upload store, the shared result caches); ``st.cache_data`` holds
numbers and images, keyed on the sha256 of an image's bytes plus every
option that changes them. Images and tensors are passed as ``_underscore``
arguments beside that key: Streamlit hashes large arrays by sampling, so two
images one pixel apart could share a key otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from pages.ui import method_params
from pages.ui.model_cache import get_model
from pages.ui.session_gone import checked
from pages.ui.waiting import queued, seconds_text, shared_or_computed
from saliency_core.evaluation import analysis, method_comparison, method_ranking
from saliency_core.evaluation.analysis import ImageAnalysis
from saliency_core.evaluation.method_comparison import AgreementMatrix, MethodComparison
from saliency_core.evaluation.method_ranking import MethodRanking
from saliency_core.inputs.images import load_image
from saliency_core.inputs.npz import LabelledImage, load_npz_batch
from saliency_core.inputs.upload_store import UploadStore
from saliency_core.jobs import leaderboard, results, results_access
from saliency_core.serving.lru import LRUCache
from saliency_core.serving.memory import release_freed_memory

T = TypeVar("T")
MAX_CACHED_ANALYSES = 32  # about 4 MB each
MAX_ANALYSIS_BYTES = 160 * 1024 * 1024
MAX_PROGRESS_RESULTS = 16
MAX_METHOD_RUNS = 96  # one method's two maps and attributions of one image: about 1.6 MB at 224 px
MAX_METHOD_RUN_BYTES = 192 * 1024 * 1024


# --------------------------------------------------------------------------- process-wide resources

@st.cache_resource
def upload_store() -> UploadStore:
    return UploadStore.from_env()


@st.cache_resource
def pass_costs() -> LRUCache:
    """Each model's measured seconds per pass through it (:func:`pages.ui.budget.pass_cost`)."""
    return LRUCache(max_entries=64)


# --------------------------------------------------------------------------- images

MAX_DECODED_BYTES = 96 * 1024 * 1024  # crops and thumbnails of uploads, samples and .npz images
MAX_NPZ_BYTES = 512 * 1024 * 1024  # decoded .npz batches (each is at most npz.MAX_DECODED_BYTES)
THUMBNAIL_PX = 480


@st.cache_resource
def decoded_images() -> LRUCache:
    """What pages need of each image, never the full-size decode: the model's crop and a small copy.

    A 39-megapixel upload decodes to about 117 MB; it is dropped as soon as
    its crop (150 KB) and thumbnail are made. Bounded by bytes, shared by
    every session.
    """
    return LRUCache(max_entries=1024, max_bytes=MAX_DECODED_BYTES)


@st.cache_resource
def decoded_npz() -> LRUCache:
    return LRUCache(max_entries=4, max_bytes=MAX_NPZ_BYTES)


def _thumbnail(image: Image.Image) -> Image.Image:
    thumb = image.copy() if max(image.size) <= THUMBNAIL_PX else image.resize(
        _fit(image.size, THUMBNAIL_PX), Image.Resampling.BICUBIC, reducing_gap=3.0)
    thumb.load()
    return thumb


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = longest / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def image_views(key: str, model_name: str, load: Callable[[], Image.Image]) -> tuple[Image.Image, np.ndarray]:
    """(thumbnail, the model's (crop, crop, 3) uint8 crop) of the image ``key``; ``load()`` decodes it.

    ``load`` runs only when one of the two is not cached, and both are made
    from that one decode. Raises what ``load`` raises (``SaliencyError`` for
    a bad file); nothing is cached then.
    """
    cache = decoded_images()
    thumb_key, crop_key = ("thumbnail", key), ("crop", key, get_model(model_name).key)
    if thumb_key not in cache or crop_key not in cache:
        image = load()
        cache.get_or_compute(thumb_key, lambda: _thumbnail(image))
        cache.get_or_compute(crop_key, lambda: get_model(model_name).crop_array(image))
        del image
        release_freed_memory()  # the full-size decode is gone: give its pages back
    # Read through get_or_compute: an entry evicted meanwhile is made again, from a new decode.
    thumb = cache.get_or_compute(thumb_key, lambda: _thumbnail(load()))
    crop = cache.get_or_compute(crop_key, lambda: get_model(model_name).crop_array(load()))
    return thumb, crop


def npz_batch(sha: str, data: bytes) -> list[LabelledImage]:
    """The images of an uploaded cs231n .npz, decoded once per file (bounded by bytes)."""
    return decoded_npz().get_or_compute(sha, lambda: load_npz_batch(data))


# --------------------------------------------------------------------------- analyses

@st.cache_resource
def analyses() -> LRUCache:
    """Analyses of single images (any method), shared by every session; bounded by entries and bytes."""
    return LRUCache(max_entries=MAX_CACHED_ANALYSES, max_bytes=MAX_ANALYSIS_BYTES)


def analyse_one(image_key: str, model_name: str, target: int, label: int | None, reduction: str,
                precision: str, _crop: np.ndarray, method: str = "gradient",
                params: dict[str, object] | None = None) -> ImageAnalysis:
    """Score and loss maps of one image (its model crop, see :func:`image_views`) by any attribution method.

    The one way pages get an image's maps: cached on the image's sha256,
    model, target (and label, which the automatic target follows), method,
    every parameter (SmoothGrad's seed included), reduction and precision;
    the crop itself is never hashed. Slow methods (SmoothGrad, Integrated
    Gradients) draw a progress bar with the time left; a second visit is
    instant. ``params`` as :func:`saliency_core.attribute` takes them
    (unknown or invalid ones raise ``InvalidInputError``, a SaliencyError).
    """
    params = dict(params or {})
    key = analysis_key(image_key, model_name, target, label, reduction, precision, method, params)
    what = method_params.method_summary(method, params) if params else method_params.spec(method).title
    return cached_with_progress(
        key, f"Computing {what} for the score and the loss…",
        lambda progress: analysis.analyse(get_model(model_name), _crop[None], [target], [label],
                                          reduction=reduction, precision=precision, method=method, params=params,
                                          progress=progress)[0],
        cache=analyses(), bar=method_params.many_passes(method, params), what="map")


def analysis_key(image_key: str, model_name: str, target: int, label: int | None, reduction: str, precision: str,
                 method: str = "gradient", params: dict[str, object] | None = None) -> tuple:
    """What :func:`analyse_one` caches an analysis on."""
    return ("analysis", image_key, get_model(model_name).key, int(target), label, method,
            method_params.cache_key(dict(params or {})), reduction, precision)


def cached_analysis(*args, **kwargs) -> ImageAnalysis | None:
    """The analysis :func:`analyse_one` would return, if it is cached (arguments as :func:`analysis_key`),
    else None: computes nothing."""
    return analyses().peek(analysis_key(*args, **kwargs))


@st.cache_resource
def gallery_batches() -> LRUCache:
    """The Gallery's batches of analyses, shared by every session; bounded by entries and bytes."""
    return LRUCache(max_entries=16, max_bytes=MAX_ANALYSIS_BYTES)


def gallery_key(image_keys: tuple[str, ...], model_name: str, labels: tuple[int | None, ...], reduction: str,
                precision: str, method: str, params: tuple) -> tuple:
    """What :func:`analyse_many` caches a batch on."""
    return ("gallery", image_keys, get_model(model_name).key, labels, reduction, precision, method, params)


def analyse_many(image_keys: tuple[str, ...], model_name: str, labels: tuple[int | None, ...], reduction: str,
                 precision: str, _crops: np.ndarray, method: str = "gradient",
                 params: tuple = ()) -> list[ImageAnalysis]:
    """Score and loss maps for several images ((N, crop, crop, 3) model crops) in one batched computation
    (automatic targets), by any method; ``params`` as :func:`pages.ui.method_params.cache_key` makes them.

    Kept in :func:`gallery_batches`; while another session computes the same batch the page says so. The
    computation stops at its next chunk of rows when this session is gone (:mod:`pages.ui.session_gone`).
    """
    key = gallery_key(image_keys, model_name, labels, reduction, precision, method, params)
    return shared_or_computed(gallery_batches(), key, lambda: queued("gallery", lambda: analysis.analyse(
        get_model(model_name), _crops, [None] * len(_crops), list(labels), reduction=reduction,
        precision=precision, method=method, params=dict(params), progress=checked())), what="batch of maps")


@st.cache_resource
def progress_results() -> LRUCache:
    """Slow results (faithfulness, sanity checks), shared by every session; cleared with the other caches."""
    return LRUCache(max_entries=MAX_PROGRESS_RESULTS)


def cached_with_progress(key: tuple, label: str, compute: Callable[[Callable[[int, int], None]], T], *,
                         cache: LRUCache | None = None, bar: bool = True, what: str = "result") -> T:
    """``compute(progress)`` once per key, with a progress bar and the time left while it runs.

    ``key`` must hold every option that changes the result. ``cache``: where
    the result is kept (default :func:`progress_results`). ``bar=False``
    shows a spinner instead, for work that takes a moment. While another
    session computes the same key, the page says its ``what`` ("map") will be
    shared (:func:`pages.ui.waiting.shared_or_computed`). ``progress`` also
    stops the computation at its next step when this session is gone
    (:func:`pages.ui.session_gone.checked`).
    """
    holder: list = []

    def run() -> T:
        if not bar:
            with st.spinner(label):
                return queued(str(key[0]), lambda: compute(checked()))
        progress_bar = st.progress(0.0, text=label)
        holder.append(progress_bar)

        def work() -> T:
            start = time.monotonic()

            def progress(done: int, total: int) -> None:
                text = f"{label} {done}/{total}"
                if 0 < done < total:
                    left = (time.monotonic() - start) / done * (total - done)
                    text += f" · about {seconds_text(left)} left"
                progress_bar.progress(min(1.0, done / max(1, total)), text=text)

            return compute(checked(progress))

        return queued(str(key[0]), work)

    value = shared_or_computed(cache if cache is not None else progress_results(), key, run, what)
    for element in holder:
        element.empty()
    return value


# --------------------------------------------------------------------------- the Methods page


@st.cache_resource
def method_runs() -> LRUCache:
    """Each method's maps of one image (and the agreement matrices), shared by every session; bounded by bytes."""
    return LRUCache(max_entries=MAX_METHOD_RUNS, max_bytes=MAX_METHOD_RUN_BYTES)


def run_key(image_key: str, model_name: str, target: int, method: str, params: dict[str, object],
            reduction: str, precision: str) -> tuple:
    """What :func:`compare_methods` caches one method's run on."""
    return ("method_run", image_key, get_model(model_name).key, int(target), method, method_params.cache_key(params),
            reduction, precision)


def compare_methods(image_key: str, model_name: str, target: int, methods: tuple[str, ...],
                    params: dict[str, dict[str, object]], reduction: str, precision: str,
                    _x, gradient: ImageAnalysis | None = None) -> MethodComparison:
    """:func:`saliency_core.evaluation.method_comparison.compare_methods` for one image, one cache entry per method.

    Keyed on the image's sha256, model, target (a class index: resolve the
    automatic target first), method, every parameter given, reduction and
    precision; ``_x`` (the (1, 3, H, W) normalised image) is never hashed.
    Adding a method to the page computes that method only; slow methods
    draw a progress bar with the time left, a second visit is instant.
    ``gradient``: this image's plain-gradient analysis (:func:`analyse_one`)
    when the page has it: the gradient's run is taken from it instead of a
    second backward pass, if its target, reduction and precision match.
    """
    parts = []
    for m in methods:
        given = dict(params.get(m) or {})
        if _from_analysis(m, given, gradient, model_name, target, reduction, precision):
            parts.append(method_comparison.gradient_comparison(gradient))
            continue
        what = method_params.method_summary(m, given) if given else method_params.spec(m).title
        parts.append(cached_with_progress(
            run_key(image_key, model_name, target, m, given, reduction, precision),
            f"Computing {what} for the score and the loss…",
            lambda progress, m=m, given=given: method_comparison.compare_methods(
                get_model(model_name), _x, int(target), (m,), {m: given}, reduction=reduction,
                precision=precision, progress=progress),
            cache=method_runs(), bar=method_params.many_passes(m, given), what="map"))
    ok = [p for p in parts if p.target >= 0]
    first = ok[0] if ok else parts[0]
    return MethodComparison(runs={m: p.runs[m] for m, p in zip(methods, parts, strict=True)},
                            objectives=first.objectives, target=first.target, target_prob=first.target_prob,
                            reduction=reduction, precision=precision, shape=first.shape)


def _from_analysis(method: str, given: dict[str, object], gradient: ImageAnalysis | None, model_name: str,
                   target: int, reduction: str, precision: str) -> bool:
    """Whether :func:`compare_methods` takes this method's run from the page's plain-gradient analysis."""
    return (method == "gradient" and not given and gradient is not None and gradient.method == "gradient"
            and (gradient.model_name, gradient.target, gradient.reduction, gradient.precision)
            == (model_name, int(target), reduction, precision))


def methods_to_compute(image_key: str, model_name: str, target: int, methods: tuple[str, ...],
                       params: dict[str, dict[str, object]], reduction: str, precision: str,
                       gradient: ImageAnalysis | None = None) -> list[str]:
    """The methods :func:`compare_methods` (same arguments) would compute now: those no cache holds."""
    return [m for m in methods
            if not _from_analysis(m, dict(params.get(m) or {}), gradient, model_name, target, reduction, precision)
            and run_key(image_key, model_name, target, m, dict(params.get(m) or {}), reduction, precision)
            not in method_runs()]


def comparison_key(image_key: str, model_name: str, comparison: MethodComparison) -> tuple:
    """What identifies a comparison's maps, for the caches built on them."""
    return (image_key, get_model(model_name).key, comparison.target, comparison.reduction, comparison.precision,
            tuple((m, method_params.cache_key(r.given)) for m, r in comparison.runs.items()))


def agreement(key: tuple, comparison: MethodComparison, metric: str) -> AgreementMatrix:
    """:func:`saliency_core.evaluation.method_comparison.agreement_matrix` of a comparison's maps.

    ``key``: :func:`comparison_key` of the comparison.
    """
    return cached_with_progress(("agreement", *key, metric), "Comparing the maps…",
                                lambda progress: method_comparison.agreement_matrix(comparison.maps(), metric),
                                cache=method_runs(), bar=False, what="comparison")


def ranking_key(key: tuple, steps: int, baseline: str, seed: int) -> tuple:
    """What :func:`rank_methods` caches a ranking on (``key``: :func:`comparison_key`)."""
    return ("method_ranking", *key, steps, baseline, seed)


def rank_methods(key: tuple, model_name: str, comparison: MethodComparison, _x, *, steps: int, baseline: str,
                 seed: int) -> MethodRanking:
    """:func:`saliency_core.evaluation.method_ranking.ranking_table` of a comparison (``key``: :func:`comparison_key`),
    with a progress bar and the time left; kept with the other slow results."""
    model = get_model(model_name)
    batch = 8 if model.device.type == "cpu" else 64  # small chunks were faster on a 2-core CPU, large suit GPUs
    n = len(comparison.entries())
    return cached_with_progress(
        ranking_key(key, steps, baseline, seed),
        f"Ranking {n} maps: deletion and insertion ({steps} steps), then each method on the randomised model…",
        lambda progress: method_ranking.ranking_table(model, _x, comparison, steps=steps, baseline=baseline,
                                                      seed=seed, batch_size=batch, progress=progress),
        what="ranking")


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


@st.cache_data(max_entries=16, show_spinner="Bootstrapping the confidence intervals…")
def dataset_leaderboard(digest: str, by: str, _frame: pd.DataFrame) -> leaderboard.Leaderboard:
    """The faithfulness leaderboard of a results table; ``digest``: :func:`dataset_view.frame_digest` of it."""
    return leaderboard.leaderboard(_frame, by=by)


@st.cache_data(ttl=60, show_spinner=False)
def _dataset_roots(root: str, folders: tuple[str, ...]) -> list[Path]:
    return results_access.dataset_roots(root, folders)


def read_dataset_image(path: str) -> bytes:
    """The bytes of a dataset image named in results (:func:`saliency_core.jobs.results_access.read_dataset_image`)."""
    root = results_dir()
    return results_access.read_dataset_image(path, _dataset_roots(str(root), tuple(results_folders())))


@st.cache_data(max_entries=64, show_spinner=False)
def dataset_thumbnail(path: str) -> Image.Image:
    """A dataset image (by its path in the results) shrunk for display; raises OSError or SaliencyError."""
    image = load_image(read_dataset_image(path))
    image.thumbnail((320, 320))
    return image
