"""Saliency: what the model predicts and which pixels drove it, for one method."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.ui import labels, map_notes, method_params, sidebar, timing_log, view_links
from pages.ui.text import plain
from saliency_core.figures import image_figures, map_files, plots
from saliency_core.figures.figure_style import display_factor

v, a = sidebar.analysis_page("Saliency map", one_objective=True)
view_links.warn(view_links.restore("saliency", view_links.PAGES["saliency"]))

left, right = st.columns([1, 2])
with left:
    st.subheader("Top-5 predictions")
    top = pd.DataFrame(a.top_k(5), columns=["class", "name", "probability"])
    st.dataframe(top, hide_index=True, column_config={
        "probability": st.column_config.ProgressColumn("probability", format="%.3f", min_value=0.0, max_value=1.0),
    })
    if a.label is not None:
        verdict = "correct" if a.prediction == a.label else "wrong"
        st.caption(f"True label: {a.label} · {plain(a.categories[a.label])} — top-1 is {verdict}.")

    st.subheader("Display")
    colorscale = st.selectbox("Colour map", labels.COLORSCALES, key="colorscale", persist_state="session")
    low, high = st.slider("Clip to percentiles", 0.0, 100.0, (0.0, 100.0), step=0.5, key="clip",
                          persist_state="session",
                          help="Display only: values outside the range are drawn at the ends of the scale.")

objective = v.objective
saliency = a.maps[objective]
grads = a.channel_values(objective)  # None for Grad-CAM's one channel
prefix = method_params.hover_prefix(a.method)
zmin, zmax = plots.clip_percentile(saliency, low, high)
with right:
    label = method_params.map_title(a.method, objective)
    # One figure at a time: two (tabs) would double what each rerun sends and the browser draws.
    shown = st.segmented_control("View", ["Heatmap", "Overlay on the image"], key="saliency_view",
                                 default="Heatmap", required=True, persist_state="session",
                                 label_visibility="collapsed")
    if shown == "Overlay on the image":
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.6, step=0.05, key="opacity", persist_state="session")
        fig = image_figures.overlay_figure(a.display, saliency, opacity=opacity, colorscale=colorscale, zmin=zmin,
                                           zmax=zmax, gradients=grads, title=f"{label} over the model's crop",
                                           channel_prefix=prefix)
    else:
        fig = plots.heatmap_figure(saliency, gradients=grads, colorscale=colorscale, zmin=zmin, zmax=zmax,
                                   title=f"{label} · {a.precision} precision", channel_prefix=prefix)
    st.plotly_chart(fig.update_layout(height=620), key="heatmap")
    map_notes.caption_flat_maps([(label, saliency, a.method)])
    timing_log.map_sent("saliency")

    stem = f"saliency_{a.method}_{objective}_{a.model_name}_{a.target}_{v.image.key[:12]}"
    d1, d2 = st.columns(2)
    # Files are made when clicked, not on every rerun (the CSV has 50 000 rows).
    d1.download_button("Download map (PNG)", lambda: map_files.map_png(saliency, colorscale, zmin, zmax),
                       f"{stem}.png", "image/png", on_click="ignore", width="stretch")
    values = "gradients" if a.method == method_params.DEFAULT_METHOD else "attributions"
    d2.download_button(f"Download map and {values} (CSV)",
                       lambda: map_files.map_csv(saliency, grads, "grad" if values == "gradients" else "attr",
                                              header=sidebar.csv_provenance(v, a, objective)),
                       f"{stem}.csv", "text/csv", on_click="ignore", width="stretch",
                       help="One row per pixel, after '#' lines that name the image, model, target, method and "
                            "its parameters (read with pandas.read_csv(path, comment='#')).")
    hover = ("the value and ∂/∂R, ∂/∂G, ∂/∂B" if a.method == method_params.DEFAULT_METHOD
             else "the value and the attribution of R, G and B" if grads is not None else "the value")
    block = display_factor(saliency.shape)
    shrunk = (f" Drawn as means of {block}×{block} pixel blocks to keep the page light; the downloads hold every "
              "pixel." if block > 1 else "")
    st.caption(f"{saliency.shape[1]}×{saliency.shape[0]} map over the {a.display.shape[1]}×{a.display.shape[0]} "
               f"crop of {plain(v.image.title)} that the model saw.{shrunk} Hover for x, y, {hover}. "
               f"{label} by {method_params.method_summary(a.method, a.params)}: computed in "
               f"{a.seconds * 1000:.0f} ms ({a.precision}, {sidebar.channels_text(a)}).")
view_links.write(view_links.PAGES["saliency"])
