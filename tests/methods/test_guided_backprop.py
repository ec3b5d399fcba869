"""Guided backprop (Springenberg et al. 2015): ReLU6 as ReLU, models without ReLUs, its private copy, Captum."""

from __future__ import annotations

import copy
import gc
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F

from saliency_core import attribute
from saliency_core.core.gradients import compute_saliency
from saliency_core.errors import InvalidInputError
from saliency_core.methods.guided_backprop import guided_copy
from tests.methods.oracles import inputs, oracle
from tests.methods.small_nets import batch, relu_net, smooth_net


def test_guided_backprop_treats_relu6_like_relu_as_a_hooked_oracle_does():
    """Oracle: Captum's rule (grad_input -> relu(grad_input)) as full backward hooks on the test's own copy."""
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "guided_backprop")
    hooked = copy.deepcopy(model)
    for m in hooked.modules():
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)):
            m.inplace = False
            m.register_full_backward_hook(lambda mod, gin, gout: (F.relu(gin[0]),))
    for obj in ("score", "loss"):
        x = X.clone().requires_grad_(True)
        logits = hooked(x)
        f = logits if obj == "score" else F.log_softmax(logits, dim=1)  # -L = log p_y
        (g,) = torch.autograd.grad(f.gather(1, r.targets[:, None]).sum(), x)
        torch.testing.assert_close(r.attributions[obj], g, rtol=1e-5, atol=1e-8)


def test_guided_backprop_without_relus_says_why():
    with pytest.raises(InvalidInputError, match=r"ReLU.*Tanh"):
        attribute(smooth_net(), *batch(), "guided_backprop")


def test_guided_copy_is_cached_shares_the_weights_and_dies_with_the_model():
    model = relu_net()
    twin = guided_copy(model)
    assert guided_copy(model) is twin
    assert all(a is b for a, b in zip(model.parameters(), twin.parameters(), strict=True))
    assert any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in twin.modules())
    ref = weakref.ref(model)
    del model, twin
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_guided_backprop_equals_captum_guided_backprop(nets, name):
    from captum.attr import GuidedBackprop

    model = nets[name]
    X, y = inputs()
    r = attribute(model, X, y, "guided_backprop")
    for obj in ("score", "loss"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum announces the hooks it sets
            ref = GuidedBackprop(oracle(model, obj)).attribute(X.clone(), target=y)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-7)
    # Guided, not plain: the plain gradient differs.
    plain = compute_saliency(model, X, y, ("score",)).gradients["score"]
    assert not torch.allclose(r.attributions["score"], plain, rtol=1e-2, atol=1e-6)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
