"""Compare: score and loss maps side by side, their difference, and why they differ."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages.ui import labels, map_notes, method_params, sidebar, view_links
from pages.ui.text import plain
from saliency_core.evaluation import agreement, stats
from saliency_core.evaluation.analysis import signed_channel_max
from saliency_core.figures import plots

v = sidebar.view()
gradient = v.method == method_params.DEFAULT_METHOD
v, a = sidebar.analysis_page("Score gradient vs loss gradient" if gradient
                             else f"{method_params.spec(v.method).title}: score vs loss")

view_links.warn(view_links.restore("compare", view_links.PAGES["compare"]))
c1, c2, c3 = st.columns([2, 1, 1])
colorscale = c1.selectbox("Colour map", labels.COLORSCALES, key="colorscale", persist_state="session")
shared = c2.toggle("Shared colour scale", key="shared_scale", persist_state="session",
                   help="One scale for both maps shows how much fainter the loss map is; separate scales "
                        "compare their shapes.")
view_links.write(view_links.PAGES["compare"])
c3.metric("Target probability p_y", f"{a.target_prob:.4f}", help=f"p({a.target} · {plain(a.target_name)})")

maps = {m: a.maps[m] for m in ("score", "loss")}
values = {m: c for m in maps if (c := a.channel_values(m)) is not None}
st.plotly_chart(
    plots.side_by_side_figure(maps, gradients=values, colorscale=colorscale, shared_scale=shared,
                              titles=[method_params.map_title(a.method, m) for m in maps],
                              channel_prefix=method_params.hover_prefix(a.method)),
    key="side_by_side",
)
map_notes.caption_flat_maps((method_params.map_title(a.method, m), maps[m], a.method) for m in maps)
what = "signed gradient" if gradient else "signed attribution"
st.caption("Zoom or pan one map and the other follows. "
           + (f"Hover shows the value and the {what} per channel." if values else "Hover shows the value."))

left, right = st.columns([3, 2])
with left:
    st.subheader("Signed difference")
    st.plotly_chart(
        plots.difference_figure(stats.normalize_max(maps["score"]), stats.normalize_max(maps["loss"]),
                                title="score/max(score) − loss/max(loss)"),
        key="difference",
    )
    st.caption("Each map is divided by its own maximum first, so the difference compares where the maps put "
               "their weight, not their magnitudes. Red: relatively more salient for the score.")
with right:
    st.subheader("Agreement")
    named = {method_params.map_title(a.method, m): maps[m] for m in maps}
    row = agreement.agreement_table(maps).drop(columns=["map_a", "map_b"]).iloc[0]
    table = pd.DataFrame({"score vs loss": [f"{v:.4f}" if np.isfinite(v) else agreement.undefined_agreement(k, named)
                                            for k, v in row.items()]},
                         index=[labels.AGREEMENT_LABELS.get(k, k) for k in row.index])
    st.dataframe(table)
    st.caption("Pearson and Spearman correlate the pixel values; SSIM compares local structure of the "
               "max-normalised maps; IoU is the overlap of the top 1 / 5 / 10 % pixels.")

st.subheader("Why the loss map fades as the model grows confident")
if not gradient:
    st.info(f"The decomposition ∂L/∂x = −(1 − p_y)·∂s_y/∂x + Σ_{{k≠y}} p_k·∂s_k/∂x applies to the plain gradient "
            f"only, not to {method_params.spec(a.method).title}: choose Gradient in the sidebar to see it.",
            icon=":material/info:")
    st.stop()
st.latex(r"\frac{\partial L}{\partial x} = \underbrace{-(1-p_y)\,\frac{\partial s_y}{\partial x}}_{\text{target term}}"
         r" + \underbrace{\sum_{k\neq y} p_k\,\frac{\partial s_k}{\partial x}}_{\text{other classes}}")
target_term = a.terms["target"]
others_term = a.terms["others"]
norms = {name: float(np.linalg.norm(t)) for name, t in (("target", target_term), ("others", others_term))}
m1, m2, m3 = st.columns(3)
m1.metric("1 − p_y", f"{1 - a.target_prob:.4f}")
m2.metric("‖target term‖", f"{norms['target']:.3g}")
m3.metric("‖other-classes term‖", f"{norms['others']:.3g}")
t1, t2 = st.columns(2)
with t1:
    st.plotly_chart(plots.signed_map_figure(signed_channel_max(target_term), percentile=99.5,
                                            title="target term  −(1 − p_y)·∂s_y/∂x"), key="term_target")
with t2:
    st.plotly_chart(plots.signed_map_figure(signed_channel_max(others_term), percentile=99.5,
                                            title="other classes  Σ p_k·∂s_k/∂x"), key="term_others")
st.caption(
    f"With p_y = {a.target_prob:.3f} the score gradient is scaled by 1 − p_y = {1 - a.target_prob:.3g} in the "
    "loss gradient, and the competing classes pull the other way. Each map shows, per pixel, the channel value "
    "of largest magnitude with its sign, on a scale clipped at the 99.5th percentile of |value|; the two terms add "
    "up to the loss gradient exactly."
)
