"""Methods: every attribution method × objective for the current image, how much they agree, which to believe.

This page picks methods, calls ``saliency_core.evaluation.method_comparison`` and ``method_ranking`` through
``pages/ui/caches.py`` and draws. The grid and the agreement come first; the ranking (tens of seconds
on a CPU) runs when switched on, with a progress bar. The page's choices live in the URL
(:func:`pages.ui.view_links.methods_page_choices`); a whole family of methods is one click. What they would
compute goes through the compute budget first (:mod:`pages.ui.budget`): over it, the page shows the estimate
and a button instead.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from pages.ui import budget, caches, handover, labels, map_notes, method_params, sidebar, view_links
from pages.ui.text import plain
from saliency_core.core.baselines import BASELINE_LABELS
from saliency_core.errors import SaliencyError
from saliency_core.evaluation import method_ranking, metric_table
from saliency_core.evaluation.metrics import get_metric
from saliency_core.figures import evaluation_files, method_figures
from saliency_core.inputs.preprocessing import normalize
from saliency_core.methods.declaration import FAMILIES
from saliency_core.methods.registry import by_family, map_title
from saliency_core.serving.compute_cost import NOTHING, Work, method_work, ranking_work

SEED = method_ranking.DEFAULT_SEED  # the Faithfulness page's: same random order, same randomised weights
STEPS = method_ranking.DEFAULT_STEPS
BASELINE = method_ranking.DEFAULT_BASELINE
ARROWS = {"higher": "↑", "lower": "↓"}  # a metric's better direction in its column title

v = sidebar.view()
st.title("Which method should I believe?")
OWN = view_links.methods_page_choices()  # this page's own choices, in the link
CHOICES = (*view_links.PAGES["methods"], *OWN)
PICK, PER_METHOD, IOU, RANK, RANK_METRICS = (c.key for c in OWN)
view_links.warn(view_links.restore("methods", CHOICES))
if picked := st.session_state.pop(handover.METHODS_PICK, None):  # the Dataset page's "open in Methods"
    st.session_state[PICK] = list(picked)
for choice in OWN:
    st.session_state.setdefault(choice.key, choice.default)
if v.image is None:
    (st.error if v.problem_is_error else st.info)(v.problem or "No image.")
    st.stop()
try:  # the plain gradient's analysis (cached, shared with the other pages) resolves the target, and is the
    # Gradient row of the grid
    a = caches.analyse_one(caches.view_key(v, method=method_params.DEFAULT_METHOD), v.image.crop)
except SaliencyError as exc:
    st.error(plain(exc, 1000))
    st.stop()
how = "true label" if a.target_auto and a.label is not None else ("top-1" if a.target_auto else "chosen")
st.markdown(" · ".join([plain(v.image.title), plain(v.model.spec.title),
                        f"target **{a.target} {plain(a.target_name)}** ({how}), p = {a.target_prob:.3f}",
                        f"{a.reduction} over RGB", f"{a.precision} precision"]))
st.markdown(
    "Every attribution method for the score and the loss of this image, side by side; how much their maps "
    "agree; and which of them the model's behaviour supports: **deletion / insertion** (Petsiuk, Das & Saenko, "
    "*RISE*, BMVC 2018) and **model randomisation** (Adebayo et al., *Sanity Checks for Saliency Maps*, "
    "NeurIPS 2018).")

# --------------------------------------------------------------------------- choices


def add_family(names: tuple[str, ...]) -> None:
    """Button callback: add a family's methods to the pick, after those already picked."""
    st.session_state[PICK] = list(dict.fromkeys([*(st.session_state.get(PICK) or []), *names]))


# Only what this model can run is offered (the sidebar's rule: method_params.refused); a pick from a link, the
# Dataset page or another model loses the rest, with a word on why.
refused = method_params.refused(v.model)
offered = [m for m in method_params.methods() if m not in refused]
if dropped := [m for m in st.session_state.get(PICK) or () if m in refused]:
    st.session_state[PICK] = [m for m in st.session_state[PICK] if m not in refused]
    if dropped != [m for m in OWN[0].default if m in refused]:  # the default's own are in the note below
        st.info(f"Left out, as {plain(v.model.spec.title)} can't run them: "
                f"{method_params.refusals({m: refused[m] for m in dropped})}.")
fast = ", ".join(method_params.spec(m).title for m in offered if method_params.spec(m).default_view)
slow = ", ".join(method_params.spec(m).title for m in offered if not method_params.spec(m).default_view)
st.multiselect("Methods", offered, key=PICK, persist_state="session", format_func=method_params.method_label,
               help=f"By default the methods that take one pass each ({fast}); {slow} take many passes "
                    "(seconds each).")
if refused:
    st.caption(f"Not offered for {plain(v.model.spec.title)}: {method_params.refusals(refused)}.")
families = {f: names for f, n in by_family().items() if (names := tuple(m for m in n if m not in refused))}
family_columns = st.columns([1.3] + [1] * len(families), vertical_alignment="center")
family_columns[0].caption("Add a whole family:")
for column, (family, names) in zip(family_columns[1:], families.items(), strict=True):
    column.button(f"+ {family} ({len(names)})", key=f"methods_add_{family}", on_click=add_family, args=(names,),
                  use_container_width=True,
                  help=f"{FAMILIES[family]}: " + ", ".join(method_params.spec(m).title for m in names))
c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
colorscale = c1.selectbox("Colour map", labels.COLORSCALES, key="colorscale", persist_state="session")
per_method = c2.toggle("One colour scale per method", key=PER_METHOD, persist_state="session",
                       help="Off: each map its own range (compares shapes). On: a method's score and loss maps "
                            "share one range (shows how much fainter one is).")
iou = c3.toggle("Top-5 % IoU", key=IOU, persist_state="session",
                help="Agreement as the overlap of the top 5 % pixels instead of Spearman's rank correlation.")
rank = c4.toggle("Rank the maps", key=RANK, persist_state="session",
                 help="Deletion/insertion AUCs and the randomisation check for every map: tens of seconds on a "
                      "CPU, then cached.")
st.multiselect("Also rank by", metric_table.MODEL_METRICS, key=RANK_METRICS, persist_state="session",
               format_func=labels.metric_label, disabled=not rank,
               placeholder="the metrics of the map alone only (switch on Rank the maps)" if not rank else
               "none: sparseness and complexity only",
               help="Metrics that run the model on perturbed copies of the image (some recompute each map with its "
                    "method), as more columns of the ranking: seconds to minutes per map on a CPU, then cached. "
                    "The Faithfulness page explains each.")
# The default as this model gets it (the shown-by-default methods it can run): a CNN's default pick, without the
# attention methods, is still the default and stays out of the link.
view_links.write((*view_links.PAGES["methods"],
                  dataclasses.replace(OWN[0], default=[m for m in OWN[0].default if m not in refused]), *OWN[1:]))
methods = tuple(st.session_state.get(PICK) or ())
rank_metrics = tuple(n for n in metric_table.MODEL_METRICS if n in (st.session_state.get(RANK_METRICS) or ()))
if not methods:
    st.info("Pick at least one method above.")
    st.stop()


def params_of(method: str) -> dict[str, object]:
    """The sidebar's Advanced parameters when the sidebar shows this method, else the defaults (``{}``)."""
    return dict(v.params) if method == v.method else {}


x = normalize(a.display[None], v.model.preprocessing)  # the crop the analysis made: no second resize
params = {m: params_of(m) for m in methods}
# Each method's maps of this image, for the target the analysis resolved; the grid, the agreement and the
# ranking are cached on these keys.
runs = tuple(caches.view_key(v, method=m, params=params[m], target=a.target, label=None) for m in methods)
# The compute budget: the methods no cache holds, and the ranking when it is on (before the grid, all of it).
budget_view = ("methods", runs, rank, rank_metrics)  # what the budget confirms, for this view only
this_view = (f"This page with {len(methods)} method{'s' if len(methods) > 1 else ''}"
             + (" and the ranking" if rank else "")
             + (f" with {len(rank_metrics)} more metric{'s' if len(rank_metrics) > 1 else ''}" if rank_metrics
                else ""))
SIZE = v.model.preprocessing.crop


def whole_ranking_work(given: dict[str, dict[str, object]]) -> Work:
    """The ranking of these methods' maps (``given``: method -> its parameters): deletion/insertion, the
    randomised model, and the picked metrics that run the model, of both maps of each method."""
    metrics = sum((budget.metrics_work(rank_metrics, m, p, SIZE) for m, p in given.items()), NOTHING)
    return ranking_work(given, 2 * len(given), STEPS, SIZE) + metrics * 2
try:
    missing = caches.methods_to_compute(runs, a)
    if missing:
        grid_work = sum((method_work(m, params[m], size=SIZE) for m in missing), NOTHING)
        budget.confirm(budget_view, grid_work + (whole_ranking_work(params) if rank else NOTHING),
                       v.model, v.precision, this_view)
    comparison = caches.compare_methods(runs, x, a)
except SaliencyError as exc:
    st.error(plain(exc, 1000))
    st.stop()
for m, message in comparison.failed.items():
    st.error(f"**{method_params.spec(m).title}** can't run here: {plain(message, 1000)}")
if not method_params.spec(v.method).default_view and v.method not in methods:
    st.caption(f"The sidebar's method, {method_params.method_summary(v.method, v.params, v.model)}, is not "
               "picked above; add it to see it here with those parameters.")
if not comparison.entries():
    st.stop()

# --------------------------------------------------------------------------- the grid

st.subheader("Every map")
st.plotly_chart(method_figures.method_grid_figure(comparison.by_method(), scale="method" if per_method else "map",
                                                  colorscale=colorscale), key="grid")
map_notes.caption_flat_maps((map_title(m, obj), z, m)
                            for m, by_obj in comparison.by_method().items() for obj, z in by_obj.items())
used = pd.DataFrame([{
    "method": method_params.spec(m).title,
    "parameters": method_params.method_summary(m, r.params),
    "from": ("no parameters" if not method_params.spec(m).params else
             "the sidebar's Advanced" if m == v.method else "defaults"),
    "seconds": r.seconds,
} for m, r in comparison.runs.items() if r.ok])
st.dataframe(used, hide_index=True, column_config={
    "seconds": st.column_config.NumberColumn("seconds (both maps)", format="%.2f")})
# A method that reports a completeness gap: the gap, and the steps or samples behind it, as under a map on the
# other pages (its engine notes say the same in fewer words).
notes = [f"{method_params.spec(m).title}: {n}" for m, r in comparison.runs.items() for n in (
    [method_params.convergence_note(m, r.completeness_gap, r.params, r.steps_used, r.converged)]
    if r.completeness_gap else r.notes)]
st.caption("Rows are methods, columns the score s_y and the loss (−L where the method's sign matters: positive = "
           "evidence for the target). " + ("Each method's two maps share one colour range. " if per_method else
                                           "Each map has its own colour range. ")
           + "Zoom or pan one map and the others follow; hover shows x, y and the value (the Saliency page adds "
             "each channel's value). A method's parameters come from the sidebar's Advanced when the sidebar "
             "shows that method, else its defaults. " + " ".join(notes))

# --------------------------------------------------------------------------- agreement

st.subheader("How much the maps agree")
metric = "iou_top5" if iou else "spearman"
matrix = caches.agreement(runs, comparison, metric)
labelled = {map_title(m, obj): z for m, by_obj in comparison.by_method().items() for obj, z in by_obj.items()}
st.plotly_chart(method_figures.agreement_heatmap(matrix, maps=labelled), key="agreement")
what = ("the overlap (intersection over union) of their top 5 % pixels" if iou else
        "Spearman's rank correlation ρ of their pixel values")
st.caption(f"Every pair of maps compared by {what}, ordered by hierarchical clustering (average linkage) so that "
           "similar maps sit together. — : a constant map has no ranking to correlate (e.g. Grad-CAM when the "
           "target's evidence is nowhere positive).")

# --------------------------------------------------------------------------- ranking

st.subheader("Which map does the model's behaviour support?")
if not rank:
    st.info("Switch on **Rank the maps** above for each map's deletion and insertion AUCs and its similarity "
            f"after the model's weights are destroyed ({len(comparison.entries())} maps: tens of seconds on a CPU, "
            "then cached).", icon=":material/leaderboard:")
    st.stop()
try:
    ranked = {m: r.given for m, r in comparison.runs.items() if r.ok}
    budget.confirm(budget_view, budget.unless_cached(caches.progress_results(),
                                                     caches.ranking_key(runs, STEPS, BASELINE, SEED, rank_metrics),
                                                     whole_ranking_work(ranked)),
                   v.model, v.precision, this_view)
    ranking = caches.rank_methods(runs, comparison, x, steps=STEPS, baseline=BASELINE, seed=SEED,
                                  metrics=rank_metrics)
except SaliencyError as exc:
    st.error(plain(exc, 1000))
    st.stop()
st.dataframe(ranking.table.drop(columns=["method", "objective"]), hide_index=True, key="ranking", column_config={
    "rank": st.column_config.NumberColumn("rank", format="%d"),
    "deletion_auc": st.column_config.NumberColumn("deletion AUC ↓", format="%.4f"),
    "insertion_auc": st.column_config.NumberColumn("insertion AUC ↑", format="%.4f"),
    "insertion_minus_deletion": st.column_config.NumberColumn("insertion − deletion ↑", format="%.4f"),
    "randomised_spearman": st.column_config.NumberColumn("ρ after randomisation ↓", format="%.3f"),
    **{name: st.column_config.NumberColumn(f"{m.title} {ARROWS[m.better]}", format="%.4f",
                                           help=f"{m.citation}: {m.good}")
       for name in (*method_ranking.RANKING_METRICS, *rank_metrics) for m in (get_metric(name),)},
})
constant = [m for m in ranking.randomised_maps if ranking.randomised_maps[m].min() == ranking.randomised_maps[m].max()]
nan_note = ""
if constant:
    why = list(dict.fromkeys(method_params.spec(m).empty_reason for m in comparison.runs for o in comparison.objectives
                             if map_title(m, o) in constant and method_params.spec(m).empty_reason))
    nan_note = (f" {', '.join(plain(c) for c in constant)}: on the randomised model the map is constant"
                + (f" ({'; '.join(why)})" if why else "")
                + ", and a constant map has no ranking to correlate: ρ is undefined (None), not a failure of the "
                "check.")
failed = "".join(f" {method_params.spec(m).title} could not run on the randomised model: {plain(n, 300)}."
                 for m, n in ranking.notes.items())
st.caption(
    f"Sort by any column. Deletion: the target probability as the most salient pixels are replaced by the "
    f"{BASELINE_LABELS[ranking.baseline]} ({ranking.steps} steps; lower AUC is better); insertion: as they are put "
    "back (higher is better); ranked by insertion − deletion, as on the Faithfulness page, against a random order "
    "every map should beat (it has no ρ). ρ after randomisation: Spearman's ρ between the map and the same "
    "method's map on a copy of the model with every layer re-initialised (the last stage of the Faithfulness "
    f"page's cascading randomisation, seed {ranking.seed}). A map that survives the model's destruction (high ρ) "
    "cannot be explaining what this model learned: it is explaining the image (edges, contrast), so low is good. "
    + ", ".join(f"{get_metric(n).title} ({get_metric(n).citation})" for n in method_ranking.RANKING_METRICS)
    + ": of the map alone"
    + ("; " + ", ".join(f"{get_metric(n).title} ({get_metric(n).citation})" for n in rank_metrics)
       + ": run the model, each map recomputed with its method and parameters where the metric needs it (fixed "
         "seeds)" if rank_metrics else "")
    + ". The Faithfulness page explains every metric." + nan_note + failed)


def record() -> dict:
    """Provenance of the downloads (built on download only)."""
    return sidebar.provenance_record(v, a, extra={"page": "methods", "methods": list(methods)})


d1, d2 = st.columns(2)
for col, ext, mime in ((d1, "csv", "text/csv"), (d2, "json", "application/json")):
    col.download_button(
        f"Ranking ({ext.upper()})",
        (lambda: evaluation_files.ranking_csv(ranking, record())) if ext == "csv"
        else (lambda: evaluation_files.ranking_json(ranking, record())),
        evaluation_files.ranking_filename(v.image.title, a.model_name, a.target, ext), mime, on_click="ignore",
        width="stretch", help="The table with the image, model, target, each method's parameters and the ranking's "
                              "settings" + (" in '#' lines at the top (read with pandas.read_csv(path, comment='#'))."
                                            if ext == "csv" else ", and every curve."))
