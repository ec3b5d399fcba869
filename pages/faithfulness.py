"""Faithfulness: which map reflects what the model uses? Deletion/insertion and randomisation checks."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

from pages.ui import caches, sidebar
from saliency_core import faithfulness, plots, sanity
from saliency_core.preprocessing import normalize

METHODS = ("score", "loss")

v, a = sidebar.analysis_page("Which map tells the truth?")
st.markdown(
    "Two tests of whether a map reflects what the model actually uses. **Deletion / insertion** "
    "(Petsiuk, Das & Saenko, *RISE*, BMVC 2018): remove the most salient pixels first and watch the "
    "target probability fall (a faithful map makes it fall fast: **low deletion AUC**), or start from a "
    "blurred image and put them back (it should rise fast: **high insertion AUC**). **Cascading model "
    "randomisation** (Adebayo et al., *Sanity Checks for Saliency Maps*, NeurIPS 2018): re-initialise the "
    "layers from the top down; a map that explains the model must change as the model is destroyed."
)

c1, c2, c3 = st.columns(3)
steps = c1.slider("Steps", 5, 50, 20, step=5, key="faith_steps", persist_state="session")
baseline = c2.selectbox("Baseline for removed pixels", ["blur", "mean", "zeros"], key="faith_baseline",
                        persist_state="session",
                        format_func={"blur": "blurred image", "mean": "mean colour", "zeros": "black"}.get)
stages = c3.slider("Randomisation stages", 2, 12, 8, key="faith_stages", persist_state="session",
                   help="Layers are re-initialised in this many groups, from the output down.")

# The crop the analysis already made, normalised again: no second resize.
x = normalize(a.display[None], v.model.preprocessing)
# Forward passes per chunk: small chunks were twice as fast on a 2-core CPU (cache-friendly), large ones suit GPUs.
chunk = 8 if v.model.device.type == "cpu" else 64
y = [a.target]
key = (v.image.key, v.model.name, a.target, a.reduction)


def run_deletion_insertion(progress):
    orders = {m: (a.maps[m][None], "map") for m in METHODS} | {"random order": (None, "random")}
    out = {}
    for i, (name, (maps, order)) in enumerate(orders.items()):
        def step(done, total, i=i):
            progress(i * total + done, len(orders) * total)

        out[name] = faithfulness.deletion_insertion(v.model, x, y, maps, steps=steps, baseline=baseline, order=order,
                                                    batch_size=chunk, progress=step)
    return out


curves = caches.cached_with_progress(("deletion_insertion", *key, steps, baseline),
                                     "Deleting and inserting pixels…", run_deletion_insertion)

st.subheader("Deletion and insertion")
fractions = next(iter(curves.values())).fractions
left, right = st.columns(2)
left.plotly_chart(plots.curves_figure(fractions, {n: r.deletion[0] for n, r in curves.items()},
                                      title="Deletion: most salient pixels removed first (lower is better)"),
                  key="deletion")
right.plotly_chart(plots.curves_figure(fractions, {n: r.insertion[0] for n, r in curves.items()},
                                       title="Insertion: most salient pixels restored first (higher is better)"),
                   key="insertion")
table = pd.DataFrame({
    "order": list(curves),
    "deletion AUC": [float(r.deletion_auc[0]) for r in curves.values()],
    "insertion AUC": [float(r.insertion_auc[0]) for r in curves.values()],
})
table["insertion − deletion"] = table["insertion AUC"] - table["deletion AUC"]
table = table.sort_values("insertion − deletion", ascending=False, ignore_index=True)
table.insert(0, "rank", range(1, len(table) + 1))
st.dataframe(table, hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="%.4f") for c in ("deletion AUC", "insertion AUC", "insertion − deletion")
})
st.caption(f"Target {a.target} {a.target_name}; {steps} steps; removed pixels replaced by the "
           f"{ {'blur': 'blurred image', 'mean': 'mean colour', 'zeros': 'black'}[baseline] }. Ranked by insertion "
           "AUC minus deletion AUC. A map that does no better than the random order is not telling you much.")


def run_randomisation(progress):
    return sanity.cascading_randomization(v.model, x, y, methods=METHODS, reduction=a.reduction,
                                          max_stages=stages, progress=progress)


rand = caches.cached_with_progress(("randomisation", *key, stages), "Randomising layers…", run_randomisation)

st.subheader("Cascading model randomisation")
sim = rand.similarity
st.plotly_chart(
    plots.curves_figure(np.arange(len(rand.stages)),
                        {f"{m} · {metric}": sim[sim.method == m].sort_values("stage_index")[metric].to_numpy()
                         for m in METHODS for metric in ("spearman", "ssim")},
                        title="Similarity to the original map as layers are randomised from the top",
                        x_title="stage", y_title="similarity", x_range=None),
    key="similarity",
)
st.plotly_chart(plots.gallery_figure(None, {m: list(rand.maps[m][:, 0]) for m in METHODS},
                                     [f"stage {i}" for i in range(len(rand.stages))]), key="strip")
with st.expander("Which layers each stage re-initialises"):
    st.dataframe(pd.DataFrame({"stage": range(len(rand.stages)), "layers (top → bottom)": rand.stages}),
                 hide_index=True)
st.caption("Stage 0 is the trained model; each later stage re-initialises one more group of layers, from the "
           "output down. Sanity-check passed when the maps and the similarity fall as the model is destroyed; a map "
           "that stays the same is explaining the image, not the model. The cached model is never touched: the "
           "test runs on a copy.")

d1, d2 = st.columns(2)
d1.download_button("Deletion/insertion curves (CSV)", lambda: _curves_csv(curves), "deletion_insertion.csv",
                   "text/csv", on_click="ignore", width="stretch")
d2.download_button("Randomisation similarity (CSV)", lambda: sim.to_csv(index=False).encode(),
                   "randomisation_similarity.csv", "text/csv", on_click="ignore", width="stretch")


def _curves_csv(results) -> bytes:
    rows = [{"order": name, "fraction": f, "deletion": d, "insertion": i}
            for name, r in results.items() for f, d, i in zip(r.fractions, r.deletion[0], r.insertion[0], strict=True)]
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False)
    return buf.getvalue().encode()
