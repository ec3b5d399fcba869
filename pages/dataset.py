"""Dataset: explore the results of the batch job (``python -m saliency_core.batch``) for a whole dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages.ui import caches, dataset_maps, handover, labels, sidebar, view_links
from pages.ui.text import plain
from saliency_core.errors import SaliencyError
from saliency_core.figures import charts, image_figures, plots
from saliency_core.figures.method_figures import agreement_heatmap
from saliency_core.inputs.images import image_sha256
from saliency_core.jobs import dataset_view, leaderboard, map_specs, results
from saliency_core.models.registry import REGISTRY

MAX_ERRORS_SHOWN = 50  # unreadable files listed with their reasons

sidebar.view()  # the shared sidebar ran (a first request straight to /dataset reruns through dashboard.py)
handover.follow()  # an "Open in Compare" or "Open in Methods" button asked to move

st.title("Dataset results")
st.markdown("Maps, statistics and agreement for every image of a dataset, computed by the batch job:")
st.code("python -m saliency_core.batch --images DATASET/ --out results/NAME  # or: torchrun --nproc-per-node N -m …",
        language="bash")

source = st.segmented_control("Results", ["folder", "upload"], key="dataset_source", default="folder",
                              persist_state="session", required=True,
                              format_func={"folder": "Folder on this server", "upload": "Upload a Parquet file"}.get)
folder: results.ResultsFolder | None = None
try:
    if source == "upload":
        up = st.file_uploader("A results part (results/part-*.parquet)", type=["parquet"], key="dataset_upload")
        if up is not None:
            data = up.getvalue()
            folder = caches.load_results_upload(image_sha256(data), data)
    else:
        names = caches.results_folders()
        if not names:
            st.info(f"No results under **{plain(caches.results_dir())}** yet (set `SALIENCY_RESULTS_DIR` to look "
                    "elsewhere). Run the command above with `--out` inside that folder.")
        else:
            folder_choice = (view_links.dataset_folder_choice(names),)
            view_links.warn(view_links.restore("dataset_folder", folder_choice))
            name = st.selectbox(f"Results folder in {plain(caches.results_dir())}", names, key="dataset_folder",
                                persist_state="session")
            view_links.write(folder_choice)
            folder = caches.load_results_folder(name or names[0])
except SaliencyError as exc:
    st.error(plain(exc, 1000))
if folder is None:
    st.stop()

frame, errors, manifest = folder.results, folder.errors, folder.manifest
map_names = folder.maps  # "score", "loss", or pairs such as "smoothgrad_loss"


def map_title(name: str) -> str:
    return labels.OBJECTIVE_LABELS.get(name) or map_specs.title(name)


problem = st.session_state.pop(handover.PROBLEM, None)
if problem:
    st.error(problem)

model_name = manifest.get("model", {}).get("name")
if model_name is None and "model" in frame and len(frame):
    model_name = str(frame["model"].iloc[0])
top = dataset_view.headline(frame)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Images", f"{top.images:,}")
c2.metric("Unreadable files", f"{len(errors):,}")
c3.metric("Top-1 accuracy", "—" if top.accuracy is None else f"{top.accuracy:.1%}",
          help=f"over the {top.labelled} images with a known label")
if top.median_spearman is None and len(map_names) > 2:
    c4.metric("Maps per image", len(map_names), help=", ".join(map_title(m) for m in map_names))
if top.median_spearman is not None:
    c4.metric("Median Spearman ρ", f"{top.median_spearman:.3f}",
              help="Rank correlation between each image's score map and loss map, median over the images")
title = REGISTRY[model_name].title if model_name in REGISTRY else plain(model_name or "unknown model")
if manifest:
    config = manifest.get("config", {})
    # Read again, not from the cached folder: a run's status changes while the table does not.
    runs = [r for r in results.read_manifest(folder.root).get("runs", manifest.get("runs", [])) if isinstance(r, dict)]
    last = results.run_status(runs[-1]) if runs else "unknown"
    st.caption(f"{title} · {plain(manifest.get('dataset', {}).get('root', ''))} · "
               f"{plain(config.get('reduction', 'max'))} over RGB · {plain(config.get('precision', 'exact'))} "
               f"precision · {len(runs)} run(s), last {plain(results.run_status_text(runs[-1]) if runs else '?')}")
    if last == "running":
        st.info("The batch job is still writing these results: what is below is what it has written so far. "
                "Rerun the page to see more.")
    elif last == "stopped":
        st.warning(f"The last run stopped before it finished "
                   f"({plain(runs[-1].get('reason') or 'killed or crashed')}): the table holds what it wrote. "
                   "Run the same command again to finish; what is written is skipped.")
else:
    st.caption(f"{title} · an uploaded results part (no manifest)")


def unreadable_files() -> None:
    st.subheader(f"Unreadable files ({len(errors)})")
    if not len(errors):
        st.caption("Every file was read.")
        return
    # A static table that wraps its text: a dataframe's cell cuts a reason off after a few words, and the
    # reason is what this table is for. Its cells render Markdown: names and reasons are data (plain).
    first = errors.head(MAX_ERRORS_SHOWN)
    st.table(pd.DataFrame({"file": [plain(k) for k in first["key"]],
                           "why it could not be used": [plain(e, 1000) for e in first["error"]]}),
             hide_index=True, border="horizontal")
    if len(errors) > MAX_ERRORS_SHOWN:
        st.caption(f"The first {MAX_ERRORS_SHOWN} of {len(errors):,}; the results folder's errors/ parts hold "
                   "every one, with its path.")


if frame.empty:
    st.warning("No image could be analysed; the files and the reasons are below.")
    unreadable_files()
    st.stop()

# --------------------------------------------------------------------------- filter and table
filters = (*view_links.PAGES["dataset"], view_links.dataset_classes_choice(dataset_view.target_classes(frame)))
view_links.warn(view_links.restore("dataset", filters))
with st.expander("Filter", expanded=True):
    f1, f2, f3 = st.columns([2, 1, 1])
    chosen = f1.multiselect("Target classes", dataset_view.target_classes(frame), key="dataset_classes",
                            placeholder="all classes")
    outcome = f2.selectbox("Prediction", dataset_view.OUTCOMES, key="dataset_outcome")
    text = f3.text_input("Path contains", key="dataset_text")
view_links.write(filters)  # read from the session: Rank by, drawn further down, is set before the run starts
view = dataset_view.filter_rows(frame, chosen, outcome or "all", text)

shown = view[dataset_view.table_columns(view)].reset_index(drop=True)
st.subheader(f"Images ({len(view):,} of {len(frame):,})")
event = st.dataframe(
    shown, key="dataset_table", on_select="rerun", selection_mode="single-row", hide_index=True, height=320,
    column_config={c: st.column_config.NumberColumn(format="%.3f") for c in shown.columns
                   if pd.api.types.is_float_dtype(shown[c])},
)
st.caption("Click a column header to sort; select a row to see the image and open it in Compare.")


def open_button(row: pd.Series, where: st.delta_generator.DeltaGenerator, key: str,
                methods: list[str] | None = None) -> None:
    """"Open in Compare", or with ``methods`` "Open in Methods" with those methods preselected."""
    label = None if pd.isna(row.get("label")) else int(row["label"])
    args = (row.get("path"), row.get("key"), label, model_name)
    if methods is None:
        where.button("Open in Compare →", key=key, on_click=handover.open_in_compare, args=args,
                     disabled=pd.isna(row.get("path")),
                     help="Analyse this image in the Compare page (the file must still be on this server).")
    else:
        where.button("Open in Methods →", key=key, on_click=handover.open_in_methods, args=(*args, methods),
                     disabled=pd.isna(row.get("path")),
                     help="Every chosen method's score and loss maps for this image, side by side, with their "
                          "agreement (the file must still be on this server).")


selected = event.selection.rows if event is not None else []
if selected:
    row = view.iloc[selected[0]]
    fields = dataset_view.row_fields(row)
    d1, d2 = st.columns([1, 2])
    try:
        d1.image(caches.dataset_thumbnail(str(row.get("path"))), caption=plain(fields["key"]), width="stretch")
    except (OSError, SaliencyError) as exc:
        d1.warning(f"The image can't be shown here: {plain(exc, 1000)}")
    with d2:
        st.markdown(f"**{plain(fields['key'])}** · label {plain(fields['label'])} · target "
                    f"**{plain(fields['target'])}** ({plain(fields['target_source'])}) · predicted "
                    f"{plain(fields['prediction'])} (p = {fields['prob_prediction']})")
        st.dataframe(row.drop(labels=[c for c in ("key", "path") if c in row]).to_frame("value").astype(str),
                     height=240)
        open_button(row, st, "open_selected")
    saved = folder.saved_maps(row["key"])
    if saved:
        st.plotly_chart(plots.side_by_side_figure(saved, titles=[map_title(m) for m in saved]),
                        key="dataset_saved_maps")
        st.caption("The maps as the job saved them (--save-maps: float16, each relative to its maximum, "
                   "rescaled here), not recomputed.")

# --------------------------------------------------------------------------- distributions
st.subheader("Distributions")
numeric = dataset_view.numeric_columns(view)
bins = dataset_view.histogram_bins(len(view))


def pick(label: str, options: list[str], preferred: str, key: str) -> str | None:
    default = options.index(preferred) if preferred in options else 0
    chosen = st.selectbox(label, options, index=default, key=key)
    if chosen not in options:  # kept from a folder with other columns
        chosen = options[default] if options else None
    return chosen


def histogram(series: dict[str, np.ndarray], x_title: str, key: str) -> None:
    if not any(np.isfinite(v).any() for v in series.values()):
        st.caption(f"No {plain(x_title)} values to draw for these images.")
        return
    st.plotly_chart(charts.values_histogram_figure(series, bins=bins, x_title=x_title), key=key)


h1, h2 = st.columns(2)
with h1:
    stat = pick("Statistic of every map", dataset_view.method_statistics(numeric), "gini", "dataset_stat")
    if stat:
        histogram({map_specs.title(m): view[f"{m}_{stat}"].to_numpy() for m in map_names if f"{m}_{stat}" in view},
                  stat,
                  "dataset_hist_stat")
with h2:
    other = pick("Another column", dataset_view.other_columns(numeric),
                 "agree_spearman", "dataset_other")
    if other:
        histogram({other: view[other].to_numpy()}, other, "dataset_hist_other")

# --------------------------------------------------------------------------- per class
st.subheader("Per class")
per_class = dataset_view.per_class(view)
st.dataframe(per_class, hide_index=True, key="dataset_per_class",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in per_class.columns
                            if c not in ("target", "class", "images")})
st.caption("Means over the images whose maps explain that class. Low gini / high entropy_norm: diffuse maps.")

# --------------------------------------------------------------------------- leaderboard
rankable = leaderboard.available_metrics(view)
if rankable:
    st.subheader("Leaderboard: which map is best")
    preferred = "insertion_minus_deletion" if "insertion_minus_deletion" in rankable else rankable[0]
    if st.session_state.get("dataset_rank_by", preferred) not in rankable:  # a link's, or another folder's
        del st.session_state["dataset_rank_by"]  # the widget then starts from its default
    by = st.segmented_control("Rank by", rankable, key="dataset_rank_by", required=True, default=preferred,
                              format_func=leaderboard.METRIC_TITLES.get)
    by = by if by in rankable else preferred
    ranked = leaderboard.ranked_maps(view, by)

    def board_of(rows: pd.DataFrame) -> leaderboard.Leaderboard:
        return caches.dataset_leaderboard(dataset_view.frame_digest(rows), by, rows)

    def intervals(board: leaderboard.Leaderboard, title: str | None, key: str) -> None:
        t = board.table
        if t[f"{by}_mean"].isna().all():
            st.caption(f"No {leaderboard.METRIC_TITLES[by]} values for {plain(title or 'these images')}.")
            return
        st.plotly_chart(charts.intervals_figure(
            list(t["title"]), t[f"{by}_mean"], t[f"{by}_low"], t[f"{by}_high"],
            x_title=f"mean {leaderboard.METRIC_TITLES[by]} ({leaderboard.METRICS[by]})", title=title,
            reference="random order"), key=key)

    board = board_of(view)
    intervals(board, None, "dataset_leaderboard_chart")
    st.dataframe(leaderboard.display_table(board), hide_index=True, key="dataset_leaderboard",
                 column_config={leaderboard.METRIC_TITLES[m]: st.column_config.NumberColumn(format="%.3f")
                                for m in board.metrics})
    st.caption(f"Means over the {len(view):,} images shown, with {board.confidence:.0%} percentile-bootstrap "
               f"intervals ({board.resamples:,} resamples of the images). {leaderboard.METRIC_NOTES[by]}")
    correct = view["correct"].astype("boolean") if "correct" in view else pd.Series(dtype="boolean")
    if correct.notna().any():
        st.markdown("**Correct and wrong predictions apart** (a map can do well on one and not on the other)")
        o1, o2 = st.columns(2)
        for where, outcome, key in ((o1, "correct", "dataset_board_correct"), (o2, "wrong", "dataset_board_wrong")):
            rows = dataset_view.filter_rows(view, outcome=outcome)
            with where:
                if len(rows) < 2:
                    st.caption(f"{len(rows)} {outcome} prediction(s) here: too few for an interval.")
                else:
                    intervals(board_of(rows), f"{outcome} predictions ({len(rows):,} images)", key)
    wins = leaderboard.head_to_head(view, ranked, metric=by)
    st.plotly_chart(agreement_heatmap(wins, metric="wins", title=f"Head to head by {leaderboard.METRIC_TITLES[by]}: "
                                      "share of images on which the row's map beats the column's"),
                    key="dataset_head_to_head")
    st.caption("Ties count half; only images with both values count.")
elif map_names:
    st.caption("No leaderboard: these results have no metric to rank the maps by. Run the batch job with "
               "--faithfulness or --metrics (e.g. --metrics road,sensitivity,sparseness) and several maps, e.g. "
               "--maps gradient:score,smoothgrad:loss,grad_cam:score.")

# --------------------------------------------------------------------------- disagreement
pair = dataset_view.map_pair_defaults(map_names)
if pair is not None:
    st.subheader("Where two maps disagree most")
    p1, p2 = st.columns(2)
    first = p1.selectbox("Map", map_names, index=map_names.index(pair[0]), format_func=map_title,
                         key="dataset_pair_a")
    others = [m for m in map_names if m != first]
    second = p2.selectbox("against", others, index=others.index(pair[1]) if pair[1] in others else 0,
                          format_func=map_title, key="dataset_pair_b")
    metric = map_specs.agreement_column(first or pair[0], second or pair[1], "spearman", view.columns)
    pair_methods = list(dict.fromkeys(map_specs.MAP_NAMES[m].method for m in (first or pair[0], second or pair[1])
                                      if m in map_specs.MAP_NAMES))
    if metric is None:
        st.caption("These results hold no agreement between those two maps.")
    else:
        worst = dataset_view.most_disagreeing(view, 6, metric)
        shown_pair = (first or pair[0], second or pair[1])
        drawn, whence = dataset_maps.pair_maps(folder, worst, shown_pair, model_name, manifest.get("config", {}))
        for i, ((_, row), card) in enumerate(zip(worst.iterrows(), drawn, strict=True)):
            if i % 2 == 0:
                cols = st.columns(2, gap="large")  # a row of two: each image beside its two maps
            with cols[i % 2]:
                if card.crop is None:  # the photo as it is, the model's crop not being at hand
                    try:
                        st.image(caches.dataset_thumbnail(str(row.get("path"))), width=240)
                    except (OSError, SaliencyError):
                        st.caption("(image not available on this server)")
                if card.maps:
                    st.plotly_chart(image_figures.image_row_figure(
                        card.crop, {dataset_maps.title(m): card.maps[m] for m in shown_pair},
                        image_title="the model's crop"), key=f"dataset_pair_{i}")
                fields = dataset_view.row_fields(row)
                rho = row.get(metric)
                st.markdown(f"**{plain(fields['key'])}**  \nSpearman ρ {'—' if pd.isna(rho) else f'{rho:.3f}'} · "
                            f"p_y {fields['prob_target']} · {plain(fields['target'])}")
                b1, b2 = st.columns(2)
                open_button(row, b1, f"open_worst_{i}")
                open_button(row, b2, f"open_worst_methods_{i}", pair_methods)
        st.caption(f"{whence} Lowest Spearman correlation between the two maps first. Methods shows the two maps' "
                   "methods for that image side by side, with both objectives."
                   + (" A confident, correct prediction (p_y near 1) shrinks the target term of the loss gradient, "
                      "so the other classes shape its map." if {first, second} == {"score", "loss"} else ""))

unreadable_files()
