"""One image (or a batch), one model, one target, one attribution method: everything the pages show.

:func:`analyse` runs the model once per batch (the plain gradient) or asks
:func:`saliency_core.attribute` for any other method, and returns plain
numpy arrays, cheap to cache and independent of torch's device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from saliency_core.core import gradients
from saliency_core.core.model_access import TOP1_TARGET
from saliency_core.core.precision import synchronize
from saliency_core.methods._common import Progress
from saliency_core.methods.registry import attribute, get_method
from saliency_core.models.registry import LoadedModel

# The pages' automatic target: "the true label where known, else the model's
# top-1 prediction". Not the engine's TOP1_TARGET ("top-1", whatever the
# label), although both are -1: analyse translates one into the other.
AUTO_TARGET = -1


@dataclass
class ImageAnalysis:
    """Score and loss maps of one image for one target class, by one attribution method.

    Attributes
    ----------
    display : (H, W, 3) uint8, the crop the model saw; maps align with it pixel for pixel
    maps : "score"/"loss" -> (H, W) float32 >= 0
    gradients : "score"/"loss" -> the signed values the maps reduce: for
        "gradient" the input gradients (3, H, W) float32; for another method
        its attributions (3, H, W), or (1, H, W) >= 0 for Grad-CAM. For the
        loss the sign follows ``ATTRIBUTION_METHODS[method].loss_objective``.
    terms : "target"/"others" -> (3, H, W) float32, the two terms of the loss
        gradient, see :func:`saliency_core.core.gradients.loss_decomposition`;
        empty for any method but "gradient" (the decomposition is the gradient's)
    probs : (C,) float32 class probabilities
    target : the class the maps explain
    target_auto : True when the target was not chosen by the user
    label : the true label when known, else None
    seconds : wall time of the batch's gradient computation divided by the
        number of images (the model's CUDA device synchronised before both
        clock reads)
    method : a key of :data:`saliency_core.ATTRIBUTION_METHODS`
    params : every parameter the method used, defaults included (as
        ``AttributionResult.params``; empty for "gradient")
    convergence : Integrated Gradients and DeepLIFT only: "score"/"loss" -> the relative
        completeness gap of this image (a float); None for other methods
    steps_used : Integrated Gradients only: the points on the path this image took
    converged : Integrated Gradients' adaptive rule only: whether the image met the
        tolerance within the cap on steps (None for the fixed rules and other methods)
    """

    model_name: str
    display: np.ndarray
    maps: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    terms: dict[str, np.ndarray]
    probs: np.ndarray
    target: int
    target_auto: bool
    label: int | None
    categories: list[str]
    reduction: str
    precision: str
    seconds: float
    method: str = "gradient"
    params: dict[str, object] = field(default_factory=dict)
    convergence: dict[str, float] | None = None
    steps_used: int | None = None
    converged: bool | None = None

    def channel_values(self, objective: str) -> np.ndarray | None:
        """(3, H, W) signed values behind a map, for hover and downloads; None for a one-channel method (Grad-CAM)."""
        values = self.gradients[objective]
        return values if values.shape[0] == 3 else None

    @property
    def target_name(self) -> str:
        return self.categories[self.target]

    @property
    def target_prob(self) -> float:
        return float(self.probs[self.target])

    @property
    def prediction(self) -> int:
        return int(np.argmax(self.probs))

    def top_k(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The k most probable classes as (index, name, probability), best first."""
        idx = np.argsort(-self.probs, kind="stable")[:k]
        return [(int(i), self.categories[int(i)], float(self.probs[i])) for i in idx]


def analyse(model: LoadedModel, images: Sequence[Image.Image] | np.ndarray, targets: Sequence[int | None],
            labels: Sequence[int | None] | None = None, *, reduction: str = "max",
            precision: str = "exact", max_batch: int | None = 32, method: str = "gradient",
            params: dict[str, object] | None = None, progress: Progress | None = None) -> list[ImageAnalysis]:
    """Both maps (score and loss) and the probabilities for a batch of images, by one attribution method.

    Parameters
    ----------
    model : a loaded model (see :func:`saliency_core.models.loading.load_model`)
    images : RGB PIL images, any size (cropped as the model expects); or the
        model's crops already made, (N, crop, crop, 3) uint8 as
        :meth:`~saliency_core.models.registry.LoadedModel.crop_array` returns them
        (the dashboard keeps those instead of full-size uploads)
    targets : class per image; None or :data:`AUTO_TARGET` (-1) for
        automatic: the true label when ``labels`` gives one, else the top-1
        prediction (asked of the engine as
        :data:`~saliency_core.core.model_access.TOP1_TARGET`)
    labels : true labels where known
    method : a key of :data:`saliency_core.ATTRIBUTION_METHODS`. "gradient"
        (the default) computes exactly :func:`saliency_core.core.gradients.compute_saliency`'s
        maps and the loss-gradient terms; any other method goes through
        :func:`saliency_core.attribute` with ``params``.
    params : the method's parameters (checked by the method; defaults fill the rest)
    progress : ``progress(done, total)`` as :func:`saliency_core.attribute` reports it
    """
    spec = get_method(method)
    params = dict(params or {})
    labels = list(labels) if labels is not None else [None] * len(images)
    chosen = [AUTO_TARGET if t is None else int(t) for t in targets]
    y = [_engine_target(t, lab) for t, lab in zip(chosen, labels, strict=True)]
    batch = model.prepare_crops(images) if isinstance(images, np.ndarray) else model.preprocess(list(images))
    # GPU work is asynchronous: wait for it before each clock read, so the
    # time is that of the work done, not of queueing it.
    synchronize(model.device)
    start = time.perf_counter()
    terms: dict[str, np.ndarray] = {}
    convergence = steps_used = converged = None
    if method == "gradient":
        spec.resolve(params)  # it takes none: an unknown one is an error, as for attribute()
        result = gradients.compute_saliency(model, batch.x, torch.tensor(y), ("score", "loss"),
                                            reduction=reduction, precision=precision, max_batch=max_batch)
        target_term, others_term = gradients.loss_decomposition(result)
        values, used = result.gradients, {}
    else:
        result = attribute(model, batch.x, torch.tensor(y), method, ("score", "loss"), reduction=reduction,
                           precision=precision, max_batch=max_batch, progress=progress, **params)
        values, used, convergence = result.attributions, dict(result.params), result.convergence
        steps_used = None if result.steps_used is None else result.steps_used.cpu().tolist()
        converged = None if result.converged is None else result.converged.cpu().tolist()
    synchronize(model.device)
    seconds = (time.perf_counter() - start) / max(1, len(images))

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    maps = {m: np_(v) for m, v in result.maps.items()}
    grads = {m: np_(v) for m, v in values.items()}
    if method == "gradient":
        terms = {"target": np_(target_term), "others": np_(others_term)}
    gaps = {m: np_(v) for m, v in convergence.items()} if convergence else None
    probs = np_(result.probs)
    targets_out = result.targets.cpu().tolist()
    return [
        ImageAnalysis(
            model_name=model.name,
            display=batch.display[i],
            maps={m: v[i] for m, v in maps.items()},
            gradients={m: v[i] for m, v in grads.items()},
            terms={k: v[i] for k, v in terms.items()},
            probs=probs[i],
            target=int(targets_out[i]),
            target_auto=chosen[i] == AUTO_TARGET,
            label=labels[i],
            categories=model.categories,
            reduction=reduction,
            precision=precision,
            seconds=seconds,
            method=method,
            params=dict(used),
            convergence={m: float(v[i]) for m, v in gaps.items()} if gaps else None,
            steps_used=None if steps_used is None else int(steps_used[i]),
            converged=None if converged is None else bool(converged[i]),
        )
        for i in range(len(images))
    ]


def _engine_target(chosen: int, label: int | None) -> int:
    """The class to ask the engine for: ``chosen``, or for AUTO_TARGET the label, else TOP1_TARGET."""
    if chosen != AUTO_TARGET:
        return chosen
    return label if label is not None else TOP1_TARGET


def signed_channel_max(values: np.ndarray) -> np.ndarray:
    """(3, H, W) signed -> (H, W): per pixel, the channel value of largest magnitude, sign kept."""
    idx = np.abs(values).argmax(axis=0)
    return np.take_along_axis(values, idx[None], axis=0)[0]
