"""Sparseness: the Gini index of a map (Chalasani, Chen, Chowdhury, Jha & Wu, "Concise Explanations of
Neural Networks using Adversarial Training", ICML 2020).

With the map's n values sorted ascending, a_(1) <= ... <= a_(n),
``G = Σ_k (2k − n − 1) a_(k) / (n Σ_k a_(k))``: 0 for a constant map, (n − 1) / n when one pixel holds
everything. Higher is sparser (more concise). An all-zero map is NaN (no distribution to measure).
Quantus 0.6.0 adds 1e-7 to every value first (so a zero map scores 0); here the map is used as is.
"""

from __future__ import annotations

import numpy as np
import torch

from saliency_core.evaluation.metrics._common import check_maps_alone
from saliency_core.evaluation.metrics.declaration import Metric
from saliency_core.evaluation.perturbations import MapsLike


def sparseness(maps: MapsLike) -> np.ndarray:
    """Gini index of each map.

    maps : (N, H, W) >= 0 (magnitudes; a signed map is made absolute first)
    Returns (N,) float64 in [0, (n − 1) / n], n = H * W; NaN for an all-zero map.
    """
    a = check_maps_alone(maps).abs().flatten(1)
    n = a.shape[1]
    a, _ = torch.sort(a, dim=1)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    total = a.sum(dim=1)
    g = ((2 * k - n - 1) * a).sum(dim=1) / (n * total)
    return torch.where(total > 0, g, torch.full_like(g, float("nan"))).numpy()


METRIC = Metric(
    name="sparseness",
    title="Sparseness (Gini)",
    citation="Chalasani et al., ICML 2020",
    better="higher",
    good="a few pixels hold most of the attribution: 0 for a flat map, near 1 for a single pixel",
    params=(),
    run=sparseness,
)
