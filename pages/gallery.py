"""Gallery: several images at once, the cs231n figure for both methods.

The batches no cache holds go through the compute budget first (:mod:`pages.ui.budget`): over it, the page
shows the estimate and a button instead of starting.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from pages.ui import budget, caches, image_sources, labels, map_notes, method_params, sidebar, view_links
from pages.ui.text import plain
from saliency_core.errors import SaliencyError
from saliency_core.evaluation.analysis import AUTO_TARGET
from saliency_core.figures import image_figures
from saliency_core.serving.compute_cost import method_work

CHUNK = 5  # images per batched forward pass; small enough for steady progress on a laptop CPU

v = sidebar.view()
st.title("Gallery")
summary = method_params.method_summary(v.method, v.params, v.model)  # "Grad-CAM (…; layer=_blocks.15)"
intro = st.empty()  # filled once the image set, and so which images have labels, is known

choices = image_sources.gallery_choices(v.model)
sets = list(choices)
view_links.warn(view_links.restore("gallery", (*view_links.PAGES["gallery"], *view_links.gallery_choices(sets, 5, 8))))
if len(sets) > 1:
    picked = st.segmented_control("Images", sets, key="gallery_set", default=sets[0], required=True, format_func=plain,
                                  persist_state="session")
else:
    picked = sets[0]
    st.caption("Upload a cs231n .npz batch in the sidebar to see its images here too.")
items = choices[picked if picked in choices else sets[0]]
# A label is kept only where it is among the model's classes (image_sources: an ImageNet label means nothing
# to a custom model with its own classes); the other images are explained for the model's top-1 class.
labelled = sum(c.label is not None for c in items)
if labelled == len(items):
    targets = "Targets are the true labels."
elif labelled == 0:
    targets = (f"Targets are the model's top-1 classes: these images' labels are not among "
               f"{plain(v.model.spec.title)}'s classes.")
else:
    targets = ("Targets are the true labels where an image's label is among the model's classes, else the "
               "model's top-1 class.")
intro.markdown(f"Every image with its class name over its **score** and **loss** maps by "
               f"**{summary}**, as in the cs231n *Network Visualization* "
               f"figure. {targets}")
colorscale = st.selectbox("Colour map", labels.COLORSCALES, key="colorscale", persist_state="session")

chunks = [items[start:start + CHUNK] for start in range(0, len(items), CHUNK)]
# Each image's maps: the sidebar's view with this image and the automatic target (the view's target is one image's).
chunk_maps = [tuple(caches.view_key(v, c, target=AUTO_TARGET) for c in chunk) for chunk in chunks]
batch_keys = [caches.gallery_key(maps) for maps in chunk_maps]
uncached = sum(len(chunk) for chunk, key in zip(chunks, batch_keys, strict=True)
               if key not in caches.gallery_batches())
try:
    work = method_work(v.method, v.params, uncached, v.model.preprocessing.crop)
    budget.confirm(("gallery", *batch_keys), work, v.model, v.precision,
                   f"This gallery of {len(items)} images with {summary}")
except SaliencyError as exc:
    st.error(plain(exc, 1000))
    st.stop()
progress = st.progress(0.0, text=f"Computing {len(items)} images in batches of {CHUNK}…")
analyses = []
started = time.monotonic()
for chunk, maps in zip(chunks, chunk_maps, strict=True):
    try:
        analyses += caches.analyse_many(maps, np.stack([c.crop for c in chunk]))
    except SaliencyError as exc:  # e.g. a method the model cannot run: said like on the other pages
        progress.empty()
        st.error(plain(exc, 1000))
        st.stop()
    left = (time.monotonic() - started) / len(analyses) * (len(items) - len(analyses))
    progress.progress(len(analyses) / len(items), text=f"{len(analyses)} of {len(items)} images"
                      + (f" · about {left:.0f} s left" if len(analyses) < len(items) else ""))
progress.empty()

most = max(2, min(8, len(items)))
if st.session_state.get("gallery_cols", 0) > most:  # a link's value for a larger set
    st.session_state["gallery_cols"] = most
per_row = st.slider("Images per row", 1, most, min(5, len(items)), key="gallery_cols")
view_links.write((*view_links.PAGES["gallery"], *view_links.gallery_choices(sets, min(5, len(items)), most)))
for start in range(0, len(analyses), per_row):
    row = analyses[start:start + per_row]
    titles = [f"{x.target_name}{'' if x.prediction == x.target else ' (predicted: ' + x.categories[x.prediction] + ')'}"
              for x in row]
    fig = image_figures.gallery_figure([x.display for x in row],
                                       {m: [x.maps[m] for x in row] for m in ("score", "loss")},
                                       titles, colorscale=colorscale)
    st.plotly_chart(fig, key=f"gallery_{start}")
    map_notes.caption_flat_maps((f"{title}: {method_params.map_title(v.method, m)}", x.maps[m], v.method)
                                for title, x in zip(titles, row, strict=True) for m in ("score", "loss"))

correct = sum(x.prediction == x.label for x in analyses if x.label is not None)
if labelled == len(analyses):
    accuracy = f"{correct} of {len(analyses)} images classified correctly by {plain(v.model.spec.title)}. "
elif labelled:
    accuracy = (f"{correct} of the {labelled} images with a label among its classes classified correctly by "
                f"{plain(v.model.spec.title)}. ")
else:
    accuracy = ""  # no label applies: the top-1 targets say nothing about accuracy
channels = sidebar.channels_text(analyses[0]) if analyses else f"{v.reduction} over RGB"
sign = method_params.sign_note(v.method)
st.caption(f"{accuracy}"
           f"{summary}, {channels}, {v.precision} precision; each map on "
           "its own colour scale. The sidebar's model, method and its parameters, channel reduction and precision "
           f"apply here; image, target and objective do not.{' ' + sign if sign else ''}")
