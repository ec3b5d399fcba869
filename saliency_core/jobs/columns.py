"""The numbers of one batch of the dataset job: maps, probabilities, statistics, agreement, faithfulness,
and the Parquet rows they become (columns listed in the README and ``results.PAGE_COLUMNS``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from saliency_core.core.model_access import TOP1_TARGET
from saliency_core.evaluation import faithfulness, tensor_stats
from saliency_core.jobs import map_specs
from saliency_core.jobs.imagefolder import Discovery, Item, imagenet_wnids, item_path
from saliency_core.jobs.metric_columns import metric_columns
from saliency_core.jobs.processes import Ranks
from saliency_core.methods.declaration import AttributionWarning
from saliency_core.methods.registry import AttributionResult, attribute, get_method
from saliency_core.models.registry import LoadedModel

if TYPE_CHECKING:
    from saliency_core.jobs.options import Options

def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _maps(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, opts: Options
          ) -> tuple[AttributionResult, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One ``attribute`` call per method, for all its objectives: (first result, maps by name, Integrated
    Gradients' numbers by column: ``<map>_completeness_gap``, ``<map>_steps_used`` and, for its adaptive rule,
    ``<map>_converged``).

    The first call resolves top-1 targets; the others explain the same classes.
    """
    first: AttributionResult | None = None
    maps: dict[str, torch.Tensor] = {}
    path_numbers: dict[str, torch.Tensor] = {}
    for method, objectives in map_specs.methods_of(opts.specs).items():
        with warnings.catch_warnings():  # the gap is a column (<map>_completeness_gap), not a warning per batch
            warnings.simplefilter("ignore", AttributionWarning)
            r = attribute(model, x, y if first is None else first.targets, method, objectives, reduction=opts.reduction,
                          precision=opts.precision, max_batch=opts.batch_size, **opts.params_for(method))
        first = first or r
        for spec in opts.specs:
            if spec.method == method:
                maps[spec.name] = r.maps[spec.objective]
                if r.convergence is not None:
                    path_numbers[f"{spec.name}_completeness_gap"] = r.convergence[spec.objective]
                if r.steps_used is not None:
                    path_numbers[f"{spec.name}_steps_used"] = r.steps_used
                if r.converged is not None:
                    path_numbers[f"{spec.name}_converged"] = r.converged
    assert first is not None  # parse_maps never returns no map
    return first, maps, path_numbers


def check_maps_apply(model: LoadedModel, opts: Options) -> None:
    """Raise the method's own error (InvalidInputError) now if a requested map can't be computed on this model:
    Grad-CAM's layer missing or not convolutional, guided backprop without ReLUs, DeepLIFT on a layer it has no
    rule for (max-pooling, attention). One black image, cheaply: the
    method's costly parameters (samples, steps) at their minimum, which changes nothing it checks."""
    size = model.preprocessing.crop
    x = torch.zeros(1, 3, size, size, device=model.device)
    for method in map_specs.methods_of(opts.specs):
        params = get_method(method).trial_params(opts.params_for(method))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a trial run's numbers don't matter, only whether it runs
            attribute(model, x, [TOP1_TARGET], method, ("score",), reduction=opts.reduction,
                      precision=opts.precision, **params)


def batch_columns(model: LoadedModel, x: torch.Tensor, labels: Sequence[int | None], opts: Options,
                  sha256: Sequence[str] = (), masks: torch.Tensor | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The per-image numbers of one batch: (columns, maps), each a dict of (N, ...) arrays.

    The target is the true label where known, else the model's top-1
    prediction from the same forward pass. Columns per map are prefixed by
    its name (:mod:`saliency_core.jobs.map_specs`); Integrated Gradients maps add
    ``<map>_completeness_gap``, ``<map>_steps_used`` (int) and with the adaptive rule ``<map>_converged`` (bool);
    ``--metrics`` adds ``<map>_<metric>`` (:mod:`saliency_core.jobs.metric_columns`, seeded by the images'
    ``sha256``; the localisation metrics need ``masks``, (N, H, W) bool).
    """
    y = torch.tensor([TOP1_TARGET if lab is None else lab for lab in labels], device=x.device)
    res, all_maps, path_numbers = _maps(model, x, y, opts)
    pairs = [(a.name, b.name, prefix) for a, b, prefix in map_specs.agreement_pairs(opts.specs)]
    label_t = torch.tensor([0 if lab is None else lab for lab in labels], device=x.device)
    known = torch.tensor([lab is not None for lab in labels], device=x.device)
    probs = res.probs
    pred = probs.argmax(dim=1)
    numbers: dict[str, torch.Tensor] = {
        "prob_target": probs.gather(1, res.targets[:, None])[:, 0],
        "prob_prediction": probs.gather(1, pred[:, None])[:, 0],
        "prob_label": torch.where(known, probs.gather(1, label_t[:, None])[:, 0], torch.nan),
        "loss": F.cross_entropy(res.logits.double(), res.targets, reduction="none"),
        **tensor_stats.describe_batch(all_maps, pairs),
        **path_numbers,
    }
    # One copy to the host for all of them: on a GPU, each small copy would wait for the device.
    host = _np(torch.stack([v.to(torch.float64) for v in numbers.values()]))
    classes = _np(torch.stack([res.targets, pred]))
    cols: dict[str, np.ndarray] = {"target": classes[0], "prediction": classes[1],
                                   **{name: host[i] for i, name in enumerate(numbers)}}
    for name, v in path_numbers.items():  # counts and flags keep their type (they went through float64 with the rest)
        if v.dtype == torch.bool:
            cols[name] = cols[name].astype(bool)
        elif not v.is_floating_point():
            cols[name] = cols[name].astype(np.int64)
    if opts.faithfulness:
        steps = opts.faithfulness_steps
        for m in all_maps:
            f = faithfulness.deletion_insertion(model, x, res.targets, all_maps[m], steps=steps,
                                                batch_size=opts.batch_size * 4, precision=opts.precision)
            cols[f"{m}_deletion_auc"], cols[f"{m}_insertion_auc"] = f.deletion_auc, f.insertion_auc
        f = faithfulness.deletion_insertion(model, x, res.targets, None, steps=steps, order="random",
                                            batch_size=opts.batch_size * 4, precision=opts.precision)
        cols["random_deletion_auc"], cols["random_insertion_auc"] = f.deletion_auc, f.insertion_auc
    cols |= metric_columns(model, x, res.targets, all_maps, opts, sha256, masks)
    maps = {}
    if opts.save_maps:
        for m, v in all_maps.items():
            peak = v.amax(dim=(1, 2), keepdim=True)
            maps[m] = _np(torch.where(peak > 0, v / peak, 0.0).half())
    return cols, maps


def rows_frame(items: list[Item], records: list[dict], cols: dict[str, np.ndarray], model: LoadedModel,
          ranks: Ranks, run: int, discovery: Discovery) -> pd.DataFrame:
    cats = model.categories
    wnids = imagenet_wnids()
    labels = [it.label for it in items]
    n = len(items)

    def strings(values: list[str | None]) -> pd.arrays.StringArray:
        return pd.array(values, dtype="string")

    columns = {
        "key": strings([it.key for it in items]),
        "model": strings([model.name] * n),
        "path": strings([item_path(discovery, it) for it in items]),
        "sha256": strings([r["sha256"] for r in records]),
        "width": np.array([r["width"] for r in records], dtype=np.int64),
        "height": np.array([r["height"] for r in records], dtype=np.int64),
        "label": pd.array(labels, dtype="Int64"),
        "label_source": strings([it.label_source for it in items]),
        "label_name": strings([None if lab is None else cats[lab] for lab in labels]),
        "label_wnid": strings([None if lab is None else wnids[lab] for lab in labels]),
        "target_source": strings(["prediction" if lab is None else "label" for lab in labels]),
        **cols,
        "target_name": strings([cats[int(t)] for t in cols["target"]]),
        "prediction_name": strings([cats[int(p)] for p in cols["prediction"]]),
        "correct": pd.array([None if lab is None else bool(p == lab) for p, lab in
                             zip(cols["prediction"], labels, strict=True)], dtype="boolean"),
        "rank": np.full(n, ranks.rank, dtype=np.int64),
        "run": np.full(n, run, dtype=np.int64),
    }
    return pd.DataFrame(columns)
