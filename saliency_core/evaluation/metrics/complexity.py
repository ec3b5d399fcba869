"""Complexity: the entropy of a map's fractional contributions (Bhatt, Weller & Moura, "Evaluating and
Aggregating Feature-based Model Explanations", IJCAI 2020).

``p_i = |a_i| / Σ_j |a_j|`` and ``C = −Σ_i p_i ln p_i`` (0 ln 0 = 0): 0 when one pixel holds everything,
ln(H * W) for a constant map. Lower is simpler. An all-zero map is NaN. Quantus 0.6.0 computes
``−Σ p ln(p + 1e-12)``: the same to ~1e-11.
"""

from __future__ import annotations

import numpy as np
import torch

from saliency_core.evaluation.metrics._common import check_maps_alone
from saliency_core.evaluation.metrics.declaration import Metric
from saliency_core.evaluation.perturbations import MapsLike


def complexity(maps: MapsLike) -> np.ndarray:
    """Entropy of each map's fractional contributions.

    maps : (N, H, W) (absolute values are used)
    Returns (N,) float64 in [0, ln(H * W)] (nats); NaN for an all-zero map.
    """
    a = check_maps_alone(maps).abs().flatten(1)
    total = a.sum(dim=1, keepdim=True)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    h = -torch.special.xlogy(p, p).sum(dim=1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float("nan"))).numpy()


METRIC = Metric(
    name="complexity",
    title="Complexity (entropy)",
    citation="Bhatt, Weller & Moura, IJCAI 2020",
    better="lower",
    good="the attribution is concentrated: 0 for a single pixel, ln(H·W) for a flat map",
    params=(),
    run=complexity,
)
