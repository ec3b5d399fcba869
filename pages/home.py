"""Home: what this is, the model in use, and how to read a saliency map."""

from __future__ import annotations

import streamlit as st

from pages.ui import sidebar, site
from pages.ui.text import plain

v = sidebar.view()

st.title("Which pixels drive the classifier's decision?")
st.markdown(
    """
This dashboard computes **gradient saliency maps** (Simonyan, Vedaldi & Zisserman,
*Deep Inside Convolutional Networks*, ICLR Workshop 2014; the "Network Visualization"
exercise of Stanford's cs231n) for a pretrained ImageNet classifier, and compares the two
classic ways of asking the question:

* **Score gradient** `∂s_y/∂x`: how much each pixel would raise the unnormalised score
  (logit) of the target class `y`.
* **Loss gradient** `∂L/∂x` with `L = −log p_y` (cross-entropy): how much each pixel would
  change the training loss for that class.

By default the map value of a pixel is the largest absolute gradient over its three colour
channels, as in the paper; the sidebar's *Advanced* section offers mean-abs and L2 instead.
"""
)

c1, c2, c3 = st.columns(3)
c1.metric("Model", plain(v.model.spec.title.split(" (")[0]))  # a models folder names its own
c2.metric("Device", str(v.model.device))
c3.metric("Image", plain(v.image.title) if v.image else "none")  # metric values render Markdown
st.caption(f"Weights: {plain(v.model.spec.weights)}. Preprocessing: {v.model.preprocessing.describe()}.")

st.subheader("How to read a saliency map")
st.markdown(
    """
* **Bright pixels** are the ones where a small change would move the model's output most.
  They are a *local sensitivity*, not proof that the model "looks" there.
* **Score and loss maps differ** because `∂L/∂x = −(1 − p_y)·∂s_y/∂x + Σ_{k≠y} p_k·∂s_k/∂x`.
  When the model is confident (`p_y → 1`) the first term fades and the loss map shows mostly
  what separates the target from its competitors. The *Compare* page shows both terms.
* **Channel reduction matters**: max over RGB (as in the paper and cs231n) is the default;
  mean-abs and L2 are offered because other libraries use them.
* Hover over any map to read the raw value and the signed gradient of each colour channel.
"""
)

st.subheader("Pages")
links = [p for p in site.PAGES if p.url_path is not None]
for start in range(0, len(links), 2):  # two a row: seven in one row cut their titles off ("Compare score v…")
    for col, p in zip(st.columns(2), links[start:start + 2], strict=False):
        col.page_link(p.file, label=p.title, icon=p.icon)
        col.caption(p.summary)
st.caption("The page, model, image, target, method, reduction and precision live in the address bar: copy "
           "the link to share what you see. Display options (colour map, opacity, clipping) stay with you.")
if v.problem:
    (st.error if v.problem_is_error else st.info)(v.problem)
