"""One image (or a batch), one model, one target: everything the pages show.

:func:`analyse` runs the model once per batch and returns plain numpy
arrays, cheap to cache and independent of torch's device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from saliency_core import gradients
from saliency_core._torch import TOP1_TARGET, synchronize
from saliency_core.models import LoadedModel

# The pages' automatic target: "the true label where known, else the model's
# top-1 prediction". Not the engine's TOP1_TARGET ("top-1", whatever the
# label), although both are -1: analyse translates one into the other.
AUTO_TARGET = -1


@dataclass
class ImageAnalysis:
    """Score and loss saliency of one image for one target class.

    Attributes
    ----------
    display : (H, W, 3) uint8, the crop the model saw; maps align with it pixel for pixel
    maps : "score"/"loss" -> (H, W) float32 >= 0
    gradients : "score"/"loss" -> (3, H, W) float32, signed
    terms : "target"/"others" -> (3, H, W) float32, the two terms of the loss
        gradient, see :func:`saliency_core.gradients.loss_decomposition`
    probs : (C,) float32 class probabilities
    target : the class the maps explain
    target_auto : True when the target was not chosen by the user
    label : the true label when known, else None
    seconds : wall time of the batch's gradient computation divided by the
        number of images (the model's CUDA device synchronised before both
        clock reads)
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
            precision: str = "exact", max_batch: int | None = 32) -> list[ImageAnalysis]:
    """Both maps, probabilities and the loss-gradient terms for a batch of images.

    Parameters
    ----------
    model : a loaded model (see :func:`saliency_core.models.load_model`)
    images : RGB PIL images, any size (cropped as the model expects); or the
        model's crops already made, (N, crop, crop, 3) uint8 as
        :meth:`~saliency_core.models.LoadedModel.crop_array` returns them
        (the dashboard keeps those instead of full-size uploads)
    targets : class per image; None or :data:`AUTO_TARGET` (-1) for
        automatic: the true label when ``labels`` gives one, else the top-1
        prediction (asked of the engine as
        :data:`~saliency_core._torch.TOP1_TARGET`)
    labels : true labels where known
    """
    labels = list(labels) if labels is not None else [None] * len(images)
    chosen = [AUTO_TARGET if t is None else int(t) for t in targets]
    y = [_engine_target(t, lab) for t, lab in zip(chosen, labels, strict=True)]
    batch = model.prepare_crops(images) if isinstance(images, np.ndarray) else model.preprocess(list(images))
    # GPU work is asynchronous: wait for it before each clock read, so the
    # time is that of the work done, not of queueing it.
    synchronize(model.device)
    start = time.perf_counter()
    result = gradients.compute_saliency(model, batch.x, torch.tensor(y), ("score", "loss"), reduction=reduction,
                                        precision=precision, max_batch=max_batch)
    target_term, others_term = gradients.loss_decomposition(result)
    synchronize(model.device)
    seconds = (time.perf_counter() - start) / max(1, len(images))

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    maps = {m: np_(v) for m, v in result.maps.items()}
    grads = {m: np_(v) for m, v in result.gradients.items()}
    tt, ot, probs = np_(target_term), np_(others_term), np_(result.probs)
    targets_out = result.targets.cpu().tolist()
    return [
        ImageAnalysis(
            model_name=model.name,
            display=batch.display[i],
            maps={m: v[i] for m, v in maps.items()},
            gradients={m: v[i] for m, v in grads.items()},
            terms={"target": tt[i], "others": ot[i]},
            probs=probs[i],
            target=int(targets_out[i]),
            target_auto=chosen[i] == AUTO_TARGET,
            label=labels[i],
            categories=model.categories,
            reduction=reduction,
            precision=precision,
            seconds=seconds,
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
