"""The registry of attribution methods, and their one entry point :func:`attribute`.

::

    r = attribute(model, X, y, method="integrated_gradients", objectives=("score", "loss"))
    r.maps["score"]          # (N, H, W) >= 0, channel-reduced
    r.attributions["loss"]   # (N, 3, H, W) signed; a CAM method: (N, 1, H, W)
    r.params                 # {"steps": 256, "baseline": "black", "rule": "adaptive", "tolerance": 0.05}
    r.convergence["score"]   # (N,) the relative completeness gap (Integrated Gradients, DeepLIFT)
    r.steps_used             # (N,) the points on the path each image took

Every method can be asked of either objective: "score" (the target's
logit s_y) or "loss" (the per-image cross-entropy L, independent of the rest
of the batch). Where a method's output depends on the sign of the objective
(Gradient×Input, Integrated Gradients, DeepLIFT, Guided Backprop, the CAM methods, and the
perturbation methods, which measure how the objective changes), the loss
objective is used as −L = log p_y, so that positive always means "evidence
for the target" (:attr:`AttributionMethod.loss_objective` says which).

Each method lives in its own module of :mod:`saliency_core.methods` and
describes itself there (``METHOD``, an :class:`AttributionMethod`); this
module only collects them, one line each, in :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from saliency_core.core.arguments import OBJECTIVES, validate_request
from saliency_core.core.gradients import reduce_channels
from saliency_core.core.model_access import ModelLike, device_of, input_dtype_of, module_for, require_eval
from saliency_core.core.model_output import output_check
from saliency_core.errors import InvalidInputError
from saliency_core.methods import (
    attention_gradients,
    attention_rollout,
    blur_ig,
    deeplift,
    expected_gradients,
    grad_cam,
    grad_cam_plus_plus,
    gradient,
    gradient_x_input,
    guided_backprop,
    guided_ig,
    hires_cam,
    integrated_gradients,
    kernel_shap,
    layer_cam,
    lime,
    occlusion,
    rise,
    score_cam,
    smoothgrad,
    smoothgrad_sq,
    vargrad,
    xrai,
)
from saliency_core.methods._common import Progress, Request
from saliency_core.methods.declaration import FAMILIES
from saliency_core.methods.declaration import AttributionMethod as AttributionMethod
from saliency_core.methods.declaration import Param as Param

#: Every method, in the order the dashboard lists them (the plain gradient, the default, first).
METHODS: list[AttributionMethod] = [
    gradient.METHOD,
    gradient_x_input.METHOD,
    smoothgrad.METHOD,
    smoothgrad_sq.METHOD,
    vargrad.METHOD,
    integrated_gradients.METHOD,
    blur_ig.METHOD,
    guided_ig.METHOD,
    expected_gradients.METHOD,
    xrai.METHOD,
    deeplift.METHOD,
    guided_backprop.METHOD,
    grad_cam.METHOD,
    grad_cam_plus_plus.METHOD,
    layer_cam.METHOD,
    hires_cam.METHOD,
    score_cam.METHOD,
    attention_rollout.METHOD,
    attention_gradients.METHOD,
    occlusion.METHOD,
    rise.METHOD,
    kernel_shap.METHOD,
    lime.METHOD,
]

#: name -> method, built from :data:`METHODS` (and kept in step with it by :func:`registered`).
ATTRIBUTION_METHODS: dict[str, AttributionMethod] = {m.name: m for m in METHODS}


@contextmanager
def registered(method: AttributionMethod) -> Iterator[AttributionMethod]:
    """``method`` added to the registry (last) inside the block, removed after: for tests and experiments.

    Everything that reads the registry (the dashboard's choices and links, the batch job's ``--maps`` and
    options, cost estimates) sees it while the block runs. A name already registered raises ValueError.
    """
    if method.name in ATTRIBUTION_METHODS:
        raise ValueError(f"a method named {method.name!r} is registered already")
    METHODS.append(method)
    ATTRIBUTION_METHODS[method.name] = method
    try:
        yield method
    finally:
        METHODS.remove(method)
        del ATTRIBUTION_METHODS[method.name]


def get_method(name: object) -> AttributionMethod:
    """The method called ``name``; InvalidInputError listing the known ones for any other value."""
    found = ATTRIBUTION_METHODS.get(name) if isinstance(name, str) else None
    if found is None:
        raise InvalidInputError(f"Unknown method {name!r}. Known methods: {', '.join(ATTRIBUTION_METHODS)}.")
    return found


def shown_by_default() -> tuple[str, ...]:
    """The methods fast enough to show by default (``default_view``: one pass per image), in registry order:
    the Methods page's first grid."""
    return tuple(m.name for m in METHODS if m.default_view)


def by_family() -> dict[str, tuple[str, ...]]:
    """The registered methods grouped by :attr:`AttributionMethod.family`, families in the order of
    :data:`~saliency_core.methods.declaration.FAMILIES` (those with no method left out), methods in registry
    order: how the dashboard lists them."""
    return {f: names for f in FAMILIES if (names := tuple(m.name for m in METHODS if m.family == f))}


def explains(method: str, objective: str) -> str:
    """What a map of ``method`` for ``objective`` attributes: "s_y" (the score), "L" or "−L" (the loss, negated
    where the method's sign matters: :attr:`AttributionMethod.loss_objective`)."""
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "score":
        return "s_y"
    return "−L" if ATTRIBUTION_METHODS[method].loss_objective == "-L" else "L"


def map_title(method: str, objective: str) -> str:
    """A map's title, the one every table, figure and page uses: "Gradient · score", "SmoothGrad · loss",
    "Gradient × input · loss −L" (−L where the method explains the negated loss, see :func:`explains`)."""
    sign = " −L" if explains(method, objective) == "−L" else ""
    return f"{ATTRIBUTION_METHODS[method].title} · {objective}{sign}"


@dataclass
class AttributionResult:
    """Everything one :func:`attribute` call produced; tensors detached, on the model's device and dtype.

    Attributes
    ----------
    method : the method's name (a key of :data:`ATTRIBUTION_METHODS`)
    maps : objective -> (N, H, W) >= 0: the attributions reduced over
        channels with ``reduction`` (a CAM method: its one channel)
    attributions : objective -> (N, 3, H, W) signed (a CAM method: (N, 1, H, W)
        >= 0, upsampled to the input). For the loss, the sign follows
        ``ATTRIBUTION_METHODS[method].loss_objective`` (L or −L).
    params : every method parameter actually used, defaults included (a
        tensor baseline is recorded as "tensor"; a "blur" baseline adds its sigma; a CAM method's
        layer None becomes the layer used, Score-CAM's channels the number used, at most the layer's)
    logits : (N, C) of the images as given; targets : (N,) the class each
        attribution explains (top-1 resolved)
    reduction : the channel reduction ("none" for a CAM method); precision : "exact" or "fast"
    convergence : Integrated Gradients, Expected Gradients and DeepLIFT only: objective -> (N,), the relative
        completeness gap (Σ attributions − (f(x) − f(x′))) / |f(x) − f(x′)|
        (the denominator floored: :func:`~saliency_core.methods.integrated_gradients.gap_scale`; Expected
        Gradients: the change averaged over its draws)
    steps_used : Integrated Gradients only: (N,) int64, the points on the path
        each image took (the fixed rules' steps; what the adaptive rule needed)
    converged : Integrated Gradients' adaptive rule only: (N,) bool, whether each
        image met the tolerance before the cap on steps
    """

    method: str
    maps: dict[str, torch.Tensor]
    attributions: dict[str, torch.Tensor]
    params: dict[str, object]
    logits: torch.Tensor
    targets: torch.Tensor
    reduction: str
    precision: str
    convergence: dict[str, torch.Tensor] | None = None
    steps_used: torch.Tensor | None = None
    converged: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        """(N, C) softmax of the logits."""
        return self.logits.softmax(dim=1)


def attribute(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], method: str = "gradient",
              objectives: Sequence[str] = OBJECTIVES, *, reduction: str = "max", precision: str = "exact",
              max_batch: int | None = None, progress: Progress | None = None, **params) -> AttributionResult:
    """Attribute each image's score and/or loss to its pixels with one of :data:`ATTRIBUTION_METHODS`.

    Parameters
    ----------
    model : a LoadedModel or a bare classifier module returning (N, C)
        logits, in eval mode (checked); never modified (no hooks, no
        ``.grad``, no mode change), safe to share between threads.
    X : (N, 3, H, W) float tensor, normalised for the model; any device and
        float dtype (copied to the model's); never modified.
    y : (N,) integer targets; ``TOP1_TARGET`` (-1) means the model's top-1
        for the image as given (not for SmoothGrad's noisy copies).
    method : a name from :data:`ATTRIBUTION_METHODS`; "gradient" gives
        exactly :func:`saliency_core.core.gradients.compute_saliency`'s maps.
    objectives : any of "score" (s_y) and "loss" (per-image cross-entropy;
        used as −L where the method's sign matters, see the module docstring).
        Both come from the same forward passes.
    reduction : channel reduction of the maps ("max", "mean_abs", "l2").
    precision : "exact" or "fast", as in ``compute_saliency``.
    max_batch : inputs per forward pass at most: images, or for SmoothGrad
        and Integrated Gradients noisy copies / path points, for Score-CAM
        masked copies, for the perturbation methods perturbed copies (at most 8 on
        a CPU). Never more than the memory budget allows for inputs of X's size
        (:func:`saliency_core.core.passes.rows_per_pass`; None: that many). Halved
        on CUDA out-of-memory.
    progress : called as ``progress(done, total)`` after each forward pass
        (counting images, or rows for the methods of many passes: SmoothGrad,
        Integrated Gradients, Score-CAM, the perturbation methods).
    **params : the method's parameters (``ATTRIBUTION_METHODS[method].params``).

    Returns
    -------
    AttributionResult

    Raises
    ------
    InvalidInputError : arguments that don't fit (named in the message).
    ModelOutputError : the model raised on the images, or returned logits that
        are not (N, C) finite floats with C its number of classes.
    """
    spec = get_method(method)
    checked = validate_request(X, y, objectives=(objectives,) if isinstance(objectives, str) else tuple(objectives),
                               reduction=reduction, precision=precision, max_batch=max_batch)
    values = spec.resolve(params)
    module = module_for(model, precision)
    require_eval(module)
    device = device_of(module)
    req = Request(model=model, module=module, X=X.detach(), y=checked.y.to(device), objectives=checked.objectives,
                  reduction=reduction, precision=precision, max_batch=max_batch, progress=progress,
                  device=device, dtype=input_dtype_of(module), check=output_check(model), loss_sign=spec.loss_sign)
    out = spec.run(req, **values)
    recorded = {k: ("tensor" if isinstance(v, torch.Tensor) else v) for k, v in values.items()}
    recorded.update(out.used)
    if out.maps is not None:
        maps = out.maps
    else:
        maps = {obj: reduce_channels(a, reduction) for obj, a in out.attributions.items()}
    return AttributionResult(
        method=method, maps=maps, attributions=out.attributions, params=recorded, logits=out.logits,
        targets=out.targets, reduction="none" if spec.output == "layer" else reduction, precision=precision,
        convergence=out.convergence, steps_used=out.steps_used, converged=out.converged,
    )
