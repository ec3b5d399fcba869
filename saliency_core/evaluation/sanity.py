"""Model-randomisation sanity check: does the map change when the weights do?

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for
Saliency Maps", NeurIPS 2018, section 3 ("cascading randomization"): the
layers of a trained network are re-initialised one after another, from the
output down to the input, and the saliency map is recomputed after each step.
A map that explains the *model* must drift away from the original one (rank
correlation and SSIM fall); a map that stays put is closer to an edge
detector of the *image*.

The model given is shared by every user of the dashboard, so all of this
happens on a ``copy.deepcopy`` of it: the given module's parameters, buffers
and mode are never touched. Re-initialisation draws from private, seeded
``torch.Generator`` objects, never from the global generators: the random
weights depend only on ``seed`` (and the layers' shapes), even when several
sessions randomise at the same time, and the global RNG state is left alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from saliency_core.core.arguments import validate_request
from saliency_core.core.deprecation import renamed_keyword
from saliency_core.core.gradients import OBJECTIVES, compute_saliency
from saliency_core.core.model_access import LoadedModelLike, ModelLike, freeze, require_eval, unwrap_module
from saliency_core.core.model_output import output_check
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.stats import agreement
from saliency_core.methods.registry import ATTRIBUTION_METHODS, attribute

SIMILARITY_COLUMNS = ("stage_index", "stage", "method", "objective", "image", "spearman", "ssim")
DEFAULT_MAX_STAGES = 8
RANDOMISED = ", randomised for the sanity check"  # how errors name a randomised copy, after the model's title

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
        map's agreement with the same image's stage-0 map (:func:`saliency_core.evaluation.stats.agreement`);
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


def randomizable_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The layers that own parameters directly (Conv, Linear, BatchNorm, LayerNorm, ...).

    Returns ``(name, module)`` pairs in definition order (``named_modules()``),
    which for sequential networks is input-to-output order.
    """
    return [(name, m) for name, m in module.named_modules() if next(m.parameters(recurse=False), None) is not None]


def group_layers(names: Sequence[str], max_stages: int | None = DEFAULT_MAX_STAGES) -> list[list[str]]:
    """Split layers into cascading stages, from the output down.

    Parameters
    ----------
    names : layer names in input-to-output order.
    max_stages : at most this many stages; None for one stage per layer.
        With more layers than stages, the layers (top first) are cut into
        ``max_stages`` contiguous groups of near-equal size, the larger
        groups first.

    Returns
    -------
    Stages, top first; each stage lists its layers top first.
    """
    top_down = list(reversed(names))
    if max_stages is None or len(top_down) <= max_stages:
        return [[name] for name in top_down]
    return [list(part) for part in np.array_split(np.array(top_down, dtype=object), max_stages)]


def _stage_name(group: Sequence[str]) -> str:
    return group[0] if len(group) == 1 else f"{group[0]} → {group[-1]}"


# Layers whose reset_parameters draws nothing: ones/zeros for the affine
# parameters, and the running statistics reset (BatchNorm, InstanceNorm).
_NORM_LAYERS: tuple[type[torch.nn.Module], ...] = (
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()),
)


def _default_init(params: dict[str, torch.Tensor], g: torch.Generator) -> None:
    """PyTorch's own Conv/Linear init (``_ConvNd.reset_parameters``, ``Linear.reset_parameters``), drawn from ``g``.

    Fills ``params["weight"]`` and ``params["bias"]`` (when present) in place:
    weight ~ kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)); bias ~
    U(+-1/sqrt(fan_in)). Drawn in that order, so with ``g`` seeded like the
    global generator the values equal ``reset_parameters()``'s.
    """
    weight = params["weight"]
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=g)
    if params.get("bias") is not None:
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        torch.nn.init.uniform_(params["bias"], -bound, bound, generator=g)


def _fallback_init(p: torch.Tensor, g: torch.Generator) -> None:
    # Normal init for parameters without a known default: weights N(0, 1/fan_in)
    # keep activations at a sane scale; vectors (biases, scales) N(0, 0.01).
    if p.dim() >= 2:
        torch.nn.init.normal_(p, 0.0, 1.0 / math.sqrt(max(1, p[0].numel())), generator=g)
    else:
        torch.nn.init.normal_(p, 0.0, 0.01, generator=g)


def _fresh_values(layer: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """New values for ``layer``'s own parameters (and buffers), a pure function of its shapes, dtypes and ``seed``.

    Returns
    -------
    name -> CPU, contiguous tensor of the parameter's (or buffer's) shape
    and dtype. Conv (any ``_ConvNd``) and Linear layers get PyTorch's default
    init (:func:`_default_init`); norm layers (BatchNorm, InstanceNorm,
    LayerNorm, GroupNorm, RMSNorm) their ``reset_parameters()`` values, which
    draw nothing (ones, zeros, running statistics reset); every other
    parameter a normal draw (:func:`_fallback_init`). All draws come from a
    private CPU generator seeded with ``seed``: neither the global generators
    nor another thread's draws can change them.
    """
    if isinstance(layer, _NORM_LAYERS):
        # A CPU copy, so the shared layer's device and the caller's state do not matter.
        scratch = copy.deepcopy(layer).to("cpu")
        scratch.reset_parameters()
        own = [*scratch.named_parameters(recurse=False), *scratch.named_buffers(recurse=False)]
        return {name: t.detach().contiguous() for name, t in own}
    g = torch.Generator().manual_seed(int(seed))
    # Fresh contiguous CPU tensors: the draw does not depend on device or layout.
    params = {name: torch.empty(p.shape, dtype=p.dtype) for name, p in layer.named_parameters(recurse=False)}
    if isinstance(layer, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) and "weight" in params:
        _default_init(params, g)
        rest = [name for name in params if name not in ("weight", "bias")]
    else:
        rest = list(params)
    for name in rest:
        _fallback_init(params[name], g)
    return params


@torch.no_grad()
def _reinitialize(layer: torch.nn.Module, seed: int) -> None:
    """Re-initialise ``layer``'s own parameters (and norm layers' running stats) in place, reproducibly.

    The values come from :func:`_fresh_values`: a pure function of the
    layer's shapes and ``seed``, drawn on the CPU from a private
    ``torch.Generator``, so they are the same on any device and layout, and
    the same when other threads draw at the same time. The global random
    number generators are neither read nor advanced. The layer keeps its
    device, dtype and memory layout (values are copied into its tensors).
    """
    for name, value in _fresh_values(layer, seed).items():
        target = getattr(layer, name)
        if isinstance(target, torch.Tensor):
            target.copy_(value)


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan, math.nan
    scores = agreement(a, b, fractions=())
    return scores["spearman"], scores["ssim"]


class _ModelView:
    """A module with a model's normalisation, title and classes: a ``LoadedModelLike`` that always runs that module.

    Used for the randomised copy (baselines such as Integrated Gradients'
    "black" need the mean and std; the output check names the model and
    knows its class count) and for stage 0 of the plain gradient (the model's
    own module, never a precision variant). Every precision runs ``module``.
    """

    def __init__(self, module: torch.nn.Module, preprocessing: object, title: str, categories: list[str] | None
                 ) -> None:
        self.model = module
        self.preprocessing = preprocessing
        self.title = title
        self.categories = categories

    def module_for(self, precision: str) -> torch.nn.Module:
        return self.model


def _as_model(work: torch.nn.Module, model: ModelLike, note: str = "") -> ModelLike:
    """``work`` with ``model``'s normalisation, title (plus ``note``) and classes when it has them (a bare
    module stays bare)."""
    if not isinstance(model, LoadedModelLike):
        return work
    return _ModelView(work, model.preprocessing, output_check(model).title + note, getattr(model, "categories", None))


def _randomized_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` in eval mode with frozen parameters (:func:`~saliency_core.core.model_access.freeze`,
    which also takes TorchScript and torch.export models); the caller's module is untouched."""
    try:
        work = copy.deepcopy(module)
    except Exception as exc:  # a module holding state that cannot be copied (open handles, fake tensors)
        raise InvalidInputError(f"this model cannot be copied for the randomisation check, so the check cannot run "
                                f"on it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    freeze(work)
    return work


def _cascade(work: torch.nn.Module, groups: Sequence[Sequence[str]], seed: int):
    """Re-initialise ``work``'s layers group by group (top first), yielding after each group.

    One private stream of per-layer seeds: layers of equal shape still get
    different weights, and the global generators are never consumed. The
    stream is drawn layer by layer in top-down order, so the weights after
    the last group do not depend on how the layers were grouped.
    """
    by_name = dict(work.named_modules())
    seeds = torch.Generator().manual_seed(int(seed))
    for group in groups:
        for name in group:
            _reinitialize(by_name[name], int(torch.randint(0, 2**62, (1,), generator=seeds)))
        yield


def fully_randomized_model(model: ModelLike, seed: int = 0) -> ModelLike:
    """A copy of ``model`` with every parameter-owning layer re-initialised: the cascade's last stage.

    Parameters
    ----------
    model : a LoadedModel or a bare module in eval mode; never modified.
    seed : the seed of the re-initialisation, as in :func:`cascading_randomization`.

    Returns
    -------
    A deep copy (eval mode, parameters frozen) whose weights equal those of
    the last stage of ``cascading_randomization(model, ..., seed=seed)`` for
    any ``max_stages``; a LoadedModel-like wrapper carrying the model's
    normalisation when ``model`` has one, else a bare module. Pass it to
    :func:`saliency_core.attribute` like the model itself.
    """
    module = unwrap_module(model)
    require_eval(module)
    layers = randomizable_layers(module)
    if not layers:
        raise InvalidInputError("the model has no layers with parameters to randomise")
    work = _randomized_copy(module)
    for _ in _cascade(work, group_layers([name for name, _ in layers], None), seed):
        pass
    return _as_model(work, model, RANDOMISED)


def _stage_maps(model: ModelLike, X: torch.Tensor, y, objectives: tuple[str, ...], reduction: str, precision: str,
                max_batch: int | None, attribution: str, params: dict[str, object], progress: Progress | None = None):
    """One stage's maps: (objective -> (N, H, W) tensor, (N,) targets, parameters used); ``progress`` as
    :func:`saliency_core.attribute` reports it (the plain gradient, one pass, reports nothing)."""
    if attribution == "gradient" and not params:
        # The plain gradient as before: exactly compute_saliency, on the module itself (with the model's
        # title and classes for the output check).
        r = compute_saliency(_as_model(unwrap_module(model), model), X, y, objectives, reduction=reduction,
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
    per_stage = ATTRIBUTION_METHODS[attribution].cost(given).rows if attribution in ATTRIBUTION_METHODS else 1
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

    work = _randomized_copy(module)
    stage_model = _as_model(work, model, RANDOMISED)
    for done, _ in enumerate(_cascade(work, groups, seed), start=2):
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
