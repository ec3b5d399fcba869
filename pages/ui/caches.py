"""Every cache of the dashboard but the model's (:mod:`pages.ui.model_cache`), in one place.

``st.cache_resource`` holds what is built once per server process: the upload store and the shared
LRU caches. Whatever is computed from maps (analyses, Gallery batches, the Methods page's runs,
agreements and rankings, the Faithfulness checks) is keyed on the view's map key (:func:`view_key`)
as ``computation_key(kind, maps, *options)`` (:mod:`saliency_core.serving.map_key`), in caches that
take no other key. ``st.cache_data`` holds batch-job results and thumbnails. Images and tensors are
passed beside the key, never in it: Streamlit hashes large arrays by sampling, so two images one pixel
apart could share a key otherwise.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from pages.ui import method_params
from pages.ui.model_cache import get_model
from pages.ui.session_gone import checked
from pages.ui.waiting import queued, seconds_text, shared_or_computed
from saliency_core.evaluation import analysis, method_comparison, method_ranking
from saliency_core.evaluation.analysis import AUTO_TARGET, ImageAnalysis
from saliency_core.evaluation.method_comparison import AgreementMatrix, MethodComparison
from saliency_core.evaluation.method_ranking import MethodRanking
from saliency_core.inputs.images import load_image
from saliency_core.inputs.npz import LabelledImage, load_npz_batch
from saliency_core.inputs.upload_store import UploadStore
from saliency_core.jobs import leaderboard, results, results_access
from saliency_core.methods.declaration import AttributionWarning
from saliency_core.serving.lru import LRUCache
from saliency_core.serving.map_key import ComputationKey, MapCache, MapKey, computation_key, map_key
from saliency_core.serving.memory import release_freed_memory

if TYPE_CHECKING:
    from pages.ui.image_sources import ImageChoice
    from pages.ui.sidebar import View

T = TypeVar("T")
IMAGE_LABEL = object()  # view_key's default label: the image's own
MAX_CACHED_ANALYSES = 32  # about 4 MB each
MAX_ANALYSIS_BYTES = 160 * 1024 * 1024
MAX_PROGRESS_RESULTS = 16
MAX_METHOD_RUNS = 96  # one method's two maps and attributions of one image: about 1.6 MB at 224 px
MAX_METHOD_RUN_BYTES = 192 * 1024 * 1024

# A method's warning about its own result (Integrated Gradients' gap above 10 % at fixed steps, its adaptive
# rule stopped short of its tolerance) is said under the map it concerns (method_params.convergence_note);
# letting it through as well wrote a line per map into the server's log.
warnings.filterwarnings("ignore", category=AttributionWarning)


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


def image_views(key: str, model_name: str,
                load: Callable[[list[str]], Image.Image]) -> tuple[Image.Image, np.ndarray, tuple[str, ...]]:
    """(thumbnail, the model's (crop, crop, 3) uint8 crop, notes) of the image ``key``; ``load(notes)`` decodes
    it, appending to ``notes`` what the decode changed that the user should know (``load_image``'s ``notes``:
    transparent pixels filled with white).

    ``load`` runs only when one of the three is not cached, and all are made
    from that one decode. Raises what ``load`` raises (``SaliencyError`` for
    a bad file); nothing is cached then.
    """
    cache = decoded_images()
    thumb_key, crop_key, notes_key = ("thumbnail", key), ("crop", key, get_model(model_name).key), ("notes", key)
    if thumb_key not in cache or crop_key not in cache or notes_key not in cache:
        notes: list[str] = []
        image = load(notes)
        cache.get_or_compute(thumb_key, lambda: _thumbnail(image))
        cache.get_or_compute(crop_key, lambda: get_model(model_name).crop_array(image))
        cache.get_or_compute(notes_key, lambda: tuple(notes))
        del image
        release_freed_memory()  # the full-size decode is gone: give its pages back

    def decoded_notes() -> tuple[str, ...]:
        again: list[str] = []
        load(again)
        return tuple(again)

    # Read through get_or_compute: an entry evicted meanwhile is made again, from a new decode.
    thumb = cache.get_or_compute(thumb_key, lambda: _thumbnail(load([])))
    crop = cache.get_or_compute(crop_key, lambda: get_model(model_name).crop_array(load([])))
    return thumb, crop, cache.get_or_compute(notes_key, decoded_notes)


def npz_batch(sha: str, data: bytes) -> list[LabelledImage]:
    """The images of an uploaded cs231n .npz, decoded once per file (bounded by bytes)."""
    return decoded_npz().get_or_compute(sha, lambda: load_npz_batch(data))


# --------------------------------------------------------------------------- the key of a map

def view_key(v: View, image: ImageChoice | None = None, *, method: str | None = None,
             params: Mapping[str, object] | None = None, target: int | None = None,
             label: int | object | None = IMAGE_LABEL) -> MapKey:
    """The :class:`~saliency_core.serving.map_key.MapKey` of the view's maps (sidebar's model, image, method
    and parameters, target, reduction, precision), what every page's cached computation is keyed on, with
    any of these replaced: ``image`` (a Gallery image), ``method`` (with its ``params``, else its defaults),
    ``target`` (the class index an analysis resolved) and ``label`` (default: the image's true label; None
    for a computation given a class index, which no label changes).
    """
    image = image if image is not None else v.image
    if method is None:
        method, params = v.method, v.params
    return map_key(v.model.key, image.key, method, params or {}, target=v.target if target is None else target,
                   label=image.label if label is IMAGE_LABEL else label, reduction=v.reduction,
                   precision=v.precision)


# --------------------------------------------------------------------------- analyses

@st.cache_resource
def analyses() -> MapCache:
    """Analyses of single images (any method), shared by every session; bounded by entries and bytes."""
    return MapCache(max_entries=MAX_CACHED_ANALYSES, max_bytes=MAX_ANALYSIS_BYTES)


def analysis_key(maps: MapKey) -> ComputationKey:
    """What :func:`analyse_one` caches an analysis on."""
    return computation_key("analysis", maps)


def analyse_one(maps: MapKey, _crop: np.ndarray) -> ImageAnalysis:
    """Score and loss maps of one image (its model crop, see :func:`image_views`) by any attribution method.

    The one way pages get an image's maps: cached on ``maps`` (:func:`view_key`: the image's sha256, model,
    target and label, which the automatic target follows, method, every parameter, SmoothGrad's seed
    included, reduction and precision); the crop itself is never hashed. Slow methods (SmoothGrad,
    Integrated Gradients) draw a progress bar with the time left; a second visit is instant. Parameters
    the method does not know or takes as invalid raise ``InvalidInputError`` (a SaliencyError).
    """
    params = maps.param_dict()
    what = method_params.method_summary(maps.method, params) if params else method_params.spec(maps.method).title
    return cached_with_progress(
        analysis_key(maps), f"Computing {what} for the score and the loss…",
        lambda progress: analysis.analyse(get_model(maps.model_name), _crop[None], [maps.target], [maps.label],
                                          reduction=maps.reduction, precision=maps.precision, method=maps.method,
                                          params=params, progress=progress)[0],
        cache=analyses(), bar=method_params.many_passes(maps.method, params), what="map")


def cached_analysis(maps: MapKey) -> ImageAnalysis | None:
    """The analysis :func:`analyse_one` would return for ``maps``, if it is cached, else None: computes nothing."""
    return analyses().peek(analysis_key(maps))


@st.cache_resource
def gallery_batches() -> MapCache:
    """The Gallery's batches of analyses, shared by every session; bounded by entries and bytes."""
    return MapCache(max_entries=16, max_bytes=MAX_ANALYSIS_BYTES)


def gallery_key(images: Sequence[MapKey]) -> ComputationKey:
    """What :func:`analyse_many` caches a batch on: its images' keys, in order."""
    return computation_key("gallery", images)


def analyse_many(images: tuple[MapKey, ...], _crops: np.ndarray) -> list[ImageAnalysis]:
    """Score and loss maps for several images ((N, crop, crop, 3) model crops, one :func:`view_key` each, all
    with the automatic target and the same model, method, parameters and options) in one computation.

    Kept in :func:`gallery_batches`; while another session computes the same batch the page says so. The
    computation stops at its next chunk of rows when this session is gone (:mod:`pages.ui.session_gone`).
    Raises ValueError when the keys differ in more than their images and labels (they are one computation).
    """
    first = images[0]
    if len({replace(k, image="", label=None) for k in images}) > 1 or first.target != AUTO_TARGET:
        raise ValueError("a batch's images share the automatic target, model, method and options")
    return shared_or_computed(gallery_batches(), gallery_key(images), lambda: queued(
        "gallery", lambda: analysis.analyse(
            get_model(first.model_name), _crops, [None] * len(_crops), [k.label for k in images],
            reduction=first.reduction, precision=first.precision, method=first.method, params=first.param_dict(),
            progress=checked())), what="batch of maps")


@st.cache_resource
def progress_results() -> MapCache:
    """Slow results (faithfulness, sanity checks, rankings), shared by every session; cleared with the other caches."""
    return MapCache(max_entries=MAX_PROGRESS_RESULTS)


def cached_with_progress(key: ComputationKey, label: str, compute: Callable[[Callable[[int, int], None]], T], *,
                         cache: MapCache | None = None, bar: bool = True, what: str = "result") -> T:
    """``compute(progress)`` once per key, with a progress bar and the time left while it runs.

    ``key``: :func:`~saliency_core.serving.map_key.computation_key` of the maps the result is made from and
    every option of its own that changes it; its kind names the work in the compute queue. ``cache``: where
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
                return queued(key.kind, lambda: compute(checked()))
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

        return queued(key.kind, work)

    value = shared_or_computed(cache if cache is not None else progress_results(), key, run, what)
    for element in holder:
        element.empty()
    return value


# --------------------------------------------------------------------------- the Methods page


@st.cache_resource
def method_runs() -> MapCache:
    """Each method's maps of one image (and the agreement matrices), shared by every session; bounded by bytes."""
    return MapCache(max_entries=MAX_METHOD_RUNS, max_bytes=MAX_METHOD_RUN_BYTES)


def run_key(run: MapKey) -> ComputationKey:
    """What :func:`compare_methods` caches one method's run on."""
    return computation_key("method_run", run)


def compare_methods(runs: tuple[MapKey, ...], _x, gradient: ImageAnalysis | None = None) -> MethodComparison:
    """:func:`saliency_core.evaluation.method_comparison.compare_methods` for one image, one cache entry per method.

    ``runs``: one :func:`view_key` per method, in the page's order, all with the same image, model, target
    (a class index: resolve the automatic target first), reduction and precision; ``_x`` (the (1, 3, H, W)
    normalised image) is never hashed. Adding a method to the page computes that method only; slow methods
    draw a progress bar with the time left, a second visit is instant. ``gradient``: this image's
    plain-gradient analysis (:func:`analyse_one`) when the page has it: the gradient's run is taken from it
    instead of a second backward pass, if its target, reduction and precision match.
    """
    parts = []
    for run in runs:
        if _from_analysis(run, gradient):
            parts.append(method_comparison.gradient_comparison(gradient))
            continue
        m, given = run.method, run.param_dict()
        what = method_params.method_summary(m, given) if given else method_params.spec(m).title
        parts.append(cached_with_progress(
            run_key(run), f"Computing {what} for the score and the loss…",
            lambda progress, run=run, m=m, given=given: method_comparison.compare_methods(
                get_model(run.model_name), _x, run.target, (m,), {m: given}, reduction=run.reduction,
                precision=run.precision, progress=progress),
            cache=method_runs(), bar=method_params.many_passes(m, given), what="map"))
    ok = [p for p in parts if p.target >= 0]
    first = ok[0] if ok else parts[0]
    return MethodComparison(runs={r.method: p.runs[r.method] for r, p in zip(runs, parts, strict=True)},
                            objectives=first.objectives, target=first.target, target_prob=first.target_prob,
                            reduction=runs[0].reduction, precision=runs[0].precision, shape=first.shape)


def _from_analysis(run: MapKey, gradient: ImageAnalysis | None) -> bool:
    """Whether :func:`compare_methods` takes this run from the page's plain-gradient analysis."""
    return (run.method == "gradient" and not run.params and gradient is not None and gradient.method == "gradient"
            and (gradient.model_name, gradient.target, gradient.reduction, gradient.precision)
            == (run.model_name, run.target, run.reduction, run.precision))


def methods_to_compute(runs: tuple[MapKey, ...], gradient: ImageAnalysis | None = None) -> list[str]:
    """The methods :func:`compare_methods` (same arguments) would compute now: those no cache holds."""
    return [r.method for r in runs if not _from_analysis(r, gradient) and run_key(r) not in method_runs()]


def agreement(runs: tuple[MapKey, ...], comparison: MethodComparison, metric: str) -> AgreementMatrix:
    """:func:`saliency_core.evaluation.method_comparison.agreement_matrix` of a comparison's maps
    (``runs``: the keys :func:`compare_methods` made it from)."""
    return cached_with_progress(computation_key("agreement", runs, metric), "Comparing the maps…",
                                lambda progress: method_comparison.agreement_matrix(comparison.maps(), metric),
                                cache=method_runs(), bar=False, what="comparison")


def ranking_key(runs: tuple[MapKey, ...], steps: int, baseline: str, seed: int,
                metrics: tuple[str, ...] = ()) -> ComputationKey:
    """What :func:`rank_methods` caches a ranking on (``runs``: as :func:`agreement`)."""
    return computation_key("method_ranking", runs, steps, baseline, seed, tuple(metrics))


def rank_methods(runs: tuple[MapKey, ...], comparison: MethodComparison, _x, *, steps: int, baseline: str,
                 seed: int, metrics: tuple[str, ...] = ()) -> MethodRanking:
    """:func:`saliency_core.evaluation.method_ranking.ranking_table` of a comparison (``runs``: as
    :func:`agreement`), with a progress bar and the time left; kept with the other slow results."""
    model = get_model(runs[0].model_name)
    batch = 8 if model.device.type == "cpu" else 64  # small chunks were faster on a 2-core CPU, large suit GPUs
    n = len(comparison.entries())
    also = f", then {len(metrics)} metric{'s' if len(metrics) > 1 else ''} of every map" if metrics else ""
    return cached_with_progress(
        ranking_key(runs, steps, baseline, seed, metrics),
        f"Ranking {n} maps: deletion and insertion ({steps} steps), then each method on the randomised model"
        f"{also}…",
        lambda progress: method_ranking.ranking_table(model, _x, comparison, steps=steps, baseline=baseline,
                                                      seed=seed, metrics=metrics, batch_size=batch,
                                                      progress=progress),
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
