"""Several metrics of the same maps at once: :func:`evaluate`.

What the metrics can share, they share: one clean pass over the images (every metric that runs the model
takes it as ``clean=``), one ROAD run for MoRF and LeRF (both orders' rows in the same chunked forward
passes), and one sensitivity run for max- and average-sensitivity (the same recomputed maps), when their
parameters are equal. Each metric's values are exactly those of its own function called alone
(tests/evaluation/test_evaluate.py): the draws are keyed on the images and the seed, not on what else runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from saliency_core.core.model_access import ModelLike
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import EVALUATION_METRICS, get_metric
from saliency_core.evaluation.metrics import road as road_module
from saliency_core.evaluation.metrics import sensitivity as sensitivity_module
from saliency_core.evaluation.metrics._common import Progress, Recompute, check_output, clean_pass
from saliency_core.evaluation.perturbations import MapsLike

MetricsArg = Sequence[str | tuple[str, Mapping[str, object] | None]] | Mapping[str, Mapping[str, object] | None]


@dataclass
class _Job:
    """One call that gives one or more metrics: ``names`` the metrics it answers, ``rows`` its progress total."""

    kind: str
    params: dict[str, object]
    names: list[str] = field(default_factory=list)
    rows: int = 0


def _requests(metrics: MetricsArg) -> list[tuple[str, dict[str, object]]]:
    items = metrics.items() if isinstance(metrics, Mapping) else metrics
    out = []
    for item in items:
        name, params = (item, None) if isinstance(item, str) else tuple(item)
        out.append((name, get_metric(name).resolve(params)))
    names = [n for n, _ in out]
    if not names:
        raise InvalidInputError(f"metrics must name at least one of {', '.join(EVALUATION_METRICS)}")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"each metric may be asked once, got {names}")
    return out


def _jobs(requests: list[tuple[str, dict[str, object]]], n: int) -> list[_Job]:
    """Group the requests into calls: ROAD orders and the two sensitivities with equal parameters share one."""
    jobs: list[_Job] = []
    shared: dict[tuple[str, tuple], _Job] = {}
    for name, params in requests:
        kind = {"road_morf": "road", "road_lerf": "road", "max_sensitivity": "sensitivity",
                "avg_sensitivity": "sensitivity"}.get(name, name)
        key = (kind, tuple(sorted(params.items())))
        if kind in ("road", "sensitivity") and key in shared:
            shared[key].names.append(name)
            continue
        job = _Job(kind, params, [name])
        jobs.append(job)
        if kind in ("road", "sensitivity"):
            shared[key] = job
    for job in jobs:
        job.rows = n * _rows_per_image(job)
    return jobs


def _rows_per_image(job: _Job) -> int:
    """What the job's progress counts per image: perturbed rows, or recomputed maps."""
    p = job.params
    if job.kind == "road":
        return len(job.names) * int(p["steps"])
    if job.kind == "faithfulness_correlation":
        return int(p["runs"])
    if job.kind in ("infidelity", "sensitivity"):
        return int(p["samples"])
    return 1 if job.kind == "random_logit" else 0


def evaluate(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], maps: MapsLike,
             metrics: MetricsArg, *, output: str = "s_y", recompute: Recompute | str | None = None,
             mask: MapsLike | None = None, precision: str = "exact", batch_size: int = 64,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Run several metrics of ``maps`` sharing one clean pass and whatever else they can.

    Parameters
    ----------
    model : classifier (module or LoadedModel) in eval mode; X : (N, 3, H, W) normalised; y : (N,) (-1: top-1)
    maps : (N, H, W) the maps to judge
    metrics : names of :data:`~saliency_core.evaluation.metrics.METRICS`, each alone or as ``(name, params)``
        (or a mapping name -> params); parameters not given take their defaults (``Metric.resolve``)
    output : what the maps explain (s_y, L or −L); recompute : how the maps were made (a :class:`Recompute` or
        a method name), needed by the metrics that need "method"; mask : (N, H, W) bool objects, needed by
        those that need "mask"
    precision, batch_size, mean, std : as each metric takes them
    progress : ``progress(done, total)`` over all the metrics' perturbed rows and recomputed maps together

    Returns
    -------
    metric name -> (N,) float64 values, in the order asked; exactly what each metric's own function gives.
    """
    output = check_output(output)
    requests = _requests(metrics)
    for name, _ in requests:
        needs = get_metric(name).needs
        if "method" in needs and recompute is None:
            raise InvalidInputError(f"{name} recomputes the maps: pass recompute= (the method that made them)")
        if "mask" in needs and mask is None:
            raise InvalidInputError(f"{name} needs mask= (N, H, W) bool object masks")
    if isinstance(recompute, str):
        recompute = Recompute(recompute)
    needs_model = any("model" in get_metric(name).needs for name, _ in requests)
    clean = clean_pass(model, X, y, precision=precision, batch_size=batch_size) if needs_model else None
    n = int(X.shape[0]) if isinstance(X, torch.Tensor) else 0
    jobs = _jobs(requests, n)
    total = sum(job.rows for job in jobs)
    results: dict[str, np.ndarray] = {}
    done = 0
    for job in jobs:
        sub = None
        if progress is not None and job.rows:
            def sub(d: int, _t: int, offset: int = done) -> None:
                progress(offset + d, total)
        results.update(_run(job, model, X, y, maps, output=output, recompute=recompute, mask=mask,
                            precision=precision, batch_size=batch_size, mean=mean, std=std, clean=clean,
                            progress=sub))
        done += job.rows
    return {name: results[name] for name, _ in requests}


def _run(job: _Job, model, X, y, maps, *, output, recompute, mask, precision, batch_size, mean, std, clean,
         progress) -> dict[str, np.ndarray]:
    common = {"batch_size": batch_size, "precision": precision, "clean": clean, "progress": progress}
    p = job.params
    if job.kind == "road":
        orders = tuple(name.removeprefix("road_") for name in job.names)
        r = road_module.road(model, X, y, maps, output=output, orders=orders, **p, **common)
        return {f"road_{o}": getattr(r, f"{o}_mean") for o in orders}
    if job.kind == "sensitivity":
        r = sensitivity_module.sensitivity(model, X, y, maps, recompute, **p, **common)
        return {name: (r.max if name == "max_sensitivity" else r.mean) for name in job.names}
    name = job.names[0]
    run: Callable[..., np.ndarray] = get_metric(name).run
    if job.kind == "faithfulness_correlation" or job.kind == "infidelity":
        return {name: run(model, X, y, maps, output=output, mean=mean, std=std, **p, **common)}
    if job.kind == "random_logit":
        return {name: run(model, X, y, maps, recompute, **p, **common)}
    if "mask" in get_metric(name).needs:
        return {name: run(maps, mask, **p)}
    return {name: run(maps, **p)}


__all__ = ["evaluate"]
