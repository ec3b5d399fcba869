"""The numbers of one batch of the dataset job: maps, probabilities, statistics, agreement, faithfulness,
and the Parquet rows they become (columns listed in the README and ``results.PAGE_COLUMNS``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from saliency_core import faithfulness, gradients, tensor_stats
from saliency_core._torch import TOP1_TARGET
from saliency_core.imagefolder import Discovery, Item, imagenet_wnids, item_path
from saliency_core.job_processes import Ranks
from saliency_core.models import LoadedModel

if TYPE_CHECKING:
    from saliency_core.batch import Options

def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def batch_columns(model: LoadedModel, x: torch.Tensor, labels: Sequence[int | None], opts: Options
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The per-image numbers of one batch: (columns, maps), each a dict of (N, ...) arrays.

    The target is the true label where known, else the model's top-1
    prediction from the same forward pass.
    """
    y = torch.tensor([TOP1_TARGET if lab is None else lab for lab in labels], device=x.device)
    res = gradients.compute_saliency(model, x, y, opts.methods, reduction=opts.reduction,
                                     precision=opts.precision, max_batch=opts.batch_size)
    label_t = torch.tensor([0 if lab is None else lab for lab in labels], device=x.device)
    known = torch.tensor([lab is not None for lab in labels], device=x.device)
    pred = res.probs.argmax(dim=1)
    numbers: dict[str, torch.Tensor] = {
        "prob_target": res.target_probs,
        "prob_prediction": res.probs.gather(1, pred[:, None])[:, 0],
        "prob_label": torch.where(known, res.probs.gather(1, label_t[:, None])[:, 0], torch.nan),
        "loss": F.cross_entropy(res.logits.double(), res.targets, reduction="none"),
        **tensor_stats.describe_batch(res.maps),
    }
    # One copy to the host for all of them: on a GPU, each small copy would wait for the device.
    host = _np(torch.stack([v.to(torch.float64) for v in numbers.values()]))
    classes = _np(torch.stack([res.targets, pred]))
    cols: dict[str, np.ndarray] = {"target": classes[0], "prediction": classes[1],
                                   **{name: host[i] for i, name in enumerate(numbers)}}
    if opts.faithfulness:
        steps = opts.faithfulness_steps
        for m in opts.methods:
            f = faithfulness.deletion_insertion(model, x, res.targets, res.maps[m], steps=steps,
                                                batch_size=opts.batch_size * 4, precision=opts.precision)
            cols[f"{m}_deletion_auc"], cols[f"{m}_insertion_auc"] = f.deletion_auc, f.insertion_auc
        f = faithfulness.deletion_insertion(model, x, res.targets, None, steps=steps, order="random",
                                            batch_size=opts.batch_size * 4, precision=opts.precision)
        cols["random_deletion_auc"], cols["random_insertion_auc"] = f.deletion_auc, f.insertion_auc
    maps = {}
    if opts.save_maps:
        for m in opts.methods:
            peak = res.maps[m].amax(dim=(1, 2), keepdim=True)
            maps[m] = _np(torch.where(peak > 0, res.maps[m] / peak, 0.0).half())
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
