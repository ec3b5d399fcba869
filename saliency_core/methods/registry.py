"""One entry point for every attribution method, and the registry the dashboard and batch job read.

::

    r = attribute(model, X, y, method="integrated_gradients", objectives=("score", "loss"))
    r.maps["score"]          # (N, H, W) >= 0, channel-reduced
    r.attributions["loss"]   # (N, 3, H, W) signed; Grad-CAM: (N, 1, H, W)
    r.params                 # {"steps": 32, "baseline": "black", "rule": "trapezoid"}
    r.convergence["score"]   # (N,) Integrated Gradients' relative completeness gap

Every method can be asked of either objective: "score" (the target's
logit s_y) or "loss" (the per-image cross-entropy L, independent of the rest
of the batch). Where a method's output depends on the sign of the objective
(Gradient×Input, Integrated Gradients, Guided Backprop, Grad-CAM), the loss
objective is used as −L = log p_y, so that positive always means "evidence
for the target" (:attr:`AttributionMethod.loss_objective` says which).
The methods live in :mod:`saliency_core.methods`, one module each.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from saliency_core.core import deprecation
from saliency_core.core.arguments import OBJECTIVES, validate_request
from saliency_core.core.baselines import BASELINE_LABELS, BASELINES
from saliency_core.core.gradients import reduce_channels
from saliency_core.core.model_access import ModelLike, device_of, input_dtype_of, module_for, require_eval
from saliency_core.core.model_output import output_check
from saliency_core.errors import InvalidInputError
from saliency_core.methods import (
    grad_cam,
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from saliency_core.methods._common import Passes, Progress, Request, one_pass


@dataclass(frozen=True)
class Param:
    """One parameter of a method: what a control or a command-line option needs to offer it.

    kind : int, float or str; ``choices`` for a str; ``minimum`` for numbers;
    ``tensor_ok``: a tensor shaped like X is also accepted (baselines);
    ``none_ok``: None is accepted (meaning "the model's default");
    ``renamed``: (old, new) values: the old one still works, for one release, as the new one.
    """

    name: str
    default: object
    kind: type
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    tensor_ok: bool = False
    none_ok: bool = False
    renamed: tuple[tuple[str, str], ...] = ()

    def new_name(self, value: object) -> str | None:
        """The value an old one (``renamed``) now has; None for any other value."""
        return dict(self.renamed).get(value) if isinstance(value, str) else None

    def check(self, value: object) -> object:
        """``value`` if it fits, else InvalidInputError naming the parameter and what it takes. An old value
        (``renamed``) gives its new one, with a DeprecationWarning."""
        if (new := self.new_name(value)) is not None:
            what = f", the {BASELINE_LABELS[new]}" if new in BASELINE_LABELS else ""
            deprecation.warn(f'{self.name}="{value}" is deprecated: write {self.name}="{new}"{what}, which it meant '
                             "here")
            value = new
        if value is None and self.none_ok:
            return None
        if isinstance(value, torch.Tensor) and self.tensor_ok:
            return value
        if self.kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
        elif self.kind is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str) and (not self.choices or value in self.choices)
        if ok and self.minimum is not None and value < self.minimum:
            ok = False
        if not ok:
            raise InvalidInputError(f"{self.name} must be {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        if self.choices:
            what = "one of " + ", ".join(repr(c) for c in self.choices)
            return what + (" or a tensor shaped like X" if self.tensor_ok else "")
        what = {int: "an integer", float: "a finite number", str: "a string"}[self.kind]
        if self.minimum is not None:
            what += f" >= {self.minimum:g}"
        return what + (" or None" if self.none_ok else "")


@dataclass(frozen=True)
class AttributionMethod:
    """An entry of :data:`ATTRIBUTION_METHODS`.

    loss_objective : "L" or "-L", what the "loss" objective means for this method
    output : "input" ((N, 3, H, W) attributions) or "layer" ((N, 1, H, W), upsampled)
    passes : the method module's ``passes(**params)``: what one image costs (see :meth:`cost`)
    empty_reason : why this method's map can be zero everywhere, for the line under such a map ("" if unknown)
    """

    name: str
    title: str
    citation: str
    summary: str
    params: tuple[Param, ...]
    loss_objective: str
    output: str
    run: Callable[..., object]
    passes: Callable[..., Passes] = one_pass
    empty_reason: str = ""

    @property
    def loss_sign(self) -> int:
        """-1 where the loss objective is −L, else +1."""
        return -1 if self.loss_objective == "-L" else 1

    def defaults(self) -> dict[str, object]:
        return {p.name: p.default for p in self.params}

    def cost(self, given: Mapping[str, object] | None = None) -> Passes:
        """Rows through the model per image with the parameters ``given`` (defaults for the rest).

        Known before anything runs, from the parameters alone: what progress
        bars and cost estimates count. A parameter the method would refuse
        makes it fail at once, so its cost is one pass.
        """
        given = given or {}
        values = {}
        for p in self.params:
            try:
                values[p.name] = p.check(given.get(p.name, p.default))
            except InvalidInputError:
                return Passes()
        return self.passes(**values)

    def resolve(self, given: dict[str, object]) -> dict[str, object]:
        """Every parameter's value, defaults filled in, each checked."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            takes = ", ".join(known) if known else "no parameters"
            raise InvalidInputError(f"{self.name} takes {takes}; got unknown {', '.join(unknown)}")
        return {name: p.check(given.get(name, p.default)) for name, p in known.items()}


_BASELINE_HELP = ('x′: "dataset_mean" (0 in the model\'s input space: the mean colour of its normalisation), "black" '
                  '(a black image through the model\'s normalisation), "blur" (a Gaussian-blurred copy), "mean" (the '
                  "image's mean colour), or a tensor shaped like X")
#: Attribution's old name "zeros" was 0 after normalisation (deletion/insertion's, black: core.baselines).
_OLD_BASELINE = (("zeros", "dataset_mean"),)

ATTRIBUTION_METHODS: dict[str, AttributionMethod] = {
    m.name: m
    for m in (
        AttributionMethod(
            "gradient", "Gradient", "Simonyan, Vedaldi & Zisserman 2014",
            "the input gradient of the objective", (), "L", "input", gradient.run),
        AttributionMethod(
            "gradient_x_input", "Gradient × input", "Shrikumar et al. 2016",
            "gradient ⊙ (x − x′)",
            (Param("baseline", "dataset_mean", str, _BASELINE_HELP, BASELINES, tensor_ok=True, renamed=_OLD_BASELINE),),
            "-L", "input", gradient_x_input.run),
        AttributionMethod(
            "smoothgrad", "SmoothGrad", "Smilkov et al. 2017",
            "the mean signed gradient at x + N(0, σ²), σ = noise × (max − min of x); channels reduced after",
            (Param("samples", 25, int, "noisy copies averaged", minimum=1),
             Param("noise", 0.15, float, "σ as a fraction of the image's value range", minimum=0.0),
             Param("seed", 0, int, "seed of the noise (a private generator: same seed, same map)", minimum=0)),
            "L", "input", smoothgrad.run, smoothgrad.passes),
        AttributionMethod(
            "integrated_gradients", "Integrated Gradients", "Sundararajan, Taly & Yan 2017",
            "(x − x′) ⊙ the gradient averaged along the straight path from x′ to x",
            (Param("steps", 32, int, "points on the path", minimum=2),
             Param("baseline", "black", str, _BASELINE_HELP, BASELINES, tensor_ok=True, renamed=_OLD_BASELINE),
             Param("rule", "trapezoid", str, "quadrature rule along the path", integrated_gradients.RULES)),
            "-L", "input", integrated_gradients.run, integrated_gradients.passes),
        AttributionMethod(
            "guided_backprop", "Guided backprop", "Springenberg et al. 2015",
            "the gradient with every ReLU passing back only positive signals",
            (), "-L", "input", guided_backprop.run),
        AttributionMethod(
            "grad_cam", "Grad-CAM", "Selvaraju et al. 2017",
            "ReLU(Σ_k α_k A^k), α_k the mean gradient of feature map A^k, upsampled to the input",
            (Param("layer", None, str, "dotted module name of the convolutional layer; None: the model's "
                   "last convolutional block (from the model registry)", none_ok=True),),
            "-L", "layer", grad_cam.run,
            empty_reason="Grad-CAM's ReLU left nothing: no feature map of its layer counts as evidence for this "
                         "class"),
    )
}


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
        channels with ``reduction`` (Grad-CAM: its one channel)
    attributions : objective -> (N, 3, H, W) signed (Grad-CAM: (N, 1, H, W)
        >= 0, upsampled to the input). For the loss, the sign follows
        ``ATTRIBUTION_METHODS[method].loss_objective`` (L or −L).
    params : every method parameter actually used, defaults included (a
        tensor baseline is recorded as "tensor"; a "blur" baseline adds its sigma)
    logits : (N, C) of the images as given; targets : (N,) the class each
        attribution explains (top-1 resolved)
    reduction : the channel reduction ("none" for Grad-CAM); precision : "exact" or "fast"
    convergence : Integrated Gradients only: objective -> (N,), the relative
        completeness gap (Σ attributions − (f(x) − f(x′))) / |f(x) − f(x′)|
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
        and Integrated Gradients noisy copies / path points. Never more than
        the memory budget allows for inputs of X's size
        (:func:`saliency_core.core.passes.rows_per_pass`; None: that many). Halved
        on CUDA out-of-memory.
    progress : called as ``progress(done, total)`` after each forward pass
        (counting images, or rows for SmoothGrad and Integrated Gradients).
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
    spec = ATTRIBUTION_METHODS.get(method) if isinstance(method, str) else None
    if spec is None:
        raise InvalidInputError(f"Unknown method {method!r}. Known methods: {', '.join(ATTRIBUTION_METHODS)}.")
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
        convergence=out.convergence,
    )
