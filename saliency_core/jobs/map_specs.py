"""Which maps a dataset job computes, what their columns are called, and what each map is, in words.

A map is one attribution method asked of one objective. The batch job's
``--maps`` names them in two ways:

* ``score`` and ``loss``: the plain input gradient of the class score or of
  the loss (Simonyan et al. 2014), the job's original two maps. Their columns
  keep their original names: ``score_gini``, ``loss_deletion_auc`` and, for
  the two together, ``agree_spearman``.
* ``method:objective``, e.g. ``smoothgrad:loss``, for any method of
  :data:`saliency_core.methods.registry.ATTRIBUTION_METHODS`; a method alone
  (``smoothgrad``) means both objectives. Columns are prefixed by the pair:
  ``smoothgrad_loss_gini``; the agreement of two maps is
  ``agree_<first>_vs_<second>_<metric>`` (``agree_gradient_score_vs_smoothgrad_loss_spearman``).

Everything here is a pure function of names, so the job, the results reader
and the Dataset page agree on them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from saliency_core.core.gradients import OBJECTIVES
from saliency_core.errors import InvalidInputError
from saliency_core.figures.provenance import map_definitions
from saliency_core.methods.registry import ATTRIBUTION_METHODS, map_title

# The job's original map names: the plain gradient of each objective.
LEGACY_NAMES = OBJECTIVES


@dataclass(frozen=True)
class MapSpec:
    """One map of the job: ``method`` (a key of ATTRIBUTION_METHODS) asked of ``objective`` ("score" or "loss").

    name : the prefix of its columns and its key in saved maps ("score", or "smoothgrad_loss")
    entry : how ``--maps`` spells it ("score", or "smoothgrad:loss")
    """

    method: str
    objective: str
    legacy: bool = False

    @property
    def name(self) -> str:
        return self.objective if self.legacy else f"{self.method}_{self.objective}"

    @property
    def entry(self) -> str:
        return self.objective if self.legacy else f"{self.method}:{self.objective}"


@functools.lru_cache(maxsize=4)
def _pair_names(methods: tuple[str, ...]) -> dict[str, MapSpec]:
    names = {o: MapSpec("gradient", o, legacy=True) for o in LEGACY_NAMES}
    names |= {f"{m}_{o}": MapSpec(m, o) for m in methods for o in OBJECTIVES}
    return names


@functools.lru_cache(maxsize=4)
def _by_length(methods: tuple[str, ...]) -> list[str]:
    # Longest first, so that "integrated_gradients_score_gini" is not read as a map "integrated..." too early.
    return sorted(_pair_names(methods), key=len, reverse=True)


class _MapNames(Mapping[str, MapSpec]):
    """Every map name -> its MapSpec, for the methods registered now (a method registered later is seen)."""

    def _names(self) -> dict[str, MapSpec]:
        return _pair_names(tuple(ATTRIBUTION_METHODS))

    def __getitem__(self, name: str) -> MapSpec:
        return self._names()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


MAP_NAMES: Mapping[str, MapSpec] = _MapNames()


def parse_maps(text: str | Iterable[str]) -> tuple[MapSpec, ...]:
    """The maps a ``--maps`` value asks for, in its order.

    Parameters
    ----------
    text : comma-separated entries (or a sequence of them), each ``score``,
        ``loss``, ``method:objective`` or a method name alone (both objectives).

    Raises
    ------
    InvalidInputError
        An empty list, an unknown method or objective, or the same map twice.
    """
    entries = [e.strip() for e in (text.split(",") if isinstance(text, str) else text)]
    entries = [e for e in entries if e]
    if not entries:
        raise InvalidInputError("--maps: expected at least one map, e.g. score,loss or "
                                "gradient:score,smoothgrad:loss")
    specs: list[MapSpec] = []
    for entry in entries:
        method, sep, objective = entry.partition(":")
        if not sep and method in OBJECTIVES:
            found = [MapSpec("gradient", method, legacy=True)]
        elif method not in ATTRIBUTION_METHODS:
            raise InvalidInputError(
                f"--maps: unknown method {method!r} in {entry!r}. Known: score, loss, or METHOD[:OBJECTIVE] "
                f"with METHOD one of {', '.join(ATTRIBUTION_METHODS)} and OBJECTIVE one of {', '.join(OBJECTIVES)}")
        elif not sep:
            found = [MapSpec(method, o) for o in OBJECTIVES]
        elif objective in OBJECTIVES:
            found = [MapSpec(method, objective)]
        else:
            raise InvalidInputError(f"--maps: unknown objective {objective!r} in {entry!r}; "
                                    f"expected one of {', '.join(OBJECTIVES)}")
        for spec in found:
            if any((s.method, s.objective) == (spec.method, spec.objective) for s in specs):
                raise InvalidInputError(f"--maps: the map {spec.entry} is asked for twice (score and loss are "
                                        "gradient:score and gradient:loss)")
            specs.append(spec)
    return tuple(specs)


def methods_of(specs: Sequence[MapSpec]) -> dict[str, tuple[str, ...]]:
    """method -> its objectives, in the order first asked: what one ``attribute`` call per method computes."""
    out: dict[str, tuple[str, ...]] = {}
    for s in specs:
        out[s.method] = (*out.get(s.method, ()), s.objective)
    return out


def agreement_prefix(first: MapSpec, second: MapSpec) -> str:
    """The prefix of two maps' agreement columns: "agree" for the original score and loss pair."""
    if first.legacy and second.legacy:
        return "agree"
    return f"agree_{first.name}_vs_{second.name}"


def agreement_pairs(specs: Sequence[MapSpec]) -> list[tuple[MapSpec, MapSpec, str]]:
    """Every pair of maps (in request order) with its column prefix."""
    return [(a, b, agreement_prefix(a, b)) for i, a in enumerate(specs) for b in specs[i + 1:]]


def split_map_column(column: str) -> tuple[str | None, str]:
    """``"smoothgrad_loss_gini"`` -> ``("smoothgrad_loss", "gini")``; ``"score_p90"`` -> ``("score", "p90")``;
    a column of no map (``prob_target``, ``agree_spearman``, ``random_deletion_auc``) -> ``(None, column)``."""
    for name in _by_length(tuple(ATTRIBUTION_METHODS)):
        if column.startswith(name + "_") and len(column) > len(name) + 1:
            return name, column[len(name) + 1:]
    return None, column


def agreement_column(first: str, second: str, metric: str, columns: Iterable[str]) -> str | None:
    """The column of ``columns`` holding ``metric`` between maps ``first`` and ``second`` (either order), or None."""
    have = set(columns)
    for a, b in ((first, second), (second, first)):
        for spec_a, spec_b in ((MAP_NAMES.get(a), MAP_NAMES.get(b)),):
            if spec_a is not None and spec_b is not None:
                column = f"{agreement_prefix(spec_a, spec_b)}_{metric}"
                if column in have:
                    return column
    return None


def map_names_in(columns: Iterable[str]) -> list[str]:
    """The maps a results table holds (those with a ``<name>_max`` column), in column order."""
    names = []
    for c in columns:
        name, stat = split_map_column(c)
        if name is not None and stat == "max" and name not in names:
            names.append(name)
    return names


def title(name: str) -> str:
    """A map's name for people: "score", "loss" (the job's original two), else its
    :func:`~saliency_core.methods.registry.map_title` ("SmoothGrad · loss", "Grad-CAM · loss −L")."""
    spec = MAP_NAMES.get(name)
    if spec is None:
        return name
    return spec.objective if spec.legacy else map_title(spec.method, spec.objective)


_REDUCTION_TEXT = {"max": "max |a| over RGB", "mean_abs": "mean |a| over RGB", "l2": "L2 norm of a over RGB"}


def definitions(specs: Sequence[MapSpec], reduction: str, params: Mapping[str, Mapping[str, object]]
                ) -> dict[str, str]:
    """Each map of ``specs``, in one sentence, for the options used (the job's manifest).

    ``params``: method -> its parameters as used (defaults included).
    """
    legacy = [s.objective for s in specs if s.legacy]
    out = dict(zip(legacy, map_definitions(legacy, reduction).values(), strict=True)) if legacy else {}
    for s in specs:
        if s.legacy:
            continue
        m = ATTRIBUTION_METHODS[s.method]
        if s.objective == "score":
            objective = "the target's logit s_y"
        elif m.loss_objective == "-L":
            objective = "−L = log p_y, minus the per-image cross-entropy, so that positive is evidence for the target"
        else:
            objective = "the per-image cross-entropy L"
        used = ", ".join(f"{k}={v}" for k, v in params.get(s.method, {}).items())
        per_pixel = "its one channel" if m.output == "layer" else _REDUCTION_TEXT[reduction]
        out[s.name] = (f"{m.title} ({m.citation}) of {objective}: a = {m.summary}"
                       f"{f' ({used})' if used else ''}; per pixel, {per_pixel}")
    return out
