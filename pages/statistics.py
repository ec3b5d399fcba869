"""Statistics: the numbers behind the maps, with provenance for reports."""

from __future__ import annotations

import json

import streamlit as st

from pages.ui import labels, method_params, sidebar, view_links
from saliency_core.evaluation import stats
from saliency_core.evaluation.agreement import agreement_table
from saliency_core.figures import charts

v, a = sidebar.analysis_page("Per-pixel statistics", one_objective=True)

maps = {m: a.maps[m] for m in ("score", "loss")}
summary = stats.summary_table(maps)
agreement = agreement_table(maps)

names = {m: method_params.map_title(a.method, m) for m in maps}
st.subheader("Summary per map")
st.dataframe(summary.T.rename_axis("statistic").reset_index(), hide_index=True,
             height="content",  # every row, and no empty one after the last
             column_config={"statistic": st.column_config.TextColumn(width="medium"),
                            **{m: st.column_config.NumberColumn(format="%.4g") for m in maps}})
st.caption("gini: 0 = saliency spread evenly, 1 = all in one pixel. entropy_norm: entropy divided by its maximum. "
           "topK_share: share of the total saliency in the K % most salient pixels. centroid: saliency-weighted "
           "mean position (x = column, y = row).")

left, right = st.columns(2)
with left:
    # Each map over its own maximum: the loss map is often 10-100x smaller,
    # and on one absolute axis it would collapse into the first bar.
    st.plotly_chart(charts.histogram_figure({m: stats.normalize_max(z) for m, z in maps.items()},
                                           x_title="value / map maximum"), key="histogram")
with right:
    st.plotly_chart(charts.concentration_figure(maps), key="concentration")

st.subheader("Agreement between the two maps")
st.dataframe(agreement.rename(columns=labels.AGREEMENT_LABELS), hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.4f")
                            for c in labels.AGREEMENT_LABELS.values()})

st.subheader("Most salient pixels")
objective = v.objective
view_links.warn(view_links.restore("statistics", view_links.PAGES["statistics"]))
n = st.number_input("How many", 1, 1000, 20, key="top_n", persist_state="session")
view_links.write(view_links.PAGES["statistics"])
top = stats.top_pixels(maps[objective], int(n), gradients=a.channel_values(objective), image=a.display)
st.dataframe(top, hide_index=True, column_config={
    "value": st.column_config.NumberColumn(format="%.4g"),
    **{c: st.column_config.NumberColumn(format="%.3g") for c in ("grad_r", "grad_g", "grad_b")},
})
per_channel = ("grad_*: the signed gradient of each channel." if a.method == method_params.DEFAULT_METHOD
               else "grad_*: the method's signed attribution of each channel." if "grad_r" in top else "")
st.caption(f"{names[objective]} by {method_params.method_summary(a.method, a.params)} (change the method or "
           f"objective in the sidebar). r, g, b: the pixel of the crop the model saw; {per_channel}")

st.subheader("Downloads")
record = sidebar.provenance_record(v, a, objective, extra={
    "summary": json.loads(summary.to_json(orient="index")),
    "agreement": json.loads(agreement.to_json(orient="records")),
    "top_pixels": {"objective": objective, "method": a.method, "rows": json.loads(top.to_json(orient="records"))}})
stem = f"saliency_stats_{a.method}_{a.model_name}_{a.target}_{v.image.key[:12]}"
d1, d2, d3 = st.columns(3)
d1.download_button("Summary (CSV)", summary.to_csv().encode(), f"{stem}_summary.csv", "text/csv",
                   on_click="ignore", width="stretch")
d2.download_button("Top pixels (CSV)", top.to_csv(index=False).encode(), f"{stem}_top_{objective}.csv", "text/csv",
                   on_click="ignore", width="stretch")
d3.download_button("Everything with provenance (JSON)", json.dumps(record, indent=2).encode(), f"{stem}.json",
                   "application/json", on_click="ignore", width="stretch")
with st.expander("Provenance"):
    st.json({k: record[k] for k in ("model", "image", "target", "saliency", "versions")})
