"""The evaluation-metric columns of one batch of the dataset job (``--metrics``): ``<map>_<metric>``.

Every map of the batch is judged by every metric asked for, through the engine's own functions
(:mod:`saliency_core.evaluation.metrics`), with the model output the map explains
(:func:`~saliency_core.evaluation.metrics._common.output_for`) and, for the metrics that recompute maps
(sensitivity, random logit), the map's own method, objective, parameters and reduction. The metrics that
draw at random run image by image with the image's own seed (:func:`~saliency_core.jobs.metric_specs.
image_seed`), all sharing one clean forward pass of the batch; the metrics of the maps alone (sparseness,
complexity) and the localisation metrics take the whole batch at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import get_metric, road, sensitivity
from saliency_core.evaluation.metrics._common import Clean, Recompute, clean_pass, output_for
from saliency_core.jobs import metric_specs
from saliency_core.jobs.map_specs import MapSpec
from saliency_core.models.registry import LoadedModel

if TYPE_CHECKING:
    from saliency_core.jobs.options import Options

#: Forward rows per pass of the metrics, as a multiple of --batch-size (deletion/insertion's too).
ROWS_PER_IMAGE_ROW = 4


def check_metrics_apply(model: LoadedModel, opts: Options) -> None:
    """InvalidInputError now, before the folder is touched, for a parameter that does not fit the model's input
    size (faithfulness correlation's subset of its pixels, infidelity's square)."""
    size = model.preprocessing.crop
    if "faithfulness_correlation" in opts.metrics:
        subset = opts.metric_params_for("faithfulness_correlation")["subset_size"]
        if subset >= size * size:
            raise InvalidInputError(f"--faithfulness-correlation-subset-size must be below the {size * size:,} "
                                    f"pixels of {model.name}'s {size} x {size} input, got {subset}")
    if "infidelity" in opts.metrics:
        p = opts.metric_params_for("infidelity")
        if p["perturbation"] == "square" and p["patch"] > size:
            raise InvalidInputError(f"--infidelity-patch must fit {model.name}'s {size} x {size} input, "
                                    f"got {p['patch']}")


def object_masks(masks: Sequence[np.ndarray | None], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """((N, size, size) bool, with all-False for an image without a mask; (N,) float64 share of the crop the
    object covers, NaN without a mask: the ``object_share`` column)."""
    stack = np.zeros((len(masks), size, size), dtype=bool)
    share = np.full(len(masks), np.nan)
    for i, m in enumerate(masks):
        if m is not None:
            stack[i] = m
            share[i] = float(m.mean())
    return torch.from_numpy(stack), share


def _one_image(clean: Clean, i: int) -> Clean:
    return dataclasses.replace(clean, x=clean.x[i:i + 1], y=clean.y[i:i + 1], logits=clean.logits[i:i + 1])


def _run(owner: str, names: Sequence[str], args: tuple, kwargs: dict) -> dict[str, np.ndarray]:
    """metric -> (n,) values of ``names`` (metrics of one owner) in one engine call."""
    if owner == "road":
        r = road.road(*args, orders=tuple(n.removeprefix("road_") for n in names), **kwargs)
        got = {"road_morf": r.morf_mean, "road_lerf": r.lerf_mean}
    elif owner == "sensitivity":  # both from the same recomputed maps
        r = sensitivity.sensitivity(*args, **kwargs)
        got = {"max_sensitivity": r.max, "avg_sensitivity": r.mean}
    else:
        (name,) = names
        got = {name: get_metric(name).run(*args, **kwargs)}
    return {n: np.asarray(got[n], dtype=np.float64) for n in names}


def metric_columns(model: LoadedModel, x: torch.Tensor, targets: torch.Tensor, maps: dict[str, torch.Tensor],
                   opts: Options, sha256: Sequence[str], masks: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """``<map>_<metric>`` -> (N,) float64 for every map of ``maps`` and every metric of ``opts.metrics``.

    x : (N, 3, H, W) normalised on the model's device; targets : (N,) the classes the maps explain (resolved)
    maps : map name -> (N, H, W); sha256 : (N,) the images' hashes (their seeds); masks : (N, H, W) bool objects,
    all False where an image has none (NaN in the localisation columns), needed for the localisation metrics
    """
    if not opts.metrics:
        return {}
    specs: dict[str, MapSpec] = {s.name: s for s in opts.specs}
    n = x.shape[0]
    owners: dict[str, list[str]] = {}
    for name in opts.metrics:
        owners.setdefault(metric_specs.owner(name), []).append(name)
    batch = opts.batch_size * ROWS_PER_IMAGE_ROW
    needs_model = any("model" in get_metric(m).needs for m in opts.metrics)
    clean = clean_pass(model, x, targets, precision=opts.precision, batch_size=batch) if needs_model else None
    cols: dict[str, np.ndarray] = {}
    for map_name, a in maps.items():
        spec = specs[map_name]
        a = a.detach().double().cpu()
        for owner, names in owners.items():
            metric = get_metric(names[0])
            params = opts.metric_params_for(owner)
            if "mask" in metric.needs:
                got = _run(owner, names, (a, masks), params)
            elif "model" not in metric.needs:
                got = _run(owner, names, (a,), params)
            else:
                got = {name: np.full(n, np.nan) for name in names}
                recompute = Recompute(spec.method, spec.objective, opts.params_for(spec.method), opts.reduction,
                                      opts.batch_size)
                for i in range(n):  # each image with its own draws
                    kwargs = {**params, "batch_size": batch, "precision": opts.precision,
                              "clean": _one_image(clean, i)}
                    if "seed" in params:
                        kwargs["seed"] = metric_specs.image_seed(params["seed"], sha256[i])
                    args = (model, x[i:i + 1], targets[i:i + 1], a[i:i + 1])
                    if "method" in metric.needs:
                        args = (*args, recompute)
                    else:
                        kwargs["output"] = output_for(spec.method, spec.objective)
                    for name, v in _run(owner, names, args, kwargs).items():
                        got[name][i] = v[0]
            for name, v in got.items():
                cols[metric_specs.column(map_name, name)] = v
    return cols
