"""Two maps of dataset images, for the Dataset page's "Where two maps disagree most".

The maps are those the batch job saved (``--save-maps``) where it did; else they are computed here, as the
job computed them (its model, each image's target, the method's parameters, the channel reduction and the
precision from its manifest), through the same cached analysis as every page, when the results' model
loads here and the work is within the compute budget. Either way, each comes with the model's crop of the
image, so the photo and the maps line up pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pages.ui import budget, caches, model_cache
from pages.ui.text import plain
from saliency_core.errors import SaliencyError
from saliency_core.inputs.images import image_sha256, load_image
from saliency_core.jobs import map_specs
from saliency_core.jobs.results import ResultsFolder
from saliency_core.methods.registry import map_title
from saliency_core.models.registry import LoadedModel
from saliency_core.serving import compute_cost
from saliency_core.serving.compute_cost import CALIBRATION_WORK, NOTHING
from saliency_core.serving.map_key import MapKey, map_key


@dataclass
class PairMaps:
    """One image's two maps as drawn: ``crop`` the model's (H, W, 3) uint8 crop (None when it can't be read
    here), ``maps`` map name -> (H, W) float32 (empty when there are none to draw)."""

    crop: np.ndarray | None
    maps: dict[str, np.ndarray]


def title(name: str) -> str:
    """A map of the results by its one title everywhere ("Gradient · score", "Grad-CAM · loss −L")."""
    spec = map_specs.MAP_NAMES.get(name)
    return map_title(spec.method, spec.objective) if spec is not None else map_specs.title(name)


def _model(model_name: str | None) -> LoadedModel | None:
    status = model_cache.model_statuses().get(model_name or "")
    if status is None or not status.available:
        return None
    try:
        return model_cache.get_model(status.name)
    except SaliencyError:
        return None


def _crop(path: object, model: LoadedModel) -> tuple[str, np.ndarray] | None:
    """(sha256 of the file, the model's crop of it), or None when the file can't be read here."""
    try:
        data = caches.read_dataset_image(str(path))
        sha = image_sha256(data)
        _, crop, _ = caches.image_views(sha, model.name, lambda notes: load_image(data, notes=notes))
    except (OSError, SaliencyError):
        return None
    return sha, crop


def pair_maps(folder: ResultsFolder, rows: pd.DataFrame, names: Sequence[str], model_name: str | None,
              config: Mapping[str, object]) -> tuple[list[PairMaps], str]:
    """Each row's maps ``names`` (map names of the results: "score", "smoothgrad_loss") and crop, and a line on
    where the maps come from (or why there are none)."""
    model = _model(model_name)
    saved = [folder.saved_maps(str(row["key"])) for _, row in rows.iterrows()]
    saved = [{n: s[n] for n in names} if s is not None and all(n in s for n in names) else None for s in saved]
    crops = [_crop(row.get("path"), model) if model is not None else None for _, row in rows.iterrows()]
    if all(s is not None for s in saved):
        out = [PairMaps(c[1] if c is not None and c[1].shape[:2] == s[names[0]].shape else None, s)
               for s, c in zip(saved, crops, strict=True)]
        return out, "The maps as the job saved them (--save-maps), each on its own colour scale."
    if model is None:
        return ([PairMaps(None, {}) for _ in saved],
                f"The job did not save its maps (--save-maps), and its model ({plain(model_name or 'unknown')}) "
                "can't be loaded here to compute them: open an image in Methods to see its maps.")
    reduction, precision = str(config.get("reduction", "max")), str(config.get("precision", "exact"))
    given = config.get("method_params") or {}
    specs = {n: map_specs.MAP_NAMES[n] for n in names}
    keys: list[dict[str, MapKey] | None] = []
    for (_, row), crop in zip(rows.iterrows(), crops, strict=True):
        if crop is None or pd.isna(row.get("target")):
            keys.append(None)
            continue
        keys.append({s.method: map_key(model.key, crop[0], s.method, dict(given.get(s.method) or {}),
                                       target=int(row["target"]), reduction=reduction, precision=precision)
                     for s in specs.values()})
    todo = [k for by_method in keys if by_method for k in by_method.values() if caches.cached_analysis(k) is None]
    work = sum((compute_cost.method_work(k.method, k.param_dict()) for k in todo), NOTHING)
    if not work.within(CALIBRATION_WORK):
        seconds = budget.pass_cost(model, precision).seconds(work)
        if seconds > compute_cost.confirm_above_s():
            return ([PairMaps(c[1] if c else None, {}) for c in crops],
                    f"The job did not save its maps (--save-maps); computing them here would take about "
                    f"{seconds:.0f} s: open an image in Methods to see its maps.")
    out = []
    try:
        for by_method, crop in zip(keys, crops, strict=True):
            if by_method is None:
                out.append(PairMaps(None, {}))
                continue
            analyses = {m: caches.analyse_one(k, crop[1]) for m, k in by_method.items()}
            out.append(PairMaps(crop[1], {n: analyses[s.method].maps[s.objective] for n, s in specs.items()}))
    except SaliencyError as exc:
        return [PairMaps(c[1] if c else None, {}) for c in crops], f"The maps can't be computed here: {plain(exc)}"
    return out, (f"The job did not save its maps (--save-maps): computed here with {plain(model.spec.title)}, "
                 "each image's target and the job's parameters; each map on its own colour scale.")
