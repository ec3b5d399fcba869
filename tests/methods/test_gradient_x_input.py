"""Gradient × input (Shrikumar et al. 2016): −L for the loss, baselines, and Captum's InputXGradient."""

from __future__ import annotations

import pytest
import torch

from saliency_core import attribute
from saliency_core.core.gradients import compute_saliency
from saliency_core.errors import InvalidInputError
from tests.methods.oracles import inputs, oracle
from tests.methods.small_nets import WithPreprocessing, batch, relu_net


def test_gradient_x_input_uses_minus_the_loss_and_the_black_baseline_of_the_models_normalisation():
    model = relu_net()
    X, y = batch()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    g = compute_saliency(model, X, y).gradients
    black = ((0 - torch.tensor(mean)) / torch.tensor(std)).view(1, 3, 1, 1)
    r = attribute(WithPreprocessing(model, mean, std), X, y, "gradient_x_input", baseline="black")
    torch.testing.assert_close(r.attributions["score"], g["score"] * (X - black), rtol=1e-6, atol=0)
    torch.testing.assert_close(r.attributions["loss"], -g["loss"] * (X - black), rtol=1e-6, atol=0)
    zeros = attribute(model, X, y, "gradient_x_input")
    assert torch.equal(zeros.attributions["loss"], -(g["loss"] * X))


def test_black_baseline_on_a_bare_module_says_it_needs_mean_and_std():
    with pytest.raises(InvalidInputError, match="mean and std"):
        attribute(relu_net(), *batch(), "integrated_gradients")


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_gradient_x_input_equals_captum_input_x_gradient(nets, name):
    from captum.attr import InputXGradient

    model = nets[name]
    X, y = inputs()
    r = attribute(model, X, y, "gradient_x_input")
    assert r.params == {"baseline": "dataset_mean"}
    for obj in ("score", "loss"):
        ref = InputXGradient(oracle(model, obj)).attribute(X.clone(), target=y)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-7)
