"""Which evaluation metrics a dataset job computes (``--metrics``), their options, columns and definitions.

``--metrics`` takes the names of :data:`saliency_core.evaluation.metrics.METRICS` (``road_morf``,
``infidelity``, ...) and three names for several at once:

* ``road``: ``road_morf`` and ``road_lerf`` (the two orders of one method, one set of parameters);
* ``sensitivity``: ``max_sensitivity`` and ``avg_sensitivity`` (both from the same recomputed maps:
  asking for both costs what one costs);
* ``localisation``: ``pointing_game``, ``relevance_mass_accuracy`` and ``relevance_rank_accuracy``
  (they need ``--boxes`` or ``--masks``).

Parameters are options named after the metric, or after ``road`` / ``sensitivity`` for the pairs that share
them: ``--road-steps``, ``--sensitivity-samples``, ``--infidelity-noise-std``. Every map of the job gets a
column per metric, ``<map>_<metric>`` (``score_road_morf``, ``smoothgrad_loss_max_sensitivity``).

Draws are per image: a metric's ``seed`` and the image's sha256 give the image's own seed
(:func:`image_seed`), so a row's value depends neither on its batch, nor on its rank, nor on a resume, and
every map of an image sees the same draws (a paired comparison of the maps).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from saliency_core.core.limits import MAX_SEED
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import EVALUATION_METRICS, Metric, get_metric

#: Names that select several metrics at once.
ALIASES: dict[str, tuple[str, ...]] = {
    "road": ("road_morf", "road_lerf"),
    "sensitivity": ("max_sensitivity", "avg_sensitivity"),
    "localisation": ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"),
}
#: Metrics that share one set of parameters (one run gives both): their options' prefix.
_SHARED = {"road_morf": "road", "road_lerf": "road", "max_sensitivity": "sensitivity",
           "avg_sensitivity": "sensitivity"}


def owner(metric: str) -> str:
    """Whose parameters a metric takes: "road" for road_morf, "sensitivity" for max_sensitivity, else itself."""
    return _SHARED.get(metric, metric)


def owners() -> dict[str, Metric]:
    """Every parameter owner -> a metric that declares its parameters, in :data:`METRICS` order."""
    out: dict[str, Metric] = {}
    for m in EVALUATION_METRICS.values():
        out.setdefault(owner(m.name), m)
    return out


def option(owner_name: str, param: str) -> str:
    """``--road-steps``, ``--faithfulness-correlation-subset-size``."""
    return f"--{owner_name}-{param}".replace("_", "-")


def cap(param_name: str, maximum: float | None) -> float | None:
    """The most an option takes: the parameter's declared maximum, a seed :data:`MAX_SEED`."""
    return MAX_SEED if param_name == "seed" and maximum is None else maximum


def parse_metrics(text: str | Iterable[str]) -> tuple[str, ...]:
    """The metrics a ``--metrics`` value asks for, in :data:`METRICS` order (a metric named twice counts once).

    Raises InvalidInputError for an empty list or an unknown name (listing the known ones).
    """
    entries = [e.strip() for e in (text.split(",") if isinstance(text, str) else text)]
    entries = [e for e in entries if e]
    if not entries:
        raise InvalidInputError("--metrics: expected at least one metric, e.g. road,sensitivity,sparseness")
    wanted: set[str] = set()
    for entry in entries:
        if entry in ALIASES:
            wanted.update(ALIASES[entry])
        elif entry in EVALUATION_METRICS:
            wanted.add(entry)
        else:
            raise InvalidInputError(f"--metrics: unknown metric {entry!r}. Known: {', '.join(ALIASES)}, "
                                    f"{', '.join(EVALUATION_METRICS)}")
    return tuple(m for m in EVALUATION_METRICS if m in wanted)


def needs_mask(metrics: Sequence[str]) -> list[str]:
    """The localisation metrics of ``metrics`` (those that need an object mask)."""
    return [m for m in metrics if "mask" in get_metric(m).needs]


def owners_of(metrics: Sequence[str]) -> list[str]:
    """The parameter owners of ``metrics``, in order."""
    return list(dict.fromkeys(owner(m) for m in metrics))


def image_seed(seed: int, sha256: str) -> int:
    """The seed of one image's draws: a function of the metric's ``seed`` and the image's sha256 only,
    below 2^31 (so that the engine's own seeding, ``seed * 1_000_003 + row``, stays far from overflow)."""
    digest = hashlib.sha256(f"{int(seed)}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def column(map_name: str, metric: str) -> str:
    return f"{map_name}_{metric}"


def definitions(metrics: Sequence[str], params: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """``<metric>`` -> one sentence: what it is, the paper, which way is better and the parameters used
    (``params``: owner -> its parameters, defaults included); for the job's manifest."""
    out = {}
    for name in metrics:
        m = get_metric(name)
        used = ", ".join(f"{k}={v}" for k, v in params.get(owner(name), {}).items())
        seeded = "; draws seeded per image by (seed, the image's sha256)" if "seed" in params.get(owner(name), {}) \
            else ""
        mask = "; needs an object mask (--boxes or --masks), NaN without one" if "mask" in m.needs else ""
        out[f"<map>_{name}"] = (f"{m.title} ({m.citation}) of each map, of the model output the map explains: "
                                f"{m.good}; {m.better} is better{f' ({used})' if used else ''}{seeded}{mask}")
    return out
