"""Grad-CAM's layers: only those on the path to the output are offered, and another is refused by name.

A layer whose output the logits don't depend on (a head computed and dropped, an auxiliary branch)
has no gradient: torch raised "One of the differentiated Tensors appears to not have been used in the
graph" from ``attribute``, and the dashboard offered every Conv2d.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliency_core.errors import InvalidInputError
from saliency_core.methods.cam_layer import conv_layers
from saliency_core.methods.registry import attribute


class WithDeadEnds(nn.Module):
    """features -> head is the path; ``aux`` runs but its result is dropped, ``unused`` never runs,
    ``twice`` runs two times per pass."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.aux = nn.Conv2d(6, 2, 1)
        self.unused = nn.Conv2d(6, 2, 1)
        self.twice = nn.Conv2d(6, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        self.aux(a)  # an auxiliary output nobody uses
        a = self.twice(self.twice(a))
        return self.head(a.mean((2, 3)))


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    model = WithDeadEnds().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_only_layers_that_reach_the_output_once_are_offered(net):
    assert conv_layers(net, size=16) == ["features.0", "features.2"]


@pytest.mark.parametrize("layer", ["aux", "unused"])
def test_a_layer_off_the_path_to_the_output_is_refused_by_name(net, layer):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(InvalidInputError, match=f"layer '{layer}' (does not reach the model's output|ran 0 times)"):
        attribute(net, x, [0, 1], "grad_cam", layer=layer)


def test_a_layer_on_the_path_still_works(net):
    cam = attribute(net, torch.rand(2, 3, 16, 16), [0, 1], "grad_cam", layer="features.2")
    assert tuple(cam.maps["score"].shape) == (2, 16, 16)


def test_the_shared_model_is_not_hooked_by_the_probe(net):
    conv_layers(net, size=16)
    assert all(not m._forward_hooks for m in net.modules())
    assert dict(net.named_children()).keys() == {"features", "aux", "unused", "twice", "head"}
