"""A randomised copy of a model: which layers are re-initialised, how, and in which order.

The copy behind the model-randomisation sanity check
(:mod:`saliency_core.evaluation.sanity`, Adebayo et al., NeurIPS 2018): the
layers that own parameters are grouped into stages from the output down and
re-initialised one stage after another.

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
from collections.abc import Sequence

import numpy as np
import torch

from saliency_core.core.model_access import LoadedModelLike, ModelLike, freeze, require_eval, unwrap_module
from saliency_core.core.model_output import output_check
from saliency_core.errors import InvalidInputError

DEFAULT_MAX_STAGES = 8
RANDOMISED = ", randomised for the sanity check"  # how errors name a randomised copy, after the model's title


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


def model_view(work: torch.nn.Module, model: ModelLike, note: str = "") -> ModelLike:
    """``work`` with ``model``'s normalisation, title (plus ``note``) and classes when it has them (a bare
    module stays bare)."""
    if not isinstance(model, LoadedModelLike):
        return work
    return _ModelView(work, model.preprocessing, output_check(model).title + note, getattr(model, "categories", None))


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` in eval mode with frozen parameters (:func:`~saliency_core.core.model_access.freeze`,
    which also takes TorchScript and torch.export models); the caller's module is untouched."""
    try:
        work = copy.deepcopy(module)
    except Exception as exc:  # a module holding state that cannot be copied (open handles, fake tensors)
        raise InvalidInputError(f"this model cannot be copied for the randomisation check, so the check cannot run "
                                f"on it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    freeze(work)
    return work


def reinitialize_stages(work: torch.nn.Module, groups: Sequence[Sequence[str]], seed: int):
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
    seed : the seed of the re-initialisation, as in
        :func:`~saliency_core.evaluation.sanity.cascading_randomization`.

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
    work = frozen_copy(module)
    for _ in reinitialize_stages(work, group_layers([name for name, _ in layers], None), seed):
        pass
    return model_view(work, model, RANDOMISED)
