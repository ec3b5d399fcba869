"""Where the image comes from: a sample photo, an upload, a stored upload named in a link, a cs231n .npz.

Uploads are kept in the content-addressed upload store, so the link to one
works for a colleague; an image from an .npz is stored as a lossless PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from PIL import Image

from pages.ui import caches
from pages.ui.labels import UPLOAD_TYPES
from saliency_core.errors import SaliencyError
from saliency_core.images import encode_png, image_sha256
from saliency_core.models import imagenet_categories
from saliency_core.samples import SampleImage, sample_images


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


class NoImage(Exception):
    """Why there is no image to show; ``error`` when the user's file was at fault (else a hint)."""

    def __init__(self, message: str, error: bool) -> None:
        super().__init__(message)
        self.error = error


def _remember_upload() -> None:
    # A new file in the uploader makes it the image source.
    if st.session_state.get("upload_file") is not None:
        st.session_state["source"] = "upload"
        st.session_state.pop("prefer_stored", None)


def image_picker() -> ImageChoice:
    """Draw the image controls (in the sidebar) and return the chosen image, or raise :class:`NoImage`."""
    st.segmented_control("Image", ["sample", "upload"], key="source", required=True,
                         format_func=lambda s: {"sample": "Sample photo", "upload": "Your image"}[s])
    samples = {s.name: s for s in sample_images()}
    uploaded = st.file_uploader("Upload a photo or a cs231n .npz batch", type=UPLOAD_TYPES, key="upload_file",
                                on_change=_remember_upload, help="PNG, JPEG, WebP, GIF, BMP or TIFF photos; "
                                "an .npz with arrays X (N, H, W, 3) and y (N,) as in cs231n's imagenet_val_25.npz.")
    if st.session_state.get("source") == "sample":
        name = st.selectbox("Sample", list(samples), key="sample", format_func=lambda n: samples[n].title)
        s = samples[name or "coffee"]
        st.image(caches.thumbnail(s.sha256, s.image), caption=s.description, width="stretch")
        return ImageChoice.from_sample(s)
    if uploaded is not None and not st.session_state.get("prefer_stored"):
        return _from_upload(uploaded)
    sha = st.session_state.get("image_sha")
    if sha:
        return _from_store(sha)
    raise NoImage("Upload a photo (PNG, JPEG, WebP, GIF, BMP or TIFF) to analyse it, or pick a sample photo.",
                  error=False)


def _is_npz(name: str) -> bool:
    return name.lower().endswith(".npz")


def _from_upload(uploaded) -> ImageChoice:
    data = uploaded.getvalue()
    sha = image_sha256(data)
    try:
        decoded = caches.decode_npz(sha, data) if _is_npz(uploaded.name) else caches.decode_image(sha, data)
    except SaliencyError as exc:
        # The link must not keep pointing at an earlier image the user no longer sees.
        st.session_state.pop("image_sha", None)
        raise NoImage(f"**{uploaded.name}**: {exc}", error=True) from exc
    if _is_npz(uploaded.name):
        return _from_npz(uploaded.name, sha, decoded)
    caches.upload_store().put(sha, data, {"name": uploaded.name})
    st.session_state["image_sha"] = sha
    st.image(caches.thumbnail(sha, decoded), caption=uploaded.name, width="stretch")
    return ImageChoice(sha, uploaded.name, decoded, None, f"upload:{uploaded.name}")


def _from_npz(name: str, npz_sha: str, batch) -> ImageChoice:
    st.session_state["npz"] = (npz_sha, name)
    cats = imagenet_categories()
    i = st.selectbox("Image in the batch", range(len(batch)), key="npz_index",
                     format_func=lambda j: f"#{j} · {batch[j].label} {cats[batch[j].label]}")
    item = batch[i or 0]
    png = encode_png(item.image)
    sha = image_sha256(png)
    caches.upload_store().put(sha, png, {"label": item.label, "name": f"{name}#{item.index}"})
    st.session_state["image_sha"] = sha
    st.image(caches.thumbnail(sha, item.image), caption=f"{name} #{item.index}", width="stretch")
    return ImageChoice(sha, f"{name} #{item.index}", item.image, item.label, f"npz:{name}#{item.index}")


def _from_store(sha: str) -> ImageChoice:
    kept = caches.upload_store().get(sha)
    if kept is None:
        raise NoImage(f"The image in this link ({sha[:12]}…) is no longer kept on this server. "
                      "Upload it again or pick a sample photo.", error=True)
    try:
        image = caches.decode_image(sha, kept.data)
    except SaliencyError as exc:
        raise NoImage(str(exc), error=True) from exc
    label = kept.meta.get("label")
    label = int(label) if isinstance(label, int) and 0 <= label < 1000 else None
    name = str(kept.meta.get("name", sha[:12]))
    origin = str(kept.meta.get("origin", "a shared link"))
    st.image(caches.thumbnail(sha, image), caption=f"{name} (from {origin})", width="stretch")
    return ImageChoice(sha, name, image, label, f"link:{name}")


def sample_choices() -> list[ImageChoice]:
    return [ImageChoice.from_sample(s) for s in sample_images()]


def gallery_choices() -> dict[str, list[ImageChoice]]:
    """Image sets for the gallery: the samples, and the uploaded .npz batch if there is one."""
    sets = {"All sample photos": sample_choices()}
    npz = st.session_state.get("npz")
    upload = st.session_state.get("upload_file")
    if npz and upload is not None and image_sha256(upload.getvalue()) == npz[0]:
        batch = caches.decode_npz(npz[0], upload.getvalue())
        sets[f"{npz[1]} ({len(batch)} images)"] = [
            ImageChoice(f"{npz[0]}#{item.index}", f"#{item.index}", item.image, item.label, f"npz:{npz[1]}")
            for item in batch
        ]
    return sets
