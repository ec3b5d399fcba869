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

from saliency_core.core.arguments import validate_request
from saliency_core.core.model_access import TOP1_TARGET, ModelLike, device_of, input_dtype_of, module_for
from saliency_core.core.model_output import output_check
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics._common import (
    Clean,
    Progress,
    Recompute,
    check_count,
    check_maps,
    clean_pass,
    image_generator,
    image_seeds,
)
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


def image_other_classes(y: torch.Tensor, classes: int, seeds: torch.Tensor) -> torch.Tensor:
    """(N,) int64: for each target, a class drawn uniformly among the ``classes − 1`` others, image i's by a
    generator keyed on ``seeds[i]`` (:func:`~saliency_core.evaluation.metrics._common.image_seeds`), so an
    image's draw does not depend on the batch around it."""
    r = torch.tensor([int(torch.randint(0, classes - 1, (1,), generator=image_generator(s)))
                      for s in seeds.tolist()], dtype=torch.int64)
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
                 progress: Progress | None = None, classes: int | None = None) -> np.ndarray:
    """SSIM between each map and the map of a random other class.

    Parameters
    ----------
    model, X (N, 3, H, W), y (N,), clean : as :func:`faithfulness_correlation`
    maps : (N, H, W) the maps of X for y by ``recompute``
    recompute : a :class:`Recompute` (method, objective, params, reduction), or a method name (score)
    seed : seed of the other classes, drawn per image (:func:`image_other_classes`): an image gets the same
        class, and value, alone or in any batch; off_classes : (N,) classes to use instead
    progress : ``progress(done, total)`` once the other maps are made (total N)
    classes : the model's number of classes, when ``clean`` is None and the model does not say it (a bare
        module): with it and targets >= 0, no clean pass is run (the metric needs only the targets)

    Returns
    -------
    (N,) float64 in [−1, 1].
    """
    if isinstance(recompute, str):
        recompute = Recompute(recompute)
    if clean is not None:
        x, targets, classes = clean.x, clean.y, clean.logits.shape[1]
    else:
        targets = validate_request(X, y, precision=precision).y
        classes = classes if classes is not None else output_check(model).classes
        if classes is not None:
            classes = check_count(classes, "classes", 2)
            if int(targets.max()) >= classes:
                raise InvalidInputError(f"target class {int(targets.max())} is out of range for a model with "
                                        f"{classes} classes")
        if bool((targets == TOP1_TARGET).any()) or classes is None:
            # The top-1 or the class count is only known from the logits: one forward pass.
            clean = clean_pass(model, X, y, precision=precision, batch_size=batch_size)
            x, targets, classes = clean.x, clean.y, clean.logits.shape[1]
        else:
            x = X.detach()
    n, _, h, w = x.shape
    a = check_maps(maps, (n, h, w)).numpy()
    if off_classes is None:
        off_classes = image_other_classes(targets, classes, image_seeds(_model_input(model, x, precision), seed))
    elif not isinstance(off_classes, torch.Tensor) or tuple(off_classes.shape) != (n,):
        raise InvalidInputError(f"off_classes must be an (N,) = ({n},) tensor of classes")
    other = recompute.maps(model, x, off_classes.to(targets.device), precision).numpy()
    if progress is not None:
        progress(n, n)
    return np.array([map_ssim(a[i], other[i]) for i in range(n)])


def _model_input(model: ModelLike, x: torch.Tensor, precision: str) -> torch.Tensor:
    """``x`` as :func:`~saliency_core.evaluation.metrics._common.clean_pass` holds it (the model's dtype), so
    that its image seeds equal those of a shared clean pass."""
    module = module_for(model, precision)
    return x.to(device=device_of(module), dtype=input_dtype_of(module))


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
