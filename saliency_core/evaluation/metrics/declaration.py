"""What an evaluation metric says about itself: :class:`Metric` and :class:`MetricCost`.

Each ``metrics/<name>.py`` ends with ``METRIC = Metric(...)`` (sensitivity: two) next to its code, as the
attribution methods do (:mod:`saliency_core.methods.declaration`); :mod:`saliency_core.evaluation.metrics`
only collects them. Parameters are :class:`~saliency_core.methods.declaration.Param`\\ s: a default, a
minimum the engine enforces, and a ``maximum`` the dashboard and batch job offer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from saliency_core.errors import InvalidInputError
from saliency_core.methods.declaration import Param

BETTER = ("higher", "lower")
#: What a metric may need besides the model, images, targets and maps.
NEEDS = {
    "mask": "an object mask (N, H, W) bool",
    "method": "the attribution method (and its parameters) that made the maps, to recompute them",
    "model": "forward passes through the model",
}


@dataclass(frozen=True)
class MetricCost:
    """What one image costs a metric: ``forward`` rows through the model without gradients, and
    ``attributions``: calls of the attribution method on one image (each its own cost, see
    :meth:`saliency_core.methods.declaration.AttributionMethod.cost`)."""

    forward: int = 0
    attributions: int = 0


def no_cost(**_params: object) -> MetricCost:
    """The cost of a metric of the maps alone (sparseness, complexity, localisation)."""
    return MetricCost()


@dataclass(frozen=True)
class Metric:
    """An evaluation metric as it describes itself.

    name : its key ("road_morf"); title, citation : how people see it
    better : "higher" or "lower"; good : one line on what a good value looks like
    params : its parameters, in the order controls list them
    cost : ``cost(**params) -> MetricCost`` per image
    needs : keys of :data:`NEEDS`
    run : the function that computes it (its module's public function)
    """

    name: str
    title: str
    citation: str
    better: str
    good: str
    params: tuple[Param, ...]
    run: Callable[..., object]
    cost: Callable[..., MetricCost] = no_cost
    needs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.better not in BETTER:
            raise ValueError(f"{self.name}: better must be one of {BETTER}, got {self.better!r}")
        if unknown := set(self.needs) - set(NEEDS):
            raise ValueError(f"{self.name}: needs must be keys of NEEDS, got {sorted(unknown)}")

    def defaults(self) -> dict[str, object]:
        return {p.name: p.default for p in self.params}

    def resolve(self, given: Mapping[str, object] | None = None) -> dict[str, object]:
        """Every parameter's value, defaults filled in, each checked (InvalidInputError names the first bad one)."""
        given = dict(given or {})
        known = {p.name: p for p in self.params}
        if unknown := sorted(set(given) - set(known)):
            takes = ", ".join(known) if known else "no parameters"
            raise InvalidInputError(f"{self.name} takes {takes}; got unknown {', '.join(unknown)}")
        return {name: p.check(given.get(name, p.default)) for name, p in known.items()}

    def cost_for(self, given: Mapping[str, object] | None = None) -> MetricCost:
        """Forward rows and attribution calls per image with the parameters ``given`` (defaults for the rest)."""
        return self.cost(**self.resolve(given))
