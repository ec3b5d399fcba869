"""Faithfulness: which map reflects what the model uses? Every evaluation metric, deletion/insertion and
randomisation checks.

This page picks options, calls ``saliency_core`` through ``caches.cached_with_progress`` and draws.
The metrics table comes first: the metrics of the map alone at once, the localisation metrics once the user
draws the object's box on the image (or uploads a mask), the metrics that run the model when picked (each run
cached on the view, with a progress bar). Then the deletion/insertion curves (all orders in one batched
pass) with their table and download; the randomisation, slower, runs after them with its own progress bar.
"""

from __future__ import annotations

import streamlit as st

from pages.ui import budget, caches, labels, map_notes, method_params, sidebar, view_links
from pages.ui.text import plain
from saliency_core.core import limits
from saliency_core.core.baselines import BASELINE_LABELS, BASELINES
from saliency_core.core.gradients import OBJECTIVES
from saliency_core.errors import SaliencyError
from saliency_core.evaluation import faithfulness, metric_table, sanity
from saliency_core.evaluation.analysis import ImageAnalysis
from saliency_core.evaluation.metrics import get_metric
from saliency_core.figures import charts, evaluation_files, image_figures
from saliency_core.inputs import object_mask
from saliency_core.inputs.preprocessing import normalize
from saliency_core.serving.compute_cost import (
    NOTHING,
    Work,
    deletion_insertion_work,
    randomisation_work,
)
from saliency_core.serving.map_key import ComputationKey, computation_key

RANDOM = "random order"  # the reference order every map should beat
SEED = 0  # of the random order and of the re-initialised weights
STRIP_PX = 112  # the strip shows each map at most this many pixels a side (224 px maps: 2 x 2 means)
BOX = "faith_box"  # session key: the object's box (x0, y0, x1, y1) in crop pixels, or None
BOX_CHART = "faith_box_chart"
SLOW = "faith_metrics"  # session key: the picked metrics that run the model


v = sidebar.view()
st.title("Which map tells the truth?")
top = st.container()  # the analysis line and the introduction, drawn once the options below are known
view_links.warn(view_links.restore("faithfulness", view_links.PAGES["faithfulness"]))
c1, c2, c3 = st.columns(3)
steps = c1.slider("Steps", 5, limits.MAX_FAITHFULNESS_STEPS, 20, step=5, key="faith_steps", persist_state="session")
baseline = c2.selectbox("Baseline for removed pixels", BASELINES, key="faith_baseline",
                        persist_state="session", format_func=BASELINE_LABELS.get)
stages = c3.slider("Randomisation stages", 2, 12, 8, key="faith_stages", persist_state="session",
                   help="Layers are re-initialised in this many groups, from the output down.")
st.multiselect("Metrics that run the model", metric_table.MODEL_METRICS, key=SLOW, persist_state="session",
               format_func=labels.metric_label, placeholder="none: the metrics of the map alone only",
               help="Each runs the model on perturbed copies of the image (and some recompute the map): seconds to "
                    "minutes on a CPU, then cached. The metrics of the map alone are always shown.")
view_links.write(view_links.PAGES["faithfulness"])


def check_keys(a: ImageAnalysis) -> tuple[ComputationKey, ComputationKey]:
    """The cache keys of the two checks: the maps they test (the view's, for the target the analysis
    resolved) and every option of their own that changes their numbers."""
    maps = caches.view_key(v, target=a.target, label=None)
    return (computation_key("deletion_insertion", maps, SEED, RANDOM, steps, baseline),
            computation_key("randomisation", maps, SEED, stages))


def metric_keys(a: ImageAnalysis) -> dict[str, ComputationKey]:
    """Run name (:func:`saliency_core.evaluation.metric_table.runs_of`) -> the cache key of the picked slow
    metrics of the view's maps (a run that gives two metrics is one entry)."""
    maps = caches.view_key(v, target=a.target, label=None)
    return {run: computation_key("metric", maps, run, members, SEED)
            for run, members in metric_table.runs_of(st.session_state.get(SLOW) or [])}


def metrics_work(a: ImageAnalysis | None) -> Work:
    """The picked slow metrics of the score and loss maps that no cache holds."""
    keys = metric_keys(a) if a is not None else {}
    work = NOTHING
    for run, members in metric_table.runs_of(st.session_state.get(SLOW) or []):
        one = budget.metrics_work(members, v.method, v.params, v.model.preprocessing.crop)
        work += budget.unless_cached(caches.progress_results(), keys.get(run), one * len(OBJECTIVES))
    return work


def checks_work(a: ImageAnalysis | None) -> tuple[Work, tuple]:
    """What the two checks and the picked metrics would compute that no cache holds (all of it before the
    analysis is cached)."""
    curves, rand = check_keys(a) if a is not None else (None, None)
    orders = len(OBJECTIVES) + 1  # the maps and the random order
    work = (budget.unless_cached(caches.progress_results(), curves, deletion_insertion_work(orders, steps))
            + budget.unless_cached(caches.progress_results(), rand, randomisation_work(
                v.method, v.params, stages, size=v.model.preprocessing.crop))
            + metrics_work(a))
    return work, ("faithfulness", steps, baseline, stages, tuple(st.session_state.get(SLOW) or ()))


with top:  # over the compute budget, the estimate and its button appear here and the page stops
    v, a = sidebar.analysis_page(None, more=checks_work)
    method = method_params.method_summary(a.method, a.params)
    st.markdown(
        "Two tests of whether a map reflects what the model actually uses. **Deletion / insertion** "
        "(Petsiuk, Das & Saenko, *RISE*, BMVC 2018): remove the most salient pixels first and watch the "
        "target probability fall (a faithful map makes it fall fast: **low deletion AUC**), or start from a "
        "blurred image and put them back (it should rise fast: **high insertion AUC**). **Cascading model "
        "randomisation** (Adebayo et al., *Sanity Checks for Saliency Maps*, NeurIPS 2018): re-initialise the "
        "layers from the top down; a map that explains the model must change as the model is destroyed. "
        f"Both tests here use the sidebar's method, **{method}**, for the score and the loss. First, **every "
        "evaluation metric** of those two maps: the metrics of the map alone at once, the localisation metrics "
        "once you draw the object's box, those that run the model when you pick them."
    )

# The crop the analysis already made, normalised again: no second resize.
x = normalize(a.display[None], v.model.preprocessing)
# Forward passes per chunk: small chunks were twice as fast on a 2-core CPU (cache-friendly), large ones suit GPUs.
chunk = 8 if v.model.device.type == "cpu" else 64
curves_key, randomisation_key = check_keys(a)


def record() -> dict:
    """Provenance of the downloads: image, model, target, method and options (built on download only)."""
    return sidebar.provenance_record(v, a)


def filename(kind: str) -> str:
    return evaluation_files.faithfulness_filename(kind, v.image.title, a.model_name, a.target)


# --------------------------------------------------------------------------- every metric, first

st.subheader("Every metric")
shape = a.maps[OBJECTIVES[0]].shape


def box_drawn() -> None:
    """The chart's box select: the pixels inside the last box drawn become the object (an empty selection,
    a double click, keeps the box: the button below clears it)."""
    state = st.session_state.get(BOX_CHART) or {}
    boxes = (state.get("selection") or {}).get("box") or []
    if boxes and (box := object_mask.box_from_ranges(boxes[-1].get("x", ()), boxes[-1].get("y", ()), shape)):
        st.session_state[BOX] = box


def clear_box() -> None:
    st.session_state[BOX] = None


box = st.session_state.get(BOX)
if box is not None:
    try:
        box = object_mask.check_box(box, shape)
    except SaliencyError as exc:
        st.error(f"The link's box can't be used on this image: {plain(exc, 300)}")
        box = st.session_state[BOX] = None
left, right = st.columns([1, 2])
with left:
    st.plotly_chart(image_figures.object_figure(a.display, box), key=BOX_CHART, on_select=box_drawn,
                    selection_mode="box", config={"displayModeBar": False})
    st.caption("Drag a box around the object for the localisation metrics"
               + (f" (now x {box[0]}–{box[2] - 1}, y {box[1]}–{box[3] - 1})." if box else "."))
    st.button("Clear the box", key="faith_box_clear", on_click=clear_box, disabled=box is None)
    upload = st.file_uploader("Or upload a mask", type=["png"], key="faith_mask",
                              help=f"A PNG of the crop's size, {shape[1]} × {shape[0]}: non-zero pixels are the "
                                   "object. It takes the place of the box.")
mask, mask_source = None, ""
if upload is not None:
    try:
        mask = object_mask.mask_from_png(upload.getvalue(), shape)
        mask_source = f"the uploaded mask ({int(mask.sum()):,} pixels)"
    except SaliencyError as exc:
        left.error(plain(exc, 500))
if mask is None and box is not None:
    mask = object_mask.box_mask(box, shape)
    mask_source = f"the box x {box[0]}–{box[2] - 1}, y {box[1]}–{box[3] - 1}"

judged = {method_params.map_title(a.method, m): metric_table.JudgedMap(a.method, m, a.maps[m], a.params, a.reduction)
          for m in OBJECTIVES}
names = [*metric_table.MAP_ONLY, *(metric_table.LOCALISATION if mask is not None else ())]
scores = metric_table.evaluate(None, None, None, judged, names, mask=mask)
for (_run, members), key in zip(metric_table.runs_of(st.session_state.get(SLOW) or []),
                               metric_keys(a).values(), strict=True):
    titles = " and ".join(get_metric(n).title for n in members)
    try:
        scores.update(caches.cached_with_progress(
            key, f"{titles} of the score and loss maps…",
            lambda progress, members=members: metric_table.evaluate(
                v.model, x, a.target, judged, members, precision=v.precision,
                batch_size=chunk, progress=progress)))
    except SaliencyError as exc:
        right.error(f"{titles} could not be computed: {plain(exc, 600)}")
table = metric_table.metric_table(scores, list(judged))
with right:
    st.dataframe(table.drop(columns=["name"]), hide_index=True, key="metrics_table", column_config={
        **{label: st.column_config.NumberColumn(label, format="%.4f") for label in judged},
        "metric": st.column_config.TextColumn("metric", width="medium"),
        "good": st.column_config.TextColumn("what good looks like", width="large"),
    })
    notes = [f"{method} maps, target {a.target} {plain(a.target_name)}; each metric at its paper's defaults."]
    notes.append(f"Localisation against {mask_source}." if mask is not None else
                 "Draw a box on the image (or upload a mask) for the pointing game, relevance mass accuracy and "
                 "relevance rank accuracy.")
    if not st.session_state.get(SLOW):
        notes.append("Pick metrics that run the model above (ROAD, faithfulness correlation, infidelity, "
                     "sensitivity, random logit) to add them.")
    st.caption(" ".join(notes))
view_links.write(view_links.PAGES["faithfulness"])

# --------------------------------------------------------------------------- deletion and insertion


st.subheader("Deletion and insertion")
try:
    curves = caches.cached_with_progress(
        curves_key,
        f"Deleting and inserting pixels: {len(OBJECTIVES) + 1} orders × {2 * steps} images…",
        lambda progress: faithfulness.deletion_insertion_orders(
            v.model, x, [a.target], {m: a.maps[m][None] for m in OBJECTIVES}, steps, baseline, random=RANDOM,
            batch_size=chunk, progress=progress, seed=SEED, precision=v.precision),
    )
except SaliencyError as exc:  # e.g. a model that fails on the perturbed images (model_output)
    st.error(f"The deletion and insertion curves could not be computed: {plain(exc, 1000)}")
    st.stop()
fractions = curves[RANDOM].fractions
left, right = st.columns(2)
left.plotly_chart(charts.curves_figure(fractions, {n: r.deletion[0] for n, r in curves.items()},
                                      title="Deletion: most salient pixels removed first (lower is better)"),
                  key="deletion")
right.plotly_chart(charts.curves_figure(fractions, {n: r.insertion[0] for n, r in curves.items()},
                                       title="Insertion: most salient pixels restored first (higher is better)"),
                   key="insertion")
st.dataframe(faithfulness.ranking_table(curves), hide_index=True, column_config={
    "deletion_auc": st.column_config.NumberColumn("deletion AUC", format="%.4f"),
    "insertion_auc": st.column_config.NumberColumn("insertion AUC", format="%.4f"),
    "insertion_minus_deletion": st.column_config.NumberColumn("insertion − deletion", format="%.4f"),
})
st.caption(f"{method} maps; target {a.target} {plain(a.target_name)}; {steps} steps; removed pixels replaced by the "
           f"{BASELINE_LABELS[baseline]}; {v.precision} precision. Ranked by insertion AUC minus deletion AUC. "
           "A map that does no better than the random order is not telling you much.")
st.download_button("Deletion/insertion curves (CSV)", lambda: evaluation_files.deletion_insertion_csv(curves, record()),
                   filename("deletion_insertion"), "text/csv", on_click="ignore",
                   help="One row per order and step, with the image, model, target and options in '#' lines "
                        "at the top (read with pandas.read_csv(path, comment='#')).")

# --------------------------------------------------------------------------- randomisation, after the curves

st.subheader("Cascading model randomisation")
try:
    rand = caches.cached_with_progress(
        randomisation_key,
        f"Randomising the layers stage by stage ({method_params.spec(a.method).title} at every stage)…",
        lambda progress: sanity.cascading_randomization(
            v.model, x, [a.target], objectives=OBJECTIVES, reduction=a.reduction, max_stages=stages, seed=SEED,
            progress=progress, precision=v.precision, attribution=a.method, params=v.params),
    )
except SaliencyError as exc:
    st.error(f"The randomisation check could not run: {plain(exc, 1000)}")
    st.stop()
stage_titles = [f"stage {i}" for i in range(len(rand.stages))]
st.plotly_chart(charts.curves_figure(list(range(len(rand.stages))), sanity.similarity_curves(rand),
                                    title="Similarity to the original map as layers are randomised from the top",
                                    x_title="stage", y_title="similarity", x_range=None),
                key="similarity")
strip = sanity.stage_maps(rand, max_side=STRIP_PX)
st.plotly_chart(image_figures.gallery_figure(None, strip, stage_titles), key="strip")
map_notes.caption_flat_maps((f"{method_params.map_title(a.method, m)} at {stage}", z, a.method)
                            for m, per_stage in strip.items() for stage, z in zip(stage_titles, per_stage, strict=True))
with st.expander("Which layers each stage re-initialises"):
    st.dataframe({"stage": list(range(len(rand.stages))), "layers (top → bottom)": rand.stages}, hide_index=True)
st.caption("Stage 0 is the trained model; each later stage re-initialises one more group of layers, from the "
           "output down. Sanity-check passed when the maps and the similarity fall as the model is destroyed; a map "
           "that stays the same is explaining the image, not the model. The cached model is never touched: the "
           f"test runs on a copy. Maps shown at {STRIP_PX} px a side (means of pixel blocks); the similarity is "
           "computed on the full maps.")
st.download_button("Randomisation similarity (CSV)", lambda: evaluation_files.randomisation_csv(rand, record()),
                   filename("randomisation"), "text/csv", on_click="ignore",
                   help="Spearman and SSIM per stage and map, with the layers of each stage and the image, "
                        "model, target and options in '#' lines at the top.")
