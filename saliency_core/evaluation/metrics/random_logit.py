"""Random logit (Sixt, Granz & Landgraf, "When Explanations Lie: Why Many Modified BP Attributions Fail",
ICML 2020).

The map of the target y is compared with the map of a class drawn uniformly among the other classes
(same method, objective and parameters): a map that explains the class, not just the image, should change.
The similarity is the SSIM of the two (H, W) maps, with data range max − min over both (Quantus 0.6.0's
choice). Lower is better. Quantus 0.6.0 computes SSIM over the two maps flattened to 1-D vectors (by
default broadcast to every channel); here the maps are compared as images, and the tests compare with
Quantus given this 2-D similarity and the same off-class draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from saliency_core.core.model_access import ModelLike
from saliency_core.evaluation.metrics._common import Clean, Progress, Recompute, check_maps, clean_pass
from saliency_core.evaluation.metrics.declaration import Metric, MetricCost
from saliency_core.evaluation.perturbations import MapsLike
from saliency_core.methods.declaration import Param


def other_classes(y: torch.Tensor, classes: int, seed: int) -> torch.Tensor:
    """(N,) int64: for each target, a class drawn uniformly among the ``classes − 1`` others (one seeded
    private generator, one draw per image in order)."""
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randint(0, classes - 1, (y.shape[0],), generator=g)
    y = y.cpu()
    return r + (r >= y).long()


def map_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) maps, data range max − min over both, skimage's default 7 px window (smaller for
    small maps); NaN under 3 px a side or when both maps are one constant."""
    from skimage.metrics import structural_similarity  # imported on first use: skimage is slow to import

    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    rng = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    if win < 3 or rng == 0:
        return float("nan")
    return float(structural_similarity(a, b, win_size=win, data_range=rng))


def random_logit(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], maps: MapsLike,
                 recompute: Recompute | str, *, seed: int = 0, off_classes: torch.Tensor | None = None,
                 batch_size: int = 64, precision: str = "exact", clean: Clean | None = None,
                 progress: Progress | None = None) -> np.ndarray:
    """SSIM between each map and the map of a random other class.

    Parameters
    ----------
    model, X (N, 3, H, W), y (N,), clean : as :func:`faithfulness_correlation`
    maps : (N, H, W) the maps of X for y by ``recompute``
    recompute : a :class:`Recompute` (method, objective, params, reduction), or a method name (score)
    seed : seed of :func:`other_classes`; off_classes : (N,) classes to use instead
    progress : ``progress(done, total)`` once the other maps are made (total N)

    Returns
    -------
    (N,) float64 in [−1, 1].
    """
    if isinstance(recompute, str):
        recompute = Recompute(recompute)
    clean = clean or clean_pass(model, X, y, precision=precision, batch_size=batch_size)
    n, _, h, w = clean.x.shape
    a = check_maps(maps, (n, h, w)).numpy()
    if off_classes is None:
        off_classes = other_classes(clean.y, clean.logits.shape[1], seed)
    other = recompute.maps(model, clean.x, off_classes.to(clean.device), precision).numpy()
    if progress is not None:
        progress(n, n)
    return np.array([map_ssim(a[i], other[i]) for i in range(n)])


METRIC = Metric(
    name="random_logit",
    title="Random logit",
    citation="Sixt, Granz & Landgraf, ICML 2020",
    better="lower",
    good="low SSIM: the map of a random other class looks different, so the map depends on the class",
    params=(Param("seed", 0, int, "seed of the other classes", minimum=0),),
    run=random_logit,
    cost=lambda **_: MetricCost(forward=1, attributions=1),
    needs=frozenset({"model", "method"}),
)
