"""The plain gradient (Simonyan et al. 2014) through attribute() is compute_saliency's map, exactly (the core's
own tests: tests/test_gradients.py)."""

from __future__ import annotations

import pytest
import torch

from saliency_core import attribute
from saliency_core.core.gradients import compute_saliency
from tests.methods.small_nets import batch, relu_net


@pytest.mark.parametrize("reduction", ["max", "l2"])
def test_gradient_method_gives_exactly_compute_saliency(reduction):
    model = relu_net()
    X, y = batch()
    ref = compute_saliency(model, X, y, reduction=reduction, max_batch=2)
    r = attribute(model, X, y, "gradient", reduction=reduction, max_batch=2)
    for obj in ("score", "loss"):
        assert torch.equal(r.maps[obj], ref.maps[obj])
        assert torch.equal(r.attributions[obj], ref.gradients[obj])
    assert torch.equal(r.logits, ref.logits) and torch.equal(r.targets, ref.targets)
    assert r.params == {} and r.method == "gradient" and r.reduction == reduction and r.convergence is None
