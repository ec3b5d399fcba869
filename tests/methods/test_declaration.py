"""What a method declares about itself (saliency_core/methods/declaration.py) and how the registry groups it."""

from __future__ import annotations

import pytest

from saliency_core.methods import gradient
from saliency_core.methods.declaration import FAMILIES, AttributionMethod
from saliency_core.methods.registry import METHODS, by_family, registered


def test_every_method_is_in_one_family_and_listed_once():
    groups = by_family()
    listed = [name for names in groups.values() for name in names]
    assert sorted(listed) == sorted(m.name for m in METHODS) and len(set(listed)) == len(listed)
    assert list(groups) == [f for f in FAMILIES if f in groups]  # in FAMILIES' order
    assert groups["gradient"][0] == "gradient" and "integrated_gradients" in groups["path"]
    assert "grad_cam" in groups["CAM"]


def test_a_family_outside_the_list_is_refused_when_declared():
    with pytest.raises(ValueError, match="family must be one of"):
        AttributionMethod(name="x", title="X", citation="c", summary="s", params=(), loss_objective="L",
                          output="input", run=gradient.run, family="magic")


def test_a_registered_method_joins_its_family_and_leaves_with_it():
    extra = AttributionMethod(name="extra_gradient", title="Extra", citation="c", summary="s", params=(),
                              loss_objective="L", output="input", run=gradient.run, family="path")
    with registered(extra):
        assert by_family()["path"][-1] == "extra_gradient"
    assert "extra_gradient" not in by_family()["path"]
