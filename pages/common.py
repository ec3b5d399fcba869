"""The only Streamlit-aware helpers: cached loaders, the shared sidebar, links.

Pages stay thin: they call :func:`view` for the user's choices and
:func:`current_analysis` for the numbers, then draw. All caching lives here.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import streamlit as st
from PIL import Image

from saliency_core import analysis as core_analysis
from saliency_core import results
from saliency_core.analysis import AUTO_TARGET, ImageAnalysis
from saliency_core.npz import LabelledImage, load_npz_batch
from saliency_core.errors import SaliencyError
from saliency_core.imagefolder import read_item_bytes, split_item_path
from saliency_core.images import SampleImage, encode_png, image_sha256, load_image, sample_images
from saliency_core.models import (
    DEFAULT_MODEL,
    REGISTRY,
    LoadedModel,
    ModelStatus,
    imagenet_categories,
    list_models,
    load_model,
)
from saliency_core.store import UploadStore, is_sha256

T = TypeVar("T")
MAX_CACHED_ANALYSES = 32  # about 4 MB each
COLORSCALES = ["hot", "viridis", "inferno", "gray", "turbo", "jet"]  # "hot" is what cs231n draws with
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "npz"]
METHOD_LABELS = {"score": "Score gradient  ∂s_y/∂x", "loss": "Loss gradient  ∂L/∂x"}
REDUCTION_LABELS = {"max": "max |g| over RGB (Simonyan et al.)", "mean_abs": "mean |g| over RGB",
                    "l2": "L2 norm over RGB"}
AGREEMENT_LABELS = {"pearson": "Pearson r", "spearman": "Spearman ρ", "cosine": "cosine similarity",
                    "ssim": "SSIM", "iou_top1": "IoU of top 1 %", "iou_top5": "IoU of top 5 %",
                    "iou_top10": "IoU of top 10 %"}
PRECISION_LABELS = {"exact": "exact (strict float32)", "fast": "fast (float16 autocast on GPU)"}


# --------------------------------------------------------------------------- caches

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


@st.cache_data(max_entries=64, show_spinner=False)
def decode_image(sha: str, _data: bytes) -> Image.Image:
    """Decoded upload, keyed on the sha256 of its bytes (never on the bytes themselves)."""
    return load_image(_data)


@st.cache_data(max_entries=8, show_spinner=False)
def decode_npz(sha: str, _data: bytes) -> list[LabelledImage]:
    return load_npz_batch(_data)


@st.cache_data(max_entries=MAX_CACHED_ANALYSES, show_spinner="Computing score and loss gradients…")
def analyse_one(image_key: str, model_name: str, target: int, label: int | None, reduction: str,
                precision: str, _image: Image.Image) -> ImageAnalysis:
    """Both maps for one image; cached on the image's sha256 and every option that changes the numbers."""
    return core_analysis.analyse(get_model(model_name), [_image], [target], [label], reduction=reduction,
                                 precision=precision)[0]


@st.cache_data(max_entries=16, show_spinner=False)
def analyse_many(image_keys: tuple[str, ...], model_name: str, labels: tuple[int | None, ...], reduction: str,
                 precision: str, _images: tuple[Image.Image, ...]) -> list[ImageAnalysis]:
    """Both maps for several images in one batched computation (automatic targets)."""
    return core_analysis.analyse(get_model(model_name), list(_images), [None] * len(_images), list(labels),
                                 reduction=reduction, precision=precision)


class _LRU:
    """A small thread-safe least-recently-used cache for results computed with a progress bar.

    ``st.cache_data`` replays the elements a cached function draws, so a
    function that reports progress can't be cached with it; this holds such
    results instead, with the same kind of bound.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: tuple, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]  # type: ignore[return-value]
        value = compute()  # outside the lock: other sessions keep working meanwhile
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return value


@st.cache_resource
def progress_results() -> _LRU:
    """Slow results (faithfulness, sanity checks), shared by every session; cleared with the other caches."""
    return _LRU(max_entries=16)


def cached_with_progress(key: tuple, label: str, compute: Callable[[Callable[[int, int], None]], T]) -> T:
    """``compute(progress)`` once per key, with a progress bar while it runs."""
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
    """Where the Dataset page looks for results folders: ``SALIENCY_RESULTS_DIR``, default ``./results``."""
    return Path(os.environ.get("SALIENCY_RESULTS_DIR", "results")).expanduser().resolve()


def results_folders() -> list[str]:
    """Names of the folders under :func:`results_dir` that hold batch-job results, newest first."""
    root = results_dir()
    if not root.is_dir():
        return []
    found = [p for p in [root, *root.iterdir()]
             if p.is_dir() and ((p / results.MANIFEST).is_file() or (p / results.RESULTS).is_dir())]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.relative_to(root).as_posix() or "." for p in found]


def _fingerprint(folder: Path) -> tuple:
    # New parts written by a job still running make a new cache key.
    files = sorted(folder.glob("*/part-*.parquet"))
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@st.cache_data(max_entries=4, show_spinner="Reading the results…")
def _load_results(path: str, fingerprint: tuple) -> results.ResultsFolder:
    return results.load_results(path)


def load_results_folder(name: str) -> results.ResultsFolder:
    """A results folder under :func:`results_dir` by name (never a path outside it)."""
    root = results_dir()
    folder = (root / name).resolve()
    if folder != root and root not in folder.parents:
        raise SaliencyError(f"{name} is outside the results directory")
    return _load_results(str(folder), _fingerprint(folder))


@st.cache_data(max_entries=4, show_spinner="Reading the Parquet file…")
def load_results_upload(sha: str, _data: bytes) -> results.ResultsFolder:
    return results.load_parquet_bytes(_data)


@st.cache_data(max_entries=64, show_spinner=False)
def dataset_thumbnail(path: str) -> Image.Image:
    """A dataset image (by its path in the results) shrunk for display; raises OSError or SaliencyError."""
    image = load_image(read_dataset_image(path))
    image.thumbnail((320, 320))
    return image


def read_dataset_image(path: str) -> bytes:
    """The bytes of a dataset image named in results, if it lies in a dataset of this server's results.

    Rows come from Parquet files, and an uploaded one could name any file on
    the server: only files under the dataset root of a results folder in
    :func:`results_dir` (from its manifest) are read.

    Raises
    ------
    SaliencyError : the path is outside every such dataset.
    OSError : the file can't be read.
    """
    file = split_item_path(path)[0].resolve()
    roots = _dataset_roots(tuple(results_folders()))
    if not any(file == root or root in file.parents for root in roots):
        raise SaliencyError("it is not in a dataset of the results on this server; only those images are opened")
    return read_item_bytes(path)


@st.cache_data(ttl=60, show_spinner=False)
def _dataset_roots(folders: tuple[str, ...]) -> list[Path]:
    roots = []
    for name in folders:
        root = results.read_manifest(results_dir() / name).get("dataset", {}).get("root")
        if root:
            roots.append(Path(root).resolve())
    return roots


def open_in_compare(path: str, key: str, label: int | None, model_name: str | None) -> None:
    """Button callback: make a dataset image the current one, then the page moves to Compare.

    The image is kept in the upload store like an upload, so the Compare
    page's link can be shared.
    """
    try:
        data = read_dataset_image(path)
        load_image(data)
    except (OSError, SaliencyError) as exc:
        st.session_state["dataset_problem"] = f"**{key}** can't be opened: {exc}"
        return
    sha = image_sha256(data)
    meta = {"name": key, "origin": "the dataset results"}
    if label is not None:
        meta["label"] = int(label)
    upload_store().put(sha, data, meta)
    st.session_state.update(source="upload", image_sha=sha, prefer_stored=True, target=AUTO_TARGET,
                            goto_compare=True)
    if model_name in REGISTRY and model_statuses()[model_name].available:
        st.session_state["model"] = model_name


# --------------------------------------------------------------------------- the user's choices

@dataclass
class ImageChoice:
    key: str  # sha256 of the bytes the image came from
    title: str
    image: Image.Image
    label: int | None
    source: str  # human-readable origin, for provenance

    @classmethod
    def from_sample(cls, s: SampleImage) -> ImageChoice:
        return cls(s.sha256, s.title, s.image, s.label, f"sample:{s.name}")


@dataclass
class View:
    model: LoadedModel
    image: ImageChoice | None
    target: int  # AUTO_TARGET or a class index
    method: str
    reduction: str
    precision: str
    problem: str | None = None  # why there is no image, shown by the pages
    problem_is_error: bool = False  # an error the user caused, not a hint


# The view in the address bar, by option *name* (stable, readable links):
# key -> (default, parser returning the value or None when invalid).
def _int_in(lo: int, hi: int):
    def parse(text: str) -> int | None:
        try:
            value = int(text)
        except ValueError:
            return None
        return value if lo <= value <= hi else None

    return parse


URL_STATE = {
    "model": (DEFAULT_MODEL, lambda t: t if t in REGISTRY else None),
    "source": ("sample", lambda t: t if t in ("sample", "upload") else None),
    "sample": ("coffee", lambda t: t if t in {x.name for x in sample_images()} else None),
    "target": (AUTO_TARGET, _int_in(0, 999)),
    "method": ("score", lambda t: t if t in METHOD_LABELS else None),
    "reduction": ("max", lambda t: t if t in REDUCTION_LABELS else None),
    "precision": ("exact", lambda t: t if t in PRECISION_LABELS else None),
}


def _restore_from_url() -> None:
    """On a session's first run, take the view from the address bar (a shared link)."""
    if st.session_state.get("_url_restored"):
        return
    st.session_state["_url_restored"] = True
    params = st.query_params
    for key, (default, parse) in URL_STATE.items():
        value = parse(params[key]) if key in params else None
        st.session_state.setdefault(key, default if value is None else value)
    if is_sha256(params.get("image")):
        st.session_state["image_sha"] = params["image"]  # a link to an upload
        if "source" not in params:
            st.session_state["source"] = "upload"


def _write_url() -> None:
    """Mirror the view into the address bar by name; defaults are left out to keep links short."""
    params = {key: str(st.session_state[key]) for key, (default, _) in URL_STATE.items()
              if st.session_state.get(key, default) != default}
    sha = st.session_state.get("image_sha")
    if st.session_state.get("source") == "upload" and sha:
        params["image"] = sha
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def _model_picker() -> LoadedModel:
    statuses = model_statuses()

    def label(name: str) -> str:
        s = statuses[name]
        return s.title if s.available else f"{s.title} — unavailable"

    st.selectbox("Classifier", list(REGISTRY), key="model", format_func=label,
                 help="Models whose weights are not on this server are marked unavailable.")
    chosen = st.session_state.get("model") or DEFAULT_MODEL
    active = st.session_state.get("active_model", DEFAULT_MODEL)
    if not statuses[chosen].available:
        st.error(f"**{statuses[chosen].title}** can't be loaded here: {statuses[chosen].reason}. "
                 f"Still using {REGISTRY[active].title}.")
    else:
        try:
            get_model(chosen)
            active = chosen
        except SaliencyError as exc:
            st.error(f"{exc} Still using {REGISTRY[active].title}.")
    st.session_state["active_model"] = active
    model = get_model(active)
    st.caption(f"Device: **{model.device}** · {model.spec.weights}")
    return model


def _remember_upload() -> None:
    # A new file in the uploader makes it the image source.
    if st.session_state.get("upload_file") is not None:
        st.session_state["source"] = "upload"
        st.session_state.pop("prefer_stored", None)


class _Problem(Exception):
    """Why there is no image to show; ``error`` when the user's file was at fault."""

    def __init__(self, message: str, error: bool) -> None:
        super().__init__(message)
        self.error = error


def _image_picker() -> ImageChoice:
    st.segmented_control("Image", ["sample", "upload"], key="source", required=True,
                         format_func=lambda s: {"sample": "Sample photo", "upload": "Your image"}[s])
    samples = {s.name: s for s in sample_images()}
    uploaded = st.file_uploader("Upload a photo or a cs231n .npz batch", type=UPLOAD_TYPES, key="upload_file",
                                on_change=_remember_upload, help="PNG, JPEG, WebP, GIF, BMP or TIFF photos; "
                                "an .npz with arrays X (N, H, W, 3) and y (N,) as in cs231n's imagenet_val_25.npz.")
    if st.session_state.get("source") == "sample":
        name = st.selectbox("Sample", list(samples), key="sample", format_func=lambda n: samples[n].title)
        s = samples[name or "coffee"]
        st.image(thumbnail(s.sha256, s.image), caption=s.description, width="stretch")
        return ImageChoice.from_sample(s)
    if uploaded is not None and not st.session_state.get("prefer_stored"):
        return _from_upload(uploaded)
    sha = st.session_state.get("image_sha")
    if sha:
        return _from_store(sha)
    raise _Problem("Upload a photo (PNG, JPEG, WebP, GIF, BMP or TIFF) to analyse it, or pick a sample photo.",
                   error=False)


def _from_upload(uploaded) -> ImageChoice:
    data = uploaded.getvalue()
    sha = image_sha256(data)
    store = upload_store()
    try:
        if uploaded.name.lower().endswith(".npz"):
            batch = decode_npz(sha, data)
        else:
            image = decode_image(sha, data)
    except SaliencyError as exc:
        # The link must not keep pointing at an earlier image the user no longer sees.
        st.session_state.pop("image_sha", None)
        raise _Problem(f"**{uploaded.name}**: {exc}", error=True) from exc
    if uploaded.name.lower().endswith(".npz"):
        st.session_state["npz"] = (sha, uploaded.name)
        cats = imagenet_categories()
        i = st.selectbox("Image in the batch", range(len(batch)), key="npz_index",
                         format_func=lambda j: f"#{j} · {batch[j].label} {cats[batch[j].label]}")
        item = batch[i or 0]
        png = encode_png(item.image)
        sha = image_sha256(png)
        store.put(sha, png, {"label": item.label, "name": f"{uploaded.name}#{item.index}"})
        st.session_state["image_sha"] = sha
        st.image(thumbnail(sha, item.image), caption=f"{uploaded.name} #{item.index}", width="stretch")
        return ImageChoice(sha, f"{uploaded.name} #{item.index}", item.image, item.label,
                           f"npz:{uploaded.name}#{item.index}")
    store.put(sha, data, {"name": uploaded.name})
    st.session_state["image_sha"] = sha
    st.image(thumbnail(sha, image), caption=uploaded.name, width="stretch")
    return ImageChoice(sha, uploaded.name, image, None, f"upload:{uploaded.name}")


def _from_store(sha: str) -> ImageChoice:
    kept = upload_store().get(sha)
    if kept is None:
        raise _Problem(f"The image in this link ({sha[:12]}…) is no longer kept on this server. "
                       "Upload it again or pick a sample photo.", error=True)
    try:
        image = decode_image(sha, kept.data)
    except SaliencyError as exc:
        raise _Problem(str(exc), error=True) from exc
    label = kept.meta.get("label")
    label = int(label) if isinstance(label, int) and 0 <= label < 1000 else None
    name = str(kept.meta.get("name", sha[:12]))
    origin = str(kept.meta.get("origin", "a shared link"))
    st.image(thumbnail(sha, image), caption=f"{name} (from {origin})", width="stretch")
    return ImageChoice(sha, name, image, label, f"link:{name}")


@st.cache_data(max_entries=64, show_spinner=False)
def thumbnail(key: str, _image: Image.Image) -> Image.Image:
    """A small copy for the sidebar, so reruns don't re-encode a full photo."""
    thumb = _image.copy()
    thumb.thumbnail((480, 480))
    return thumb


def _target_picker(model: LoadedModel, image: ImageChoice | None) -> int:
    # A new image resets an explicitly chosen target (a shared link sets both at once).
    key = image.key if image else None
    if "last_image" in st.session_state and st.session_state["last_image"] != key:
        st.session_state["target"] = AUTO_TARGET
    st.session_state["last_image"] = key
    cats = model.categories
    label = image.label if image else None
    auto = f"Auto: true label ({label} · {cats[label]})" if label is not None else "Auto: top-1 prediction"
    st.selectbox("Target class (type to search)", [AUTO_TARGET, *range(len(cats))], key="target",
                 format_func=lambda i: auto if i == AUTO_TARGET else f"{i} · {cats[i]}")
    return int(st.session_state.get("target", AUTO_TARGET))


def render_sidebar() -> View:
    """Draw the shared sidebar; remember and return the user's choices."""
    _restore_from_url()
    problem, is_error = None, False
    with st.sidebar:
        model = _model_picker()
        st.divider()
        try:
            image = _image_picker()
        except _Problem as exc:
            image, problem, is_error = None, str(exc), exc.error
        st.divider()
        target = _target_picker(model, image)
        method = st.radio("Method", list(METHOD_LABELS), key="method", format_func=METHOD_LABELS.get,
                          horizontal=True)
        with st.expander("Advanced"):
            reduction = st.selectbox("Channel reduction", list(REDUCTION_LABELS), key="reduction",
                                     format_func=REDUCTION_LABELS.get)
            precision = st.selectbox("Precision", list(PRECISION_LABELS), key="precision",
                                     format_func=PRECISION_LABELS.get,
                                     help="Exact: float32 with TF32 off. Fast: float16 autocast on CUDA; "
                                          "on CPU both are float32.")
    _write_url()
    v = View(model, image, target, method or "score", reduction or "max", precision or "exact", problem, is_error)
    st.session_state["view"] = v
    return v


def end_of_run() -> None:
    """Called by dashboard.py after the page: a page that runs alone must not see this run's view."""
    st.session_state.pop("view", None)


def view() -> View:
    """The choices made in the sidebar on this run."""
    if "view" not in st.session_state:
        # The first request to a fresh server went straight to a page URL.
        # Streamlit then assumes the legacy pages/ layout (it only learns
        # otherwise when dashboard.py calls st.navigation) and runs the page
        # alone. Tell it, and run again through dashboard.py.
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
        st.rerun()
    return st.session_state["view"]


def current_analysis(v: View | None = None) -> ImageAnalysis | None:
    """The cached analysis of the current image, or None after showing why there is none."""
    v = v or view()
    if v.image is None:
        (st.error if v.problem_is_error else st.info)(v.problem or "No image.")
        return None
    try:
        return analyse_one(v.image.key, v.model.name, v.target, v.image.label, v.reduction, v.precision,
                           v.image.image)
    except SaliencyError as exc:
        st.error(str(exc))
        return None


def analysis_page(title: str) -> tuple[View, ImageAnalysis]:
    """The top of a page about the current image: title, the analysis and what it shows.

    Stops the page (after saying why) when there is no image to analyse.
    """
    v = view()
    st.title(title)
    a = current_analysis(v)
    if a is None:
        st.stop()
    st.markdown(caption(a, v))
    return v, a


def caption(a: ImageAnalysis, v: View) -> str:
    """One line that says what a map shows: model, target, precision."""
    how = "true label" if a.target_auto and a.label is not None else ("top-1" if a.target_auto else "chosen")
    return (f"{v.image.title if v.image else ''} · {REGISTRY[a.model_name].title} · target **{a.target} "
            f"{a.target_name}** ({how}), p = {a.target_prob:.3f} · {a.reduction} over RGB · {a.precision} "
            f"precision")


def sample_choices() -> list[ImageChoice]:
    return [ImageChoice.from_sample(s) for s in sample_images()]


def gallery_choices() -> dict[str, list[ImageChoice]]:
    """Image sets for the gallery: the samples, and the uploaded .npz batch if there is one."""
    sets = {"All sample photos": sample_choices()}
    npz = st.session_state.get("npz")
    upload = st.session_state.get("upload_file")
    if npz and upload is not None and image_sha256(upload.getvalue()) == npz[0]:
        batch = decode_npz(npz[0], upload.getvalue())
        sets[f"{npz[1]} ({len(batch)} images)"] = [
            ImageChoice(f"{npz[0]}#{item.index}", f"#{item.index}", item.image, item.label, f"npz:{npz[1]}")
            for item in batch
        ]
    return sets

