"""The one cache key for a map (saliency_core.serving.map_key): equal views, equal keys; any field changed, another
key; never an array, tensor or image inside; and a map's cache that takes no key built by hand."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from saliency_core.serving.map_key import ComputationKey, MapCache, MapKey, computation_key, map_key

BASE = {"model": ("efficientnet_lite0", ()), "image": "ab" * 32, "method": "smoothgrad",
        "params": {"samples": 2, "noise": 0.15, "seed": 7}, "objectives": ("score", "loss"), "target": 3,
        "label": 5, "reduction": "max", "precision": "exact"}
#: One other value per field of MapKey (the model: the same name with another file's fingerprint).
OTHER = {"model": ("efficientnet_lite0", (("/m/x.pt", 10, 1, 2),)), "image": "cd" * 32, "method": "gradient",
         "params": {"samples": 2, "noise": 0.15, "seed": 8}, "objectives": ("score",), "target": 4, "label": None,
         "reduction": "mean_abs", "precision": "fast"}


def key(**changes) -> MapKey:
    v = {**BASE, **changes}
    return map_key(v["model"], v["image"], v["method"], v["params"], objectives=v["objectives"], target=v["target"],
                   label=v["label"], reduction=v["reduction"], precision=v["precision"])


def test_every_field_of_the_key_is_varied_below():
    assert set(OTHER) == {f.name for f in dataclasses.fields(MapKey)}


def test_identical_views_make_the_same_key():
    a, b = key(), key(params=dict(reversed(list(BASE["params"].items()))))  # the parameters' order does not count
    assert a == b and hash(a) == hash(b)
    assert key(target=np.int64(3), params={**BASE["params"], "samples": np.int64(2)}) == a  # numpy scalars too
    assert {a: 1}[b] == 1


@pytest.mark.parametrize("field", list(OTHER))
def test_a_view_that_differs_in_one_field_makes_another_key(field):
    base, other = key(), key(**{field: OTHER[field]})
    assert other != base and getattr(other, field) != getattr(base, field)
    assert {f.name for f in dataclasses.fields(MapKey) if getattr(other, f.name) != getattr(base, f.name)} == {field}
    assert computation_key("analysis", other) != computation_key("analysis", base)


def test_a_parameter_added_or_dropped_makes_another_key():
    assert key(params={**BASE["params"], "extra": None}) != key()
    assert key(params={}) != key(params={"seed": 0})


def test_the_key_holds_the_parameters_as_a_method_takes_them():
    k = key()
    assert k.params == (("noise", 0.15), ("samples", 2), ("seed", 7))
    assert k.param_dict() == BASE["params"] and k.model_name == "efficientnet_lite0"
    assert pickle.loads(pickle.dumps(k)) == k  # session state may be serialised


@pytest.mark.parametrize("value", [np.zeros(3), torch.zeros(3), torch.tensor(1.0), Image.new("RGB", (2, 2)),
                                   [1, 2], {"a": 1}, b"bytes", (1, np.zeros(2))])
def test_an_array_tensor_or_image_never_enters_a_key(value):
    with pytest.raises(TypeError, match="plain values"):
        key(params={"baseline": value})


@pytest.mark.parametrize("changes", [{"image": b"\x00" * 32}, {"image": np.zeros((2, 2, 3), np.uint8)},
                                     {"model": "efficientnet_lite0"}, {"model": ()}])
def test_the_image_is_named_by_its_sha256_and_the_model_by_its_key(changes):
    with pytest.raises(TypeError):
        key(**changes)


def test_a_key_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        key().target = 4


def test_computation_keys_differ_by_kind_maps_their_order_and_options():
    a, b = key(), key(image=OTHER["image"])
    k = computation_key("method_ranking", (a, b), 20, "blur", 0)
    assert k == computation_key("method_ranking", [a, b], 20, "blur", 0) and k[0] == k.kind == "method_ranking"
    assert k.maps == (a, b) and k.options == (20, "blur", 0)
    assert k != computation_key("method_ranking", (b, a), 20, "blur", 0)
    assert k != computation_key("method_ranking", (a, b), 25, "blur", 0)
    assert k != computation_key("agreement", (a, b), 20, "blur", 0)
    assert computation_key("analysis", a) != computation_key("method_run", a)


@pytest.mark.parametrize("maps", [(), ("ab" * 32,), "ab" * 32, [("efficientnet_lite0", ())]])
def test_a_computation_is_keyed_on_map_keys_only(maps):
    with pytest.raises(TypeError, match="MapKey"):
        computation_key("analysis", maps)


def test_an_unhashable_option_fails_where_the_key_is_made():
    with pytest.raises(TypeError):
        computation_key("agreement", key(), ["spearman"])


def test_a_maps_cache_refuses_a_key_built_by_hand():
    cache: MapCache = MapCache(max_entries=4)
    good = computation_key("analysis", key())
    assert cache.get_or_compute(good, lambda: "maps") == "maps"
    assert good in cache and cache.peek(good) == "maps"
    by_hand = ("analysis", key(), ())  # equal to the key, but not made by computation_key
    assert by_hand == good
    for use in (lambda: cache.get_or_compute(by_hand, lambda: "other"), lambda: cache.peek(by_hand),
                lambda: by_hand in cache):
        with pytest.raises(TypeError, match="computation_key"):
            use()
    assert isinstance(good, ComputationKey) and cache.get_or_compute(good, lambda: "other") == "maps"
