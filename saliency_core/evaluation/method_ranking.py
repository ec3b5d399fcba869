"""Which method's map should I believe? Faithfulness and randomisation scores per map, and their downloads.

For the maps of :func:`saliency_core.evaluation.method_comparison.compare_methods`:

- deletion and insertion AUC (Petsiuk, Das & Saenko, RISE, BMVC 2018), from
  :func:`saliency_core.evaluation.faithfulness.deletion_insertion_orders` with the
  Faithfulness page's defaults (20 steps, blurred baseline, seed 0), all
  maps and the random reference order in one batched pass, ranked by
  :func:`saliency_core.evaluation.faithfulness.ranking_table` (insertion − deletion);
- the Spearman similarity of each map to the same method's map on the fully
  randomised model (Adebayo et al., NeurIPS 2018):
  :func:`saliency_core.evaluation.randomized_model.fully_randomized_model` is the last stage of
  the Faithfulness page's cascading randomisation (same seed, same weights),
  and the map is recomputed there with the same method and parameters. A
  map that survives the model's destruction (high similarity) explains the
  image, not the model;
- the evaluation metrics of :data:`RANKING_METRICS` (those of the map alone: sparseness and complexity,
  :mod:`saliency_core.evaluation.metric_table`), one column each, NaN for the random order; and on request
  any of the metrics that run the model (:data:`~saliency_core.evaluation.metric_table.MODEL_METRICS`: ROAD,
  faithfulness correlation, infidelity, sensitivity, random logit), each map judged with the method and
  parameters that made it.

Never imports Streamlit; the model is never modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from saliency_core.core.model_access import ModelLike
from saliency_core.errors import InvalidInputError, SaliencyError
from saliency_core.evaluation import faithfulness, metric_table, sanity
from saliency_core.evaluation.agreement import agreement
from saliency_core.evaluation.method_comparison import MethodComparison, forward_passes
from saliency_core.evaluation.randomized_model import fully_randomized_model
from saliency_core.methods._common import Progress
from saliency_core.methods.registry import attribute, explains, map_title

#: The Faithfulness page's settings, so that the two pages give the same AUCs.
DEFAULT_STEPS = 20
DEFAULT_BASELINE = "blur"
DEFAULT_SEED = 0
RANDOM_ORDER = "random order"
#: The evaluation metrics the ranking adds as columns: those of the map alone, free to compute for every map.
RANKING_METRICS: tuple[str, ...] = metric_table.MAP_ONLY
RANKING_COLUMNS = ("rank", "map", "method", "objective", "deletion_auc", "insertion_auc",
                   "insertion_minus_deletion", "randomised_spearman", *RANKING_METRICS)


@dataclass
class MethodRanking:
    """What :func:`ranking_table` found.

    Attributes
    ----------
    table : DataFrame with columns :data:`RANKING_COLUMNS` (the last ones: :data:`RANKING_METRICS`), one row per map
        (and one for the random order, method "random", objective "", no
        randomisation score), best insertion − deletion first (rank from 1;
        ties keep the maps' order). ``randomised_spearman`` is Spearman's ρ
        between the map and the same method's map on the fully randomised
        model: low is good; NaN where either map is constant or not finite,
        or where the method failed on the randomised model.
    curves : map label (and :data:`RANDOM_ORDER`) -> the
        :class:`~saliency_core.evaluation.faithfulness.FaithfulnessResult` behind the AUCs
    randomised_maps : map label -> (H, W) float32, the map on the fully randomised model
    notes : method -> why it has no randomisation score (its error there)
    steps, baseline, blur_sigma, seed : the deletion/insertion settings (``seed``
        also seeds the random order and the re-initialised weights)
    target, reduction, precision : those of the comparison
    params : method -> parameters as used; explains : per map label, "s_y", "L" or "−L"
        (:func:`saliency_core.methods.registry.explains`)
    """

    table: pd.DataFrame
    curves: dict[str, faithfulness.FaithfulnessResult]
    randomised_maps: dict[str, np.ndarray]
    notes: dict[str, str]
    steps: int
    baseline: str
    blur_sigma: float | None
    seed: int
    target: int
    reduction: str
    precision: str
    params: dict[str, dict[str, object]]
    explains: dict[str, str]


def metric_columns(metrics: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The model-running metrics asked for, checked, in the order of
    :data:`~saliency_core.evaluation.metrics.METRICS` (InvalidInputError for any other name)."""
    unknown = [n for n in metrics if n not in metric_table.MODEL_METRICS]
    if unknown:
        known = ", ".join(metric_table.MODEL_METRICS)
        raise InvalidInputError(f"the ranking adds only metrics that run the model ({known}); got "
                                f"{', '.join(map(repr, unknown))}")
    return tuple(n for n in metric_table.MODEL_METRICS if n in set(metrics))


def metric_units_per_map(metrics: tuple[str, ...], method: str, params: dict[str, object] | None,
                         size: tuple[int, int]) -> int:
    """About how many forward passes ``metrics`` cost for one map of ``method``: their perturbed copies, and
    each recomputed map at :func:`~saliency_core.evaluation.method_comparison.forward_passes`."""
    if not metrics:
        return 0
    cost = metric_table.metric_cost(metrics)
    return cost.forward + cost.attributions * forward_passes(method, params, size)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ as :func:`saliency_core.evaluation.agreement.agreement` (and the Sanity check) computes it;
    NaN if not finite."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    return agreement(a, b, fractions=())["spearman"]


def ranking_table(model: ModelLike, X: torch.Tensor, comparison: MethodComparison, *, steps: int = DEFAULT_STEPS,
                  baseline: str = DEFAULT_BASELINE, seed: int = DEFAULT_SEED, random_order: bool = True,
                  randomisation: bool = True, metrics: tuple[str, ...] = (), batch_size: int = 8,
                  progress: Progress | None = None) -> MethodRanking:
    """Deletion/insertion AUCs and the randomisation similarity of every map of a comparison.

    Parameters
    ----------
    model : the model the comparison was computed with (LoadedModel or module); never modified.
    X : (1, 3, H, W) float tensor, the image of the comparison, normalised for the model.
    comparison : :func:`~saliency_core.evaluation.method_comparison.compare_methods`'s result;
        its target, reduction and precision are used throughout.
    steps, baseline : deletion/insertion settings, see
        :func:`saliency_core.evaluation.faithfulness.deletion_insertion` (a name of
        :data:`saliency_core.core.baselines.BASELINES`).
    seed : of the random order and of the re-initialised weights (the Faithfulness page uses 0).
    random_order : add the random order, the reference every map should beat.
    randomisation : compute ``randomised_spearman`` (one more run of every
        method, on the randomised copy); False leaves the column NaN.
    metrics : metrics that run the model (names of :data:`~saliency_core.evaluation.metric_table.MODEL_METRICS`),
        added as columns after :data:`RANKING_METRICS`, at their defaults (:func:`metric_columns`).
    batch_size : perturbed images per forward pass (8 suits a 2-core CPU, 64 a GPU).
    progress : ``progress(done, total)`` in units of about one forward pass, after every
        chunk of perturbed images and every chunk of a slow method's rows.

    Returns
    -------
    :class:`MethodRanking`
    """
    entries = comparison.entries()
    if not entries:
        raise InvalidInputError("no maps to rank: every method failed (see the comparison's errors)")
    extra = metric_columns(metrics)
    n_orders = len(entries) + (1 if random_order else 0)
    fa_total = n_orders * 2 * int(steps) if isinstance(steps, int) else 0
    methods = list(dict.fromkeys(m for m, _, _, _ in entries))
    rand_units = ({m: 3 * forward_passes(m, comparison.runs[m].given, tuple(X.shape[2:])) for m in methods}
                  if randomisation else {})
    metric_units = sum(metric_units_per_map(extra, m, comparison.runs[m].given, tuple(X.shape[2:]))
                       for m, _, _, _ in entries)
    total = fa_total + sum(rand_units.values()) + metric_units

    def report_fa(done: int, of: int) -> None:
        if progress is not None:
            progress(done, total)

    curves = faithfulness.deletion_insertion_orders(
        model, X, [comparison.target], {label: m[None] for _, _, label, m in entries}, steps, baseline,
        random=RANDOM_ORDER if random_order else None, batch_size=batch_size, progress=report_fa, seed=seed,
        precision=comparison.precision)
    table = faithfulness.ranking_table(curves).rename(columns={"order": "map"})

    randomised: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    if randomisation:
        work = fully_randomized_model(model, seed=seed)
        done = fa_total
        for method in methods:
            run = comparison.runs[method]

            def report(rows: int, of: int, before: int = done, size: int = rand_units[method]) -> None:
                # Within one method's run (SmoothGrad's samples, IG's steps): the caller hears from the work
                # after every chunk of rows, not once per method.
                if progress is not None and 0 < rows < of:
                    progress(before + size * rows // of, total)

            try:
                r = attribute(work, X, [comparison.target], method, comparison.objectives,
                              reduction=comparison.reduction, precision=comparison.precision, progress=report,
                              **sanity.fixed_params(method, run.given, run.params))
            except SaliencyError as exc:
                notes[method] = str(exc)
            else:
                for obj in comparison.objectives:
                    randomised[map_title(method, obj)] = r.maps[obj][0].float().cpu().numpy()
            done += rand_units[method]
            if progress is not None:
                progress(done, total)
        del work

    by_label = {label: (m, obj, arr) for m, obj, label, arr in entries}
    rows = []
    for label in table["map"]:
        if label in by_label:
            m, obj, arr = by_label[label]
            rho = _spearman(arr, randomised[label]) if label in randomised else math.nan
            rows.append((m, obj, rho))
        else:
            rows.append(("random", "", math.nan))
    table["method"], table["objective"], table["randomised_spearman"] = zip(*rows, strict=True)
    judged = {label: metric_table.JudgedMap(m, obj, arr) for m, obj, label, arr in entries}
    scores = metric_table.evaluate(None, None, None, judged, RANKING_METRICS)
    if extra:
        before = total - metric_units

        def report_metrics(done: int, of: int) -> None:
            if progress is not None:
                progress(before + metric_units * done // max(1, of), total)

        # Each map judged with the method and parameters that made it (fixed seeds, as on the randomised model).
        judged_by_method = {label: metric_table.JudgedMap(
            m, obj, arr, sanity.fixed_params(m, comparison.runs[m].given, comparison.runs[m].params),
            comparison.reduction) for m, obj, label, arr in entries}
        scores |= metric_table.evaluate(model, X, comparison.target, judged_by_method, extra,
                                        precision=comparison.precision, batch_size=batch_size,
                                        progress=report_metrics)
    for name in (*RANKING_METRICS, *extra):
        table[name] = [scores[name].get(label, math.nan) for label in table["map"]]
    first = next(iter(curves.values()))
    return MethodRanking(
        table=table[[*RANKING_COLUMNS, *extra]], curves=curves, randomised_maps=randomised, notes=notes,
        steps=int(steps), baseline=first.baseline, blur_sigma=first.blur_sigma, seed=int(seed),
        target=int(first.targets[0]), reduction=comparison.reduction, precision=comparison.precision,
        params={m: comparison.runs[m].params for m in methods},
        explains={label: explains(m, obj) for m, obj, label, _ in entries})
