"""Where the image comes from: a sample photo, an upload, a stored upload named in a link, a cs231n .npz.

Uploads are kept in the content-addressed upload store, so the link to one
works for a colleague; an image from an .npz is stored as a lossless PNG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

from pages.ui import caches
from pages.ui.labels import UPLOAD_TYPES
from pages.ui.text import plain
from saliency_core.errors import SaliencyError
from saliency_core.inputs.images import encode_png, image_sha256, load_image
from saliency_core.inputs.samples import SampleImage, sample_images
from saliency_core.models.registry import LoadedModel, imagenet_categories


@dataclass
class ImageChoice:
    """The image to analyse, as the pages need it: never the full-size decode (see ``caches.image_views``)."""

    key: str  # sha256 of the bytes (or pixels) the image came from
    title: str  # a name from a file, a link or a dataset: data, shown only as text
    label: int | None
    source: str  # human-readable origin, for provenance
    crop: np.ndarray  # (crop, crop, 3) uint8, what the active model sees
    thumbnail: Image.Image  # at most caches.THUMBNAIL_PX a side
    notes: tuple[str, ...] = ()  # what decoding changed, in words (transparent pixels filled with white)


def _choice(key: str, title: str, label: int | None, source: str, model: LoadedModel,
            load: Callable[[list[str]], Image.Image]) -> ImageChoice:
    """``load(notes)`` decodes the image (see ``caches.image_views``)."""
    if label is not None and model.spec.source == "custom" and model.categories != imagenet_categories():
        label = None  # an ImageNet label means nothing to a model with its own classes
    thumbnail, crop, notes = caches.image_views(key, model.name, load)
    return ImageChoice(key, title, label, source, crop, thumbnail, notes)


def _show(choice: ImageChoice, caption: str) -> None:
    """The chosen image in the sidebar, and what its decoding changed (transparency filled with white)."""
    st.image(choice.thumbnail, caption=caption, width="stretch")
    for note in choice.notes:
        st.info(note, icon=":material/info:")


def from_sample(s: SampleImage, model: LoadedModel) -> ImageChoice:
    return _choice(s.sha256, s.title, s.label, f"sample:{s.name}", model, lambda notes: s.image)


class NoImage(Exception):
    """Why there is no image to show; ``error`` when the user's file was at fault (else a hint)."""

    def __init__(self, message: str, error: bool) -> None:
        super().__init__(message)
        self.error = error


#: The uploader's line under its button ("20MB per file • PNG, JPG, WEBP, GIF, BMP, TIF, NPZ") is one line that
#: Streamlit cuts with an ellipsis at the sidebar's width, hiding the last formats; wrapped, it shows them all.
_UPLOADER_STYLE = ("<style>[data-testid='stFileUploaderDropzoneInstructions'] span "
                   "{white-space: normal; overflow: visible; text-overflow: clip;}</style>")


def _remember_upload() -> None:
    # A new file in the uploader makes it the image source.
    if st.session_state.get("upload_file") is not None:
        st.session_state["source"] = "upload"
        st.session_state.pop("prefer_stored", None)


def image_picker(model: LoadedModel) -> ImageChoice:
    """Draw the image controls (in the sidebar) and return the chosen image, or raise :class:`NoImage`."""
    st.segmented_control("Image", ["sample", "upload"], key="source", required=True,
                         format_func=lambda s: {"sample": "Sample photo", "upload": "Your image"}[s])
    samples = {s.name: s for s in sample_images()}
    st.html(_UPLOADER_STYLE)  # only a style: drawn nowhere
    uploaded = st.file_uploader("Upload a photo or a cs231n .npz batch", type=UPLOAD_TYPES, key="upload_file",
                                on_change=_remember_upload, help="PNG, JPEG, WebP, GIF, BMP or TIFF photos; "
                                "an .npz with arrays X (N, H, W, 3) and y (N,) as in cs231n's imagenet_val_25.npz.")
    if st.session_state.get("source") == "sample":
        name = st.selectbox("Sample", list(samples), key="sample", format_func=lambda n: samples[n].title)
        choice = from_sample(samples[name or "coffee"], model)
        st.image(choice.thumbnail, caption=samples[name or "coffee"].description, width="stretch")
        return choice
    if uploaded is not None and not st.session_state.get("prefer_stored"):
        return _from_upload(uploaded, model)
    sha = st.session_state.get("image_sha")
    if sha:
        return _from_store(sha, model)
    raise NoImage("Upload a photo (PNG, JPEG, WebP, GIF, BMP or TIFF) to analyse it, or pick a sample photo.",
                  error=False)


def _is_npz(name: str) -> bool:
    return name.lower().endswith(".npz")


def _from_upload(uploaded, model: LoadedModel) -> ImageChoice:
    data = uploaded.getvalue()
    sha = image_sha256(data)
    try:
        if _is_npz(uploaded.name):
            return _from_npz(uploaded.name, sha, caches.npz_batch(sha, data), model)
        choice = _choice(sha, uploaded.name, None, f"upload:{uploaded.name}", model,
                         lambda notes: load_image(data, notes=notes))
    except SaliencyError as exc:
        # The link must not keep pointing at an earlier image the user no longer sees.
        st.session_state.pop("image_sha", None)
        raise NoImage(f"{plain(uploaded.name)}: {plain(exc, 1000)}", error=True) from exc
    caches.upload_store().put(sha, data, {"name": uploaded.name})
    st.session_state["image_sha"] = sha
    _show(choice, plain(uploaded.name))
    return choice


def _from_npz(name: str, npz_sha: str, batch, model: LoadedModel) -> ImageChoice:
    st.session_state["npz"] = (npz_sha, name)
    cats = imagenet_categories()
    i = st.selectbox("Image in the batch", range(len(batch)), key="npz_index",
                     format_func=lambda j: f"#{j} · {batch[j].label} {cats[batch[j].label]}")
    item = batch[i or 0]
    png = encode_png(item.image)
    sha = image_sha256(png)
    title = f"{name} #{item.index}"  # the same title when the image is opened from a link (its stored name)
    caches.upload_store().put(sha, png, {"label": item.label, "name": title})
    st.session_state["image_sha"] = sha
    choice = _choice(sha, title, item.label, f"npz:{name}#{item.index}", model, lambda notes: item.image)
    _show(choice, plain(choice.title))
    return choice


def _from_store(sha: str, model: LoadedModel) -> ImageChoice:
    kept = caches.upload_store().get(sha)
    if kept is None:
        raise NoImage(f"The image in this link ({sha[:12]}…) is no longer kept on this server. "
                      "Upload it again or pick a sample photo.", error=True)
    label = kept.meta.get("label")
    label = int(label) if isinstance(label, int) and 0 <= label < 1000 else None
    name = str(kept.meta.get("name", sha[:12]))
    origin = str(kept.meta.get("origin", "a shared link"))
    try:
        choice = _choice(sha, name, label, f"link:{name}", model, lambda notes: load_image(kept.data, notes=notes))
    except SaliencyError as exc:
        raise NoImage(plain(exc, 1000), error=True) from exc
    _show(choice, f"{plain(name)} (from {plain(origin)})")
    return choice


def gallery_choices(model: LoadedModel) -> dict[str, list[ImageChoice]]:
    """Image sets for the gallery: the samples, and the uploaded .npz batch if there is one."""
    sets = {"All sample photos": [from_sample(s, model) for s in sample_images()]}
    npz = st.session_state.get("npz")
    upload = st.session_state.get("upload_file")
    if npz and upload is not None and image_sha256(upload.getvalue()) == npz[0]:
        batch = caches.npz_batch(npz[0], upload.getvalue())
        sets[f"{npz[1]} ({len(batch)} images)"] = [
            _choice(f"{npz[0]}#{item.index}", f"#{item.index}", item.label, f"npz:{npz[1]}", model,
                    lambda notes, item=item: item.image)
            for item in batch
        ]
    return sets
