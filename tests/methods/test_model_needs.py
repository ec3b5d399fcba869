"""Whether a model has what a method needs (saliency_core/methods/model_needs.py): read from its modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliency_core.errors import InvalidInputError
from saliency_core.methods import cam_layer, grad_cam, gradient, guided_backprop, integrated_gradients
from saliency_core.methods.declaration import NEEDS, AttributionMethod
from saliency_core.methods.model_needs import unmet_needs, why_not


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LinearGelu(nn.Module):
    """No convolution, no ReLU module: a patch-less stand-in for a transformer's MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.GELU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_a_conv_net_with_relus_meets_every_need():
    net = ConvNet().eval()
    for method in (gradient.METHOD, grad_cam.METHOD, guided_backprop.METHOD, integrated_gradients.METHOD):
        assert unmet_needs(method, net) == () and why_not(method, net) is None


def test_a_net_without_convolutions_or_relu_modules_lacks_both():
    net = LinearGelu().eval()
    assert unmet_needs(grad_cam.METHOD, net) == ("conv_layer",)
    assert unmet_needs(guided_backprop.METHOD, net) == ("relu_modules",)
    assert why_not(guided_backprop.METHOD, net) == f"it needs {NEEDS['relu_modules']}"
    assert unmet_needs(gradient.METHOD, net) == () and unmet_needs(integrated_gradients.METHOD, net) == ()
    # What the methods themselves say when run anyway: the checks agree with them.
    assert cam_layer.conv_layers(net, size=8) == []
    with pytest.raises(InvalidInputError, match="uses GELU"):
        guided_backprop.guided_copy(net)


def test_torchscript_hides_its_modules_from_every_method_that_hooks_or_swaps():
    scripted = torch.jit.script(ConvNet().eval())
    assert unmet_needs(grad_cam.METHOD, scripted) == ("conv_layer",)
    assert unmet_needs(guided_backprop.METHOD, scripted) == ("relu_modules",)
    assert cam_layer.conv_layers(scripted, size=8) == []
    both = AttributionMethod(name="both", title="Both", citation="c", summary="s", params=(), loss_objective="L",
                             output="input", run=gradient.run, needs=frozenset({"relu_modules", "conv_layer"}))
    assert unmet_needs(both, scripted) == ("conv_layer", "relu_modules")  # in NEEDS' order
    assert why_not(both, scripted) == f"it needs {NEEDS['conv_layer']} and {NEEDS['relu_modules']}"


def test_a_loaded_model_is_read_through_its_module(lite0):
    assert unmet_needs(grad_cam.METHOD, lite0) == () and unmet_needs(guided_backprop.METHOD, lite0) == ()
