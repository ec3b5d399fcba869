"""Relevance mass accuracy: the share of a map's total inside the object mask (Arras, Osman & Samek,
"CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural network explanations",
Information Fusion 2022).

``Σ_{p in mask} a_p / Σ_p a_p`` for maps >= 0: 1 when all relevance is on the object. NaN for an empty
mask or an all-zero map. The same as Quantus 0.6.0's RelevanceMassAccuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from saliency_core.evaluation.metrics._common import check_maps_alone, check_mask
from saliency_core.evaluation.metrics.declaration import Metric
from saliency_core.evaluation.perturbations import MapsLike


def relevance_mass_accuracy(maps: MapsLike, mask: MapsLike) -> np.ndarray:
    """maps : (N, H, W) >= 0; mask : (N, H, W) bool. Returns (N,) float64 in [0, 1] (NaN: empty mask or zero map)."""
    a = check_maps_alone(maps)
    m = check_mask(mask, a.shape)
    total = a.flatten(1).sum(dim=1)
    inside = (a * m).flatten(1).sum(dim=1)
    ok = (total != 0) & m.flatten(1).any(dim=1)
    return torch.where(ok, inside / torch.where(total != 0, total, 1.0), float("nan")).numpy()


METRIC = Metric(
    name="relevance_mass_accuracy",
    title="Relevance mass accuracy",
    citation="Arras, Osman & Samek, Information Fusion 2022",
    better="higher",
    good="1: all of the map's mass lies on the object",
    params=(),
    run=relevance_mass_accuracy,
    needs=frozenset({"mask"}),
)
