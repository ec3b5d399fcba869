"""Pointing game: does the map's maximum fall on the object? (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff,
"Top-down Neural Attention by Excitation Backprop", IJCV 2018.)

A hit when a pixel of maximal map value lies within ``tolerance`` pixels (Euclidean) of the object mask.
Ties count as a hit when any of the tied maxima does (as Quantus 0.6.0 does), so a constant map hits
whenever the mask is not empty. Zhang et al. use a 15 px tolerance at the dataset's resolution;
the default here is 0 (Quantus's: the maximum must be on the mask). An empty mask gives NaN.
"""

from __future__ import annotations

import numpy as np

from saliency_core.evaluation.metrics._common import check_maps_alone, check_mask, check_positive
from saliency_core.evaluation.metrics.declaration import Metric
from saliency_core.evaluation.perturbations import MapsLike
from saliency_core.methods.declaration import Param


def pointing_game(maps: MapsLike, mask: MapsLike, *, tolerance: float = 0.0) -> np.ndarray:
    """1.0 for a hit, 0.0 for a miss, NaN for an empty mask.

    maps : (N, H, W) finite; mask : (N, H, W) bool (or 0/1), the object
    tolerance : pixels (>= 0) the maximum may lie off the mask
    Returns (N,) float64.
    """
    a = check_maps_alone(maps)
    m = check_mask(mask, a.shape).numpy()
    tolerance = check_positive(tolerance, "tolerance", zero_ok=True)
    a = a.numpy()
    peak = a == a.max(axis=(1, 2), keepdims=True)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if not m[i].any():
            continue
        near = m[i]
        if tolerance > 0:
            from scipy import ndimage  # imported on first use: scipy costs start-up time

            near = ndimage.distance_transform_edt(~m[i]) <= tolerance
        out[i] = float((peak[i] & near).any())
    return out


METRIC = Metric(
    name="pointing_game",
    title="Pointing game",
    citation="Zhang et al., IJCV 2018",
    better="higher",
    good="1 (a hit): the map's maximum lies on the object",
    params=(Param("tolerance", 0.0, float, "pixels the maximum may lie off the object (Zhang et al.: 15)",
                  minimum=0.0, maximum=50.0),),
    run=pointing_game,
    needs=frozenset({"mask"}),
)
