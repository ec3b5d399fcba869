"""Every evaluation metric of some maps of one image, in one call: what the Faithfulness page's table shows.

The metrics themselves live in :mod:`saliency_core.evaluation.metrics` (one module each, with their papers);
this module only runs a chosen set of them for maps of one image, each map with the method and objective
that made it, and lays the scores out as a table (metrics × maps). Metrics are grouped by what they need
(:attr:`~saliency_core.evaluation.metrics.declaration.Metric.needs`):

- :data:`MAP_ONLY`: the map alone (sparseness, complexity): instant;
- :data:`LOCALISATION`: the map and an object mask (pointing game, relevance mass and rank accuracy): instant;
- :data:`MODEL_METRICS`: forward passes through the model, some also recompute maps with the method.

Runs that give two metrics at once (ROAD's two orders, max- and average-sensitivity) run once. Never
imports Streamlit; the model is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from saliency_core.core.model_access import ModelLike
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import METRICS, get_metric
from saliency_core.evaluation.metrics._common import Recompute, clean_pass, output_for
from saliency_core.evaluation.metrics.declaration import Metric, MetricCost
from saliency_core.evaluation.metrics.road import road
from saliency_core.evaluation.metrics.sensitivity import sensitivity

Progress = Callable[[int, int], None]

MAP_ONLY: tuple[str, ...] = tuple(m.name for m in METRICS if not m.needs)
LOCALISATION: tuple[str, ...] = tuple(m.name for m in METRICS if m.needs == {"mask"})
MODEL_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if "model" in m.needs)
#: Metrics whose runs are shared: one run gives every name of its group.
SHARED_RUNS: dict[str, tuple[str, ...]] = {"road": ("road_morf", "road_lerf"),
                                           "sensitivity": ("max_sensitivity", "avg_sensitivity")}


@dataclass(frozen=True)
class JudgedMap:
    """One map to judge: the attribution ``method`` (with its ``params``) and ``objective`` that made ``map``
    (H, W) of the image, with the channel ``reduction`` used (needed by metrics that recompute maps)."""

    method: str
    objective: str
    map: np.ndarray | torch.Tensor
    params: Mapping[str, object] | None = None
    reduction: str = "max"


def runs_of(names: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``names`` as runs: (run name, the metrics it gives), shared runs once, in the order of :data:`METRICS`."""
    chosen = [m.name for m in METRICS if m.name in set(names)]
    out: list[tuple[str, tuple[str, ...]]] = []
    for name in chosen:
        group = next((g for g, members in SHARED_RUNS.items() if name in members), None)
        if group is None:
            out.append((name, (name,)))
        elif all(g != group for g, _ in out):
            out.append((group, tuple(n for n in SHARED_RUNS[group] if n in chosen)))
    return out


def metric_cost(names: Sequence[str], params: Mapping[str, Mapping[str, object]] | None = None) -> MetricCost:
    """Forward rows and attribution calls for one map of one image by the metrics ``names`` (a shared run
    counted once; ``params``: metric name -> its parameters, defaults for the rest)."""
    forward = attributions = 0
    params = params or {}
    for run, members in runs_of(names):
        costs = [get_metric(n).cost_for(params.get(n)) for n in members]
        # ROAD's orders each run their own rows; the sensitivities share every row
        forward += sum(c.forward for c in costs) if run == "road" else max(c.forward for c in costs)
        attributions += max(c.attributions for c in costs)
    return MetricCost(forward=forward, attributions=attributions)


def evaluate(model: ModelLike | None, X: torch.Tensor | None, target: int | None, maps: Mapping[str, JudgedMap],
             names: Sequence[str], *, mask: np.ndarray | torch.Tensor | None = None,
             params: Mapping[str, Mapping[str, object]] | None = None, precision: str = "exact",
             batch_size: int = 64, progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """The metrics ``names`` of every map of one image.

    Parameters
    ----------
    model, X, target : the classifier, the image (1, 3, H, W) normalised for it and the class the maps explain;
        only the metrics that run the model use them (None is fine for map-only and localisation metrics)
    maps : label -> :class:`JudgedMap`, each (H, W)
    names : metric names (:data:`saliency_core.evaluation.metrics.EVALUATION_METRICS`)
    mask : (H, W) bool object mask, needed by the localisation metrics (InvalidInputError without one)
    params : metric name -> its parameters (defaults for the rest)
    progress : ``progress(done, total)`` as the model-running metrics go (total: 1000 per run and map)

    Returns
    -------
    metric name -> map label -> float (NaN where the metric is undefined for the map)
    """
    for n in names:
        get_metric(n)
    params = params or {}
    runs = runs_of(names)
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask, dtype=bool))
    if any("mask" in get_metric(m).needs for _, members in runs for m in members) and mask is None:
        raise InvalidInputError("the localisation metrics need an object mask (H, W)")
    needs_model = [(r, members) for r, members in runs if "model" in get_metric(members[0]).needs]
    clean = None
    if needs_model:
        if model is None or X is None or target is None:
            raise InvalidInputError("the metrics that run the model need the model, the image and its target")
        clean = clean_pass(model, X, [int(target)], precision=precision, batch_size=batch_size)
    total = 1000 * len(needs_model) * len(maps)
    step = 0
    out: dict[str, dict[str, float]] = {n: {} for _, members in runs for n in members}
    for run, members in runs:
        metric = get_metric(members[0])
        resolved = {n: get_metric(n).resolve(params.get(n)) for n in members}
        for label, judged in maps.items():
            a = torch.as_tensor(np.asarray(judged.map, dtype=np.float64))[None]
            report = None
            if "model" in metric.needs and progress is not None:
                def report(done: int, of: int, before: int = step) -> None:
                    progress(before + 1000 * done // max(1, of), total)
            values = _run_one(run, members, metric, resolved, model, X, int(target or 0), a, judged, mask,
                              clean, precision, batch_size, report)
            for n, value in values.items():
                out[n][label] = float(value)
            if "model" in metric.needs:
                step += 1000
                if progress is not None:
                    progress(step, total)
    return out


def _run_one(run: str, members: tuple[str, ...], metric: Metric, resolved: dict[str, dict[str, object]],
             model, X, target: int, a: torch.Tensor, judged: JudgedMap, mask, clean, precision: str,
             batch_size: int, report: Progress | None) -> dict[str, float]:
    """One run of one map: metric name -> its value."""
    if not metric.needs:
        return {members[0]: metric.run(a)[0]}
    if metric.needs == {"mask"}:
        return {members[0]: metric.run(a, mask[None], **resolved[members[0]])[0]}
    common = dict(clean=clean, precision=precision, batch_size=batch_size, progress=report)
    recompute = Recompute(judged.method, judged.objective, dict(judged.params or {}), judged.reduction)
    output = output_for(judged.method, judged.objective)
    if run == "road":
        orders = tuple(n.removeprefix("road_") for n in members)
        r = road(model, X, [target], a, output=output, orders=orders, **common, **resolved[members[0]])
        return {n: getattr(r, f"{n.removeprefix('road_')}_mean")[0] for n in members}
    if run == "sensitivity":
        r = sensitivity(model, X, [target], a, recompute, **common, **resolved[members[0]])
        return {n: (r.max if n == "max_sensitivity" else r.mean)[0] for n in members}
    if "method" in metric.needs:
        return {run: metric.run(model, X, [target], a, recompute, **common, **resolved[run])[0]}
    return {run: metric.run(model, X, [target], a, output=output, **common, **resolved[run])[0]}


def metric_table(scores: Mapping[str, Mapping[str, float]], labels: Sequence[str]) -> pd.DataFrame:
    """Scores (:func:`evaluate`) as a table: one row per metric (in the order of :data:`METRICS`); columns
    ``metric`` (its title), one per map label, then "better" ("higher" or "lower"), "good" (what a good value
    looks like), "paper" and ``name`` (the metric's key)."""
    rows = []
    for m in METRICS:
        if m.name not in scores:
            continue
        row = {"metric": m.title, **{label: scores[m.name].get(label, math.nan) for label in labels},
               "better": m.better, "good": m.good, "paper": m.citation, "name": m.name}
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["metric", *labels, "better", "good", "paper", "name"])
    return pd.DataFrame(rows)
