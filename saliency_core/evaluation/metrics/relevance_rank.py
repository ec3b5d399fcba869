"""Relevance rank accuracy: of the K most relevant pixels, K the object's size in pixels, the share on
the object (Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 2022).

Ties in the map are broken by row-major position (a stable sort), so the result is deterministic; Quantus
0.6.0 uses numpy's default (unstable) sort, the same wherever the K-th value is not tied. NaN for an
empty mask.
"""

from __future__ import annotations

import numpy as np
import torch

from saliency_core.evaluation.metrics._common import check_maps_alone, check_mask
from saliency_core.evaluation.metrics.declaration import Metric
from saliency_core.evaluation.perturbations import MapsLike, pixel_ranks


def relevance_rank_accuracy(maps: MapsLike, mask: MapsLike) -> np.ndarray:
    """maps : (N, H, W); mask : (N, H, W) bool. Returns (N,) float64 in [0, 1] (NaN: empty mask)."""
    a = check_maps_alone(maps)
    m = check_mask(mask, a.shape).flatten(1)
    ranks = pixel_ranks(a).flatten(1)
    k = m.sum(dim=1)
    hits = (m & (ranks < k[:, None])).sum(dim=1).double()
    return torch.where(k > 0, hits / k.clamp(min=1), float("nan")).numpy()


METRIC = Metric(
    name="relevance_rank_accuracy",
    title="Relevance rank accuracy",
    citation="Arras, Osman & Samek, Information Fusion 2022",
    better="higher",
    good="1: the object's size in top-ranked pixels all lie on the object",
    params=(),
    run=relevance_rank_accuracy,
    needs=frozenset({"mask"}),
)
