"""The one cache key for a map, and the one way a cached computation's key is made from it.

A map is fixed by the model (its name and fingerprint: ``LoadedModel.key``), the image (the sha256 of
its bytes), the attribution method and its parameters, the objectives computed together, the target
(and the true label that the automatic target follows), the channel reduction and the precision.
:class:`MapKey` holds exactly that, as plain hashable values, never an image, array or tensor: a key
is hashed on every cache lookup, and Streamlit would hash an array by sampling it (two images one
pixel apart could share a key). :func:`map_key` is its one constructor; it puts the parameters in a
canonical order and refuses a value that is not plain data.

Every cached computation of the dashboard is keyed by :func:`computation_key`::

    (kind, maps, *options) -> ComputationKey(kind, maps, options)

``kind`` names the computation ("analysis", "gallery", "method_run", "agreement",
"method_ranking", "deletion_insertion", "randomisation"; also its name in the compute queue's
timing log); ``maps`` is the :class:`MapKey` of the maps it is made from, or a tuple of them (one per
image of a Gallery batch, one per method of a comparison); ``options`` are the computation's own
options in a fixed order (steps, baseline, seed, stages, metric...). A :class:`MapCache` takes no
other key, so a key built by hand fails where it is used instead of silently missing (or, worse,
hitting) another computation's entry.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from saliency_core.core.gradients import OBJECTIVES
from saliency_core.serving.lru import LRUCache

T = TypeVar("T")
Param = None | bool | int | float | str | tuple  # what a parameter's value may be in a key


@dataclass(frozen=True, slots=True)
class MapKey:
    """What identifies one image's maps (every field hashable, none an array; build with :func:`map_key`).

    Attributes
    ----------
    model : ``LoadedModel.key``, (name, fingerprint): a custom model replaced under its name is another model
    image : sha256 hex of the image's bytes (an .npz item: the file's sha256 + "#index")
    method : a key of :data:`saliency_core.ATTRIBUTION_METHODS`
    params : the method's parameters as given, ((name, value), ...) sorted by name
    objectives : the maps computed together, e.g. ("score", "loss")
    target : a class index, or ``AUTO_TARGET`` (-1): the true label where known, else the top-1 class
    label : the true label, which the automatic target follows and an analysis reports; None when
        unknown or unused (a computation given a class index)
    reduction : how channels become one value per pixel ("max", "abs_sum", ...)
    precision : "exact" or "fast"
    """

    model: tuple
    image: str
    method: str
    params: tuple[tuple[str, Param], ...]
    objectives: tuple[str, ...]
    target: int
    label: int | None
    reduction: str
    precision: str

    @property
    def model_name(self) -> str:
        return self.model[0]

    def param_dict(self) -> dict[str, Param]:
        """The parameters as a method takes them (a new dict)."""
        return dict(self.params)


def map_key(model: tuple, image: str, method: str, params: Mapping[str, object] | None, *, target: int,
            reduction: str, precision: str, label: int | None = None,
            objectives: Sequence[str] = OBJECTIVES) -> MapKey:
    """The :class:`MapKey` of one image's maps (see its attributes); the only place one is made.

    Raises TypeError when ``model`` is not a ``LoadedModel.key`` tuple, ``image`` not a str, or a
    parameter's value is not plain data (None, bool, a number, str, or a tuple of those): an array,
    tensor or image must never become part of a key.
    """
    if not (isinstance(model, tuple) and model and isinstance(model[0], str)):
        raise TypeError(f"model must be a LoadedModel.key, (name, fingerprint), got {model!r}")
    if not isinstance(image, str):
        raise TypeError(f"image must be the sha256 of the image's bytes (a str), got {type(image).__name__}")
    given = dict(params or {})
    return MapKey(model=model, image=image, method=str(method),
                  params=tuple(sorted((str(name), _plain(name, value)) for name, value in given.items())),
                  objectives=tuple(str(o) for o in objectives), target=int(target),
                  label=None if label is None else int(label), reduction=str(reduction), precision=str(precision))


def _plain(name: object, value: object) -> Param:
    if value is None or isinstance(value, (str, numbers.Number)):  # numpy scalars too; arrays and tensors are not
        return value
    if isinstance(value, tuple):
        return tuple(_plain(name, v) for v in value)
    raise TypeError(f"parameter {name!r}: a cache key holds plain values (None, numbers, str, tuples of them), "
                    f"not {type(value).__name__}")


class ComputationKey(NamedTuple):
    """A cached computation's key: ``(kind, maps, options)`` (see the module); make it with :func:`computation_key`."""

    kind: str
    maps: MapKey | tuple[MapKey, ...]
    options: tuple[Hashable, ...] = ()


def computation_key(kind: str, maps: MapKey | Sequence[MapKey], *options: Hashable) -> ComputationKey:
    """The key of the computation ``kind`` made from ``maps`` with its own ``options``, in a fixed order.

    ``maps``: one :class:`MapKey`, or several (kept in their order: a Gallery batch's images, a
    comparison's methods). Raises TypeError when one is not a MapKey or an option is unhashable.
    """
    group = maps if isinstance(maps, MapKey) else tuple(maps)
    if not isinstance(group, MapKey) and not (group and all(isinstance(m, MapKey) for m in group)):
        raise TypeError(f"{kind}: maps must be a MapKey or a non-empty sequence of them (made by map_key)")
    key = ComputationKey(str(kind), group, tuple(options))
    hash(key)  # an unhashable option fails here, where the key is made, not at the cache
    return key


class MapCache(LRUCache[T]):
    """An :class:`~saliency_core.serving.lru.LRUCache` of results made from maps: its keys are
    :class:`ComputationKey` s only (a TypeError names any other)."""

    def __contains__(self, key: Hashable) -> bool:
        return super().__contains__(_checked(key))

    def peek(self, key: Hashable) -> T | None:
        return super().peek(_checked(key))

    def get_or_compute(self, key, compute, on_wait=None) -> T:
        return super().get_or_compute(_checked(key), compute, on_wait)


def _checked(key: Hashable) -> ComputationKey:
    if not isinstance(key, ComputationKey):
        raise TypeError(f"a map's cache takes keys made by computation_key(), not {type(key).__name__} {key!r:.120}")
    return key
