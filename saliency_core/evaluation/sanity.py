"""Model-randomisation sanity check: does the map change when the weights do?

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for
Saliency Maps", NeurIPS 2018, section 3 ("cascading randomization"): the
layers of a trained network are re-initialised one after another, from the
output down to the input, and the saliency map is recomputed after each step.
A map that explains the *model* must drift away from the original one (rank
correlation and SSIM fall); a map that stays put is closer to an edge
detector of the *image*.

The model given is shared by every user of the dashboard, so every stage
after the first runs on a randomised copy of it
(:mod:`saliency_core.evaluation.randomized_model`): the given module's
parameters, buffers and mode are never touched, and the random weights
depend only on ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from saliency_core.core.arguments import validate_request
from saliency_core.core.deprecation import renamed_keyword
from saliency_core.core.gradients import OBJECTIVES, compute_saliency
from saliency_core.core.model_access import ModelLike, require_eval, unwrap_module
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.agreement import agreement
from saliency_core.evaluation.randomized_model import (
    DEFAULT_MAX_STAGES,
    RANDOMISED,
    frozen_copy,
    group_layers,
    model_view,
    randomizable_layers,
    reinitialize_stages,
)
from saliency_core.methods.registry import ATTRIBUTION_METHODS, attribute

SIMILARITY_COLUMNS = ("stage_index", "stage", "method", "objective", "image", "spearman", "ssim")

Progress = Callable[[int, int], None]


@dataclass
class RandomizationResult:
    """What :func:`cascading_randomization` found.

    Attributes
    ----------
    stages : S + 1 stage names; ``stages[0] == "original"``, then
        "top → bottom" (the top-most and bottom-most layer re-initialised at
        that stage, or one name when the stage is a single layer).
    layers : S + 1 lists of the layer names newly re-initialised at each
        stage (``layers[0] == []``); stage k has ``layers[1..k]`` all random.
    maps : objective -> (S + 1, N, H, W) float32 array, the saliency map of
        each image at each stage (stage 0 = the trained model).
    similarity : DataFrame with columns :data:`SIMILARITY_COLUMNS` (``method`` is ``attribution``): each
        map's agreement with the same image's stage-0 map (:func:`saliency_core.evaluation.agreement.agreement`);
        NaN where a map is constant or not finite.
    targets : (N,) int64, the classes explained (top-1 resolved on the
        trained model and kept fixed for every stage).
    objectives : the objectives computed ("score", "loss").
    reduction : the channel reduction of the maps.
    precision : "exact" or "fast", the mode every stage's saliency was computed in.
    seed : the seed of the re-initialisation.
    attribution : the attribution method of every stage's maps (a name from
        :data:`saliency_core.ATTRIBUTION_METHODS`; "gradient" by default).
    params : that method's parameters as used (defaults filled in; Grad-CAM's
        layer resolved on the trained model and kept for every stage).
    """

    stages: list[str]
    layers: list[list[str]]
    maps: dict[str, np.ndarray]
    similarity: pd.DataFrame
    targets: np.ndarray
    objectives: tuple[str, ...]
    reduction: str
    precision: str
    seed: int
    attribution: str = "gradient"
    params: dict[str, object] = field(default_factory=dict)


def _stage_name(group: Sequence[str]) -> str:
    return group[0] if len(group) == 1 else f"{group[0]} → {group[-1]}"


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan, math.nan
    scores = agreement(a, b, fractions=())
    return scores["spearman"], scores["ssim"]


def _stage_maps(model: ModelLike, X: torch.Tensor, y, objectives: tuple[str, ...], reduction: str, precision: str,
                max_batch: int | None, attribution: str, params: dict[str, object], progress: Progress | None = None):
    """One stage's maps: (objective -> (N, H, W) tensor, (N,) targets, parameters used); ``progress`` as
    :func:`saliency_core.attribute` reports it (the plain gradient, one pass, reports nothing)."""
    if attribution == "gradient" and not params:
        # The plain gradient as before: exactly compute_saliency, on the module itself (with the model's
        # title and classes for the output check).
        r = compute_saliency(model_view(unwrap_module(model), model), X, y, objectives, reduction=reduction,
                             precision=precision, max_batch=max_batch)
        return r.maps, r.targets, {}
    r = attribute(model, X, y, attribution, objectives, reduction=reduction, precision=precision, max_batch=max_batch,
                  progress=progress, **params)
    return r.maps, r.targets, r.params


def fixed_params(attribution: str, given: dict[str, object], used: dict[str, object]) -> dict[str, object]:
    """``given``, with parameters the trained model resolved from None (Grad-CAM's layer) fixed to their values."""
    out = dict(given)
    for p in ATTRIBUTION_METHODS[attribution].params:
        if given.get(p.name, p.default) is None and used.get(p.name) is not None:
            out[p.name] = used[p.name]
    return out


def cascading_randomization(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], *,
                            objectives: Sequence[str] = OBJECTIVES, reduction: str = "max",
                            max_stages: int | None = DEFAULT_MAX_STAGES, seed: int = 0,
                            progress: Progress | None = None, max_batch: int | None = None,
                            precision: str = "exact", attribution: str = "gradient",
                            params: dict[str, object] | None = None,
                            methods: Sequence[str] | None = None) -> RandomizationResult:
    """Cascading model randomisation (Adebayo et al., NeurIPS 2018).

    Parameters
    ----------
    model : classifier returning (N, C) logits, a ``torch.nn.Module`` or a
        :class:`~saliency_core.models.registry.LoadedModel`. Never modified: the
        randomisation happens on a deep copy (in eval mode, parameters
        frozen), on the model's device.
    X : (N, 3, H, W) float tensor, normalised for the model.
    y : (N,) integer target classes; :data:`~saliency_core.core.model_access.TOP1_TARGET`
        (-1) means the trained model's top-1, which is then kept for every stage.
    objectives : "score" and/or "loss", see :func:`saliency_core.core.gradients.compute_saliency`.
    reduction : channel reduction, see :func:`saliency_core.core.gradients.reduce_channels`.
    max_stages : the parameter-owning layers (about 100 in EfficientNet-Lite0)
        are grouped into at most this many stages from the output down, see
        :func:`group_layers`; None re-initialises one layer per stage.
    seed : seed of the re-initialisation; the same seed gives the same
        random weights (and maps) on every run.
    progress : called as ``progress(done, total)`` with ``total = (S + 1) * K``
        (the original model counts as a stage), ``K`` the method's rows per
        image (``ATTRIBUTION_METHODS[attribution].cost(params).rows``; 1 for
        one-pass methods): ``progress(k * K, total)`` after each stage k, and
        for SmoothGrad or Integrated Gradients also after each chunk of rows
        within a stage, so that a caller hears from the work every few seconds
        (and can stop it there, by raising) rather than once a stage.
    max_batch : images per gradient pass, passed to ``compute_saliency``.
    precision : one of :data:`saliency_core.core.precision.PRECISIONS`, passed to
        ``compute_saliency`` for every stage: "exact" (strict float32, TF32
        off on CUDA) or "fast" (TF32 and float16 autocast on CUDA; elsewhere
        the same as exact).
    attribution : the attribution method of the maps, a name from
        :data:`saliency_core.ATTRIBUTION_METHODS`; "gradient" (the default,
        with no ``params``) is exactly ``compute_saliency``.
    params : the method's parameters (see :func:`saliency_core.attribute`),
        the same for every stage. Parameters the trained model resolves
        (Grad-CAM's default layer) are resolved once, at stage 0, and kept.
    methods : the old name of ``objectives`` (DeprecationWarning; it goes in the next release).

    Returns
    -------
    :class:`RandomizationResult`. Stage k has the top k groups re-initialised
    (cumulatively); its maps are compared with stage 0's.
    """
    if max_stages is not None and (isinstance(max_stages, bool) or not isinstance(max_stages, (int, np.integer))
                                   or max_stages < 1):
        raise InvalidInputError(f"max_stages must be an integer >= 1 or None, got {max_stages!r}")
    validate_request(precision=precision)
    objectives = renamed_keyword("cascading_randomization", "methods", methods, "objectives", objectives, OBJECTIVES)
    given = dict(params or {})
    module = unwrap_module(model)
    require_eval(module)  # stage 0 runs the given model itself

    layers = randomizable_layers(module)
    groups = group_layers([name for name, _ in layers], max_stages) if layers else []
    # Each stage's rows as the method declares them (Integrated Gradients' image and baseline passes included).
    per_stage = (ATTRIBUTION_METHODS[attribution].cost(given, tuple(X.shape[2:])).rows
                 if attribution in ATTRIBUTION_METHODS else 1)
    total = (len(groups) + 1) * per_stage

    def within(stage: int) -> Progress | None:
        """``progress`` inside stage ``stage`` (0 = the trained model), in the stages' units."""
        if progress is None:
            return None

        def report(done: int, of: int) -> None:
            if 0 < done < of:  # the stage's end is reported once, below
                progress(stage * per_stage + per_stage * done // of, total)

        return report

    # Stage 0 runs the given model itself (only read); this also validates
    # X, y, objectives, reduction and the method's parameters before any copying.
    stage_maps0, targets, used = _stage_maps(model, X, y, objectives, reduction, precision, max_batch, attribution,
                                             given, within(0))
    stage_params = fixed_params(attribution, given, used) if used else given
    maps: dict[str, list[np.ndarray]] = {o: [stage_maps0[o].float().cpu().numpy()] for o in objectives}

    if not layers:
        raise InvalidInputError("the model has no layers with parameters to randomise")
    if progress is not None:
        progress(per_stage, total)

    work = frozen_copy(module)
    stage_model = model_view(work, model, RANDOMISED)
    for done, _ in enumerate(reinitialize_stages(work, groups, seed), start=2):
        stage, _, _ = _stage_maps(stage_model, X, targets, objectives, reduction, precision, max_batch, attribution,
                                  stage_params, within(done - 1))
        for o in objectives:
            maps[o].append(stage[o].float().cpu().numpy())
        if progress is not None:
            progress(done * per_stage, total)
    del work, stage_model

    stages = ["original", *(_stage_name(g) for g in groups)]
    stacked = {o: np.stack(parts).astype(np.float32, copy=False) for o, parts in maps.items()}
    rows = []
    for k, stage_name in enumerate(stages):
        for o in objectives:
            for i in range(X.shape[0]):
                spearman, ssim = _agreement(stacked[o][0, i], stacked[o][k, i])
                rows.append((k, stage_name, attribution, o, i, spearman, ssim))
    similarity = pd.DataFrame(rows, columns=list(SIMILARITY_COLUMNS))
    return RandomizationResult(
        stages=stages,
        layers=[[], *groups],
        maps=stacked,
        similarity=similarity,
        targets=targets.cpu().numpy().astype(np.int64),
        objectives=tuple(objectives),
        reduction=reduction,
        precision=precision,
        seed=int(seed),
        attribution=attribution,
        params=dict(used),
    )


def similarity_curves(result: RandomizationResult, image: int = 0,
                      metrics: Sequence[str] = ("spearman", "ssim")) -> dict[str, np.ndarray]:
    """Each objective's map's similarity to its stage-0 map along the stages, for one image.

    Returns
    -------
    ``"<objective> · <metric>"`` -> (S + 1,) float64 by stage index (stage 0
    first), objectives in ``result.objectives`` order, each with ``metrics`` in order.
    """
    _check_image(result, image)
    unknown = [m for m in metrics if m not in ("spearman", "ssim")]
    if unknown:
        raise InvalidInputError(f'metrics must be "spearman" or "ssim", got {unknown[0]!r}')
    sim = result.similarity
    sim = sim[sim["image"] == image]
    out = {}
    for objective in result.objectives:
        rows = sim[sim["objective"] == objective].sort_values("stage_index")
        for metric in metrics:
            out[f"{objective} · {metric}"] = rows[metric].to_numpy(dtype=np.float64)
    return out


def stage_maps(result: RandomizationResult, image: int = 0, max_side: int | None = None) -> dict[str, list[np.ndarray]]:
    """Each objective's map at every stage for one image, optionally shrunk for display.

    Parameters
    ----------
    image : index of the image in the result.
    max_side : None for the maps as computed; else each (H, W) map shrinks
        by f = ceil(max(H, W) / max_side), each output pixel the mean of its
        block of about f x f pixels (``adaptive_avg_pool2d``; exactly f x f
        when f divides the side), so no side exceeds ``max_side``: 224 px
        maps become 112 px for 112. Averaging keeps every pixel's share
        (strided sampling would skip three in four).

    Returns
    -------
    objective -> S + 1 float32 arrays of shape (ceil(H / f), ceil(W / f)),
    stage 0 first.
    """
    _check_image(result, image)
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer))
                                 or max_side < 1):
        raise InvalidInputError(f"max_side must be an integer >= 1 or None, got {max_side!r}")
    out = {}
    for objective, maps in result.maps.items():
        stack = np.ascontiguousarray(maps[:, image], dtype=np.float32)  # (S + 1, H, W)
        h, w = stack.shape[-2:]
        f = 1 if max_side is None else math.ceil(max(h, w) / max_side)
        if f > 1:
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(stack)[:, None],
                                                             (math.ceil(h / f), math.ceil(w / f)))
            stack = pooled[:, 0].numpy()
        out[objective] = list(stack)
    return out


def _check_image(result: RandomizationResult, image: int) -> None:
    n = len(result.targets)
    if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < n:
        raise InvalidInputError(f"image must be an index from 0 to {n - 1}, got {image!r}")
