"""The gradient and path methods on vision transformers: the same maps as Captum's, nothing to adapt (issue 25).

These methods only differentiate the model's output with respect to its input, so a ViT or Swin needs
nothing of its own; checked here against Captum on the small float64 torchvision ViT and timm Swin of
tests/methods/test_transformer_cams.py, for the score and the loss (−L through log_softmax where the method
uses it, L where it doesn't).
"""

from __future__ import annotations

import pytest
import torch

from saliency_core import attribute
from tests.methods.oracles import LogSoftmax
from tests.methods.test_transformer_cams import batch, timm_swin, tv_vit

MODELS = {"torchvision ViT": tv_vit, "timm Swin": timm_swin}


@pytest.mark.filterwarnings("ignore:Integrated Gradients")
@pytest.mark.parametrize("name", MODELS)
def test_gradient_gradient_x_input_and_integrated_gradients_equal_captums(name):
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    net = MODELS[name]()
    X, y = batch()
    target = torch.tensor(y)
    minus_l = LogSoftmax(net)

    r = attribute(net, X, y, "gradient", ("score", "loss"))
    torch.testing.assert_close(r.attributions["score"], Saliency(net).attribute(X, target=target, abs=False),
                               rtol=1e-9, atol=1e-12)
    # The plain gradient's loss map is of L = −log p_y itself.
    torch.testing.assert_close(r.attributions["loss"], -Saliency(minus_l).attribute(X, target=target, abs=False),
                               rtol=1e-9, atol=1e-12)

    r = attribute(net, X, y, "gradient_x_input", ("score", "loss"), baseline="dataset_mean")  # x′ = 0
    for objective, forward in (("score", net), ("loss", minus_l)):
        torch.testing.assert_close(r.attributions[objective], InputXGradient(forward).attribute(X, target=target),
                                   rtol=1e-9, atol=1e-12)

    r = attribute(net, X, y, "integrated_gradients", ("score", "loss"), baseline="dataset_mean",
                  rule="gauss_legendre", steps=16)
    for objective, forward in (("score", net), ("loss", minus_l)):
        ref = IntegratedGradients(forward).attribute(X, baselines=torch.zeros_like(X), target=target, n_steps=16,
                                                     method="gausslegendre")
        # Captum casts the Gauss-Legendre weights to float32 (2.7e-5 relative here); ours stay float64.
        torch.testing.assert_close(r.attributions[objective], ref, rtol=1e-4, atol=1e-8)
