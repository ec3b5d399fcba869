"""What an attribution method says about itself: :class:`AttributionMethod`, its :class:`Param`\\ s and its cost.

Each ``methods/<name>.py`` ends with one ``METHOD = AttributionMethod(...)``
next to its code: its parameters (kind, default, minimum, the dashboard's
and the batch job's maximum, choices, or choices that depend on the model),
its cost in passes for given parameters, whether it is fast enough to show
by default, what it needs of a model, how it signs the loss objective and
the shape of what it returns. :mod:`saliency_core.methods.registry` only
collects them; the dashboard's controls, links and progress bars, the batch
job's options and the cost estimates read them from there.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from saliency_core.core import deprecation
from saliency_core.core.baselines import BASELINE_LABELS, BASELINES
from saliency_core.core.model_access import ModelLike
from saliency_core.errors import InvalidInputError

#: What a method may need of a model, in words (:attr:`AttributionMethod.needs`).
NEEDS = {
    "conv_layer": "a convolutional layer whose (N, K, h, w) output reaches the logits (not inside TorchScript)",
    "relu_modules": "nn.ReLU / nn.ReLU6 modules (compiled TorchScript and export models have none) and no GELU "
                    "(transformers, ConvNeXt: the guided rule is defined for the ReLU only)",
    "baseline": "a baseline image x′ or reference images (black, noise and mixed references need the model's "
                "normalisation: a LoadedModel)",
    "deeplift_layers": "only layers DeepLIFT has rules for: convolutions, linear, eval batch norm, average pooling, "
                       "elementwise activations (no max-pooling, attention, layer norm; not TorchScript or export)",
    "attention_blocks": "ViT/DeiT-style global self-attention with a class token (torchvision VisionTransformer, "
                        "timm ViT/DeiT; not Swin's windowed attention, not TorchScript)",
}
LOSS_OBJECTIVES = ("L", "-L")
OUTPUTS = ("input", "layer")
#: The families the dashboard groups methods by (:attr:`AttributionMethod.family`), in the order it lists them,
#: each with a line that says what its members have in common.
FAMILIES = {
    "gradient": "the input gradient of the objective, as it is or averaged over noisy copies",
    "path": "gradients integrated along a path from a baseline image x′ to the image",
    "reference": "each unit's difference from its value on a reference image, propagated back to the pixels",
    "region": "whole regions of the image ranked by the attribution inside them",
    "perturbation": "forward passes only: how the objective changes when parts of the image are hidden",
    "CAM": "a convolutional layer's activations weighted by class evidence, upsampled to the image",
    "attention": "the transformer's own attention between patches, combined over its layers",
}


class AttributionWarning(RuntimeWarning):
    """A method's warning about its own result (Integrated Gradients' completeness gap): worth telling a person
    once, not a batch job on every batch (which records the number itself)."""


@dataclass(frozen=True)
class Passes:
    """What one image costs a method, in rows through the model: the unit of every cost estimate.

    gradient : rows with a forward pass and the input gradients of both
        objectives (one VJP each): the plain gradient's one, SmoothGrad's
        noisy copies, Integrated Gradients' path points
    forward : rows with a forward pass only (the clean image, a baseline)

    A gradient row costs about four forward rows on a CPU (a backward pass
    about 1.6 forwards, two of them: benchmarks/RESULTS.md), so the two are
    counted apart and priced apart (:mod:`saliency_core.serving.compute_cost`).
    """

    gradient: int = 1
    forward: int = 0

    @property
    def rows(self) -> int:
        return self.gradient + self.forward


#: The image size (H, W) a cost assumes when the caller does not know it: every registered model's crop. Only a
#: method whose passes depend on the size (Occlusion's window positions) reads it.
DEFAULT_SIZE = (224, 224)


def one_pass(**_params: object) -> Passes:
    """The cost of a method that takes one forward and one backward pass per image, whatever its parameters."""
    return Passes()


@dataclass(frozen=True)
class Param:
    """One parameter of a method: what a control or a command-line option needs to offer it.

    kind : int, float or str; ``choices`` for a str; ``minimum`` for numbers (the engine's rule);
    ``maximum``: the most the dashboard's control and the batch job's option take (the engine has no upper
    limit: a notebook may ask for more and wait); ``costly``: each unit is a pass through the model per image
    (samples, steps): the control says its cap, and a trial run uses the minimum;
    ``tensor_ok``: a tensor shaped like X is also accepted (baselines);
    ``none_ok``: None is accepted (meaning "the model's default", see ``default_for``, or what ``none_text`` says);
    ``none_text``: what None stands for, in words, where it is not the model's default (Integrated Gradients'
    steps: "the rule's own: ..."; the method's ``settle`` gives the number);
    ``renamed``: (old, new) values: the old one still works, for one release, as the new one.

    A parameter whose choices depend on the model (Grad-CAM's layer) says so with
    ``choices_for(model) -> names`` and ``default_for(model) -> the name None stands for`` (None if the model
    has none), and ``choices_text`` says what a value is ("a convolutional layer of this model"): the
    dashboard offers, reads from links and describes such a parameter from these alone.
    """

    name: str
    default: object
    kind: type
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    costly: bool = False
    tensor_ok: bool = False
    none_ok: bool = False
    renamed: tuple[tuple[str, str], ...] = ()
    choices_for: Callable[[ModelLike], Sequence[str]] | None = None
    default_for: Callable[[ModelLike], str | None] | None = None
    choices_text: str = ""
    none_text: str = ""

    @property
    def default_text(self) -> str:
        """The default in words, for a control's placeholder, a notice or ``--help``: "the model's" for a
        model-dependent None, ``none_text`` for another None, else the value."""
        if self.default is None:
            return self.none_text or "the model's"
        return str(self.default)

    @property
    def model_dependent(self) -> bool:
        """Whether the values this parameter takes depend on the model (``choices_for``)."""
        return self.choices_for is not None

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


_BASELINE_HELP = ('x′: "dataset_mean" (0 in the model\'s input space: the mean colour of its normalisation), "black" '
                  '(a black image through the model\'s normalisation), "blur" (a Gaussian-blurred copy), "mean" (the '
                  "image's mean colour), or a tensor shaped like X")
#: Attribution's old name "zeros" was 0 after normalisation (deletion/insertion's, black: core.baselines).
_OLD_BASELINE = (("zeros", "dataset_mean"),)


def baseline_param(default: str) -> Param:
    """The ``baseline`` parameter of a method that starts from a reference image x′ (needs ``{"baseline"}``)."""
    return Param("baseline", default, str, _BASELINE_HELP, BASELINES, tensor_ok=True, renamed=_OLD_BASELINE)


@dataclass(frozen=True)
class AttributionMethod:
    """An attribution method as it describes itself (``METHOD`` in its module; collected in
    :data:`saliency_core.methods.registry.ATTRIBUTION_METHODS`).

    name : its key ("smoothgrad"): in links, ``--maps``, column names
    title, citation, summary : how people see it ("SmoothGrad", "Smilkov et al. 2017", the formula in words)
    params : its parameters, in the order controls and options list them
    loss_objective : "L" or "-L", what the "loss" objective means for this method: "-L" (= log p_y) where its
        output depends on the sign, so that positive is evidence for the target
    output : "input" ((N, 3, H, W) attributions, reduced over channels to a map) or "layer" ((N, 1, H, W),
        a layer's map upsampled to the input: already one channel)
    run : ``run(request, **params) -> MethodOutput`` (:mod:`saliency_core.methods._common`)
    passes : ``passes(**params) -> Passes``, what one image costs (see :meth:`cost`); a method whose cost
        depends on the image size names a ``size`` keyword, (H, W)
    default_view : fast enough to show by default (the Methods page's first grid: one pass per image)
    needs : what it needs of a model, keys of :data:`NEEDS`
    empty_reason : why this method's map can be zero everywhere, for the line under such a map ("" if unknown)
    family : a key of :data:`FAMILIES` ("gradient", "path", "reference", "region", "perturbation", "CAM",
        "attention"): how the dashboard groups it
    gap_note : for a method that reports a completeness gap (``MethodOutput.convergence``): what a large gap
        means and what reduces it, words that follow the gap ("more steps reduce it"); "" for the others
    settle : ``settle(values) -> values``, run on the checked values of every call (:meth:`resolve`,
        :meth:`cost`): fills a value that depends on another (Integrated Gradients' steps None -> the rule's
        own) and drops one that does not apply (its tolerance under a fixed rule), so that what is recorded
        and compared (a batch job's manifest) is what ran; None: the values as they are
    uses_target : False for a method whose map depends on neither the target nor the objective (attention
        rollout reads the attention alone): both objectives give the same map, and ``loss_objective`` is "L",
        there being no sign to choose
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
    default_view: bool = True
    needs: frozenset[str] = field(default_factory=frozenset)
    empty_reason: str = ""
    family: str = "gradient"
    gap_note: str = ""
    settle: Callable[[dict[str, object]], dict[str, object]] | None = None
    uses_target: bool = True

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {tuple(FAMILIES)}, got {self.family!r}")
        if self.loss_objective not in LOSS_OBJECTIVES:
            raise ValueError(f"{self.name}: loss_objective must be one of {LOSS_OBJECTIVES}, got "
                             f"{self.loss_objective!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"{self.name}: output must be one of {OUTPUTS}, got {self.output!r}")
        if unknown := set(self.needs) - set(NEEDS):
            raise ValueError(f"{self.name}: needs must be keys of NEEDS ({', '.join(NEEDS)}), got {sorted(unknown)}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: each parameter once, got {names}")
        if not self.uses_target and self.loss_objective != "L":
            raise ValueError(f"{self.name}: a method that uses no target has no sign to choose: loss_objective \"L\"")

    @property
    def loss_sign(self) -> int:
        """-1 where the loss objective is −L, else +1."""
        return -1 if self.loss_objective == "-L" else 1

    def defaults(self) -> dict[str, object]:
        return {p.name: p.default for p in self.params}

    def cost(self, given: Mapping[str, object] | None = None,
             size: int | tuple[int, int] | None = None) -> Passes:
        """Rows through the model per image with the parameters ``given`` (defaults for the rest).

        Known before anything runs, from the parameters and the image size
        alone: what progress bars and cost estimates count. A parameter the
        method would refuse makes it fail at once, so its cost is one pass.
        ``size``: the images' (H, W) or side, read only by a method whose
        passes depend on it (``passes`` names a ``size`` keyword); None:
        :data:`DEFAULT_SIZE`.
        """
        given = given or {}
        values: dict[str, object] = {}
        for p in self.params:
            try:
                values[p.name] = p.check(given.get(p.name, p.default))
            except InvalidInputError:
                return Passes()
        values = self._settled(values)
        if "size" in inspect.signature(self.passes).parameters:
            side = DEFAULT_SIZE if size is None else size
            values["size"] = (int(side), int(side)) if isinstance(side, numbers.Integral) else tuple(side)
        return self.passes(**values)

    def _settled(self, values: dict[str, object]) -> dict[str, object]:
        return values if self.settle is None else self.settle(dict(values))

    def resolve(self, given: dict[str, object]) -> dict[str, object]:
        """Every parameter's value, defaults filled in, each checked, then settled (``settle``)."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            takes = ", ".join(known) if known else "no parameters"
            raise InvalidInputError(f"{self.name} takes {takes}; got unknown {', '.join(unknown)}")
        return self._settled({name: p.check(given.get(name, p.default)) for name, p in known.items()})

    def trial_params(self, given: Mapping[str, object] | None = None) -> dict[str, object]:
        """``given`` (defaults filled in) with every costly parameter at its minimum: a run that checks whether
        the method works on a model as cheaply as it can."""
        values = self.resolve(dict(given or {}))
        values.update({p.name: p.kind(p.minimum) for p in self.params if p.costly and p.minimum is not None})
        return values
