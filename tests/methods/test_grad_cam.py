"""Grad-CAM (Selvaraju et al. 2017): the definition, its layers (only those on the path to the output are
offered, another is refused by name), the registry's layers, and Captum's LayerGradCam.

A layer whose output the logits don't depend on (a head computed and dropped, an auxiliary branch) has no
gradient: torch raised "One of the differentiated Tensors appears to not have been used in the graph" from
``attribute``, and the dashboard offered every Conv2d.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliency_core import attribute
from saliency_core.errors import InvalidInputError
from saliency_core.methods.cam_layer import conv_layers
from tests.methods.oracles import inputs, oracle
from tests.methods.small_nets import batch, relu_net


def test_grad_cam_is_the_relu_of_the_gradient_weighted_activations():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "grad_cam", layer="4")
    a = model[:5](X).detach()  # the ReLU6 output, (N, 6, 8, 8)
    for obj in ("score", "loss"):
        x = X.clone()
        act = model[:5](x).detach().requires_grad_(True)
        logits = model[5:](act)
        f = logits if obj == "score" else F.log_softmax(logits, dim=1)
        (g,) = torch.autograd.grad(f.gather(1, r.targets[:, None]).sum(), act)
        coarse = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
        expected = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(r.attributions[obj], expected, rtol=1e-5, atol=1e-7)
        assert bool((r.maps[obj] >= 0).all())
    assert r.reduction == "none"


class Twice(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "make, layer, match",
    [
        (relu_net, None, "bare module needs layer="),
        (relu_net, "head", r"not a submodule.*'0', '1'"),
        (relu_net, "7", r"\(N, K, h, w\) output; '7' gives \(3, 7\)"),
        (lambda: Twice().eval(), "conv", "ran 2 times"),
    ],
)
def test_grad_cam_refuses_layers_it_cannot_use(make, layer, match):
    with pytest.raises(InvalidInputError, match=match):
        attribute(make(), *batch(), "grad_cam", layer=layer)


def test_registered_cam_layers_exist_and_give_feature_maps():
    """Every torchvision model of the picker has a CAM layer, registered or found (ConvNeXt, Swin, ViT: the
    last stage, the last block's norm), whose output folds into a grid of at least 7 x 7."""
    from torchvision.models import get_model

    from saliency_core.methods import feature_grid
    from saliency_core.methods.cam_layer import registered_layer
    from saliency_core.models.registry import REGISTRY

    shapes: list[tuple[int, ...]] = []
    for spec in REGISTRY.values():
        if spec.source != "torchvision":
            continue
        shapes.clear()
        with torch.device("meta"):  # structure only: no weights allocated or initialised
            model = get_model(spec.name, weights=None).eval()
        name = spec.cam_layer or registered_layer(model)
        assert name, spec.name
        layer = model.get_submodule(name)
        handle = layer.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out.shape)))
        crop = spec.preprocessing.crop
        with torch.no_grad():
            model(torch.empty(1, 3, crop, crop, device="meta"))
        handle.remove()
        assert len(shapes) == 1, (spec.name, shapes)
        out = torch.empty(shapes[0], device="meta")
        grid, _ = feature_grid.fold(out, feature_grid.layout_of(model, name), (crop, crop),
                                    feature_grid.patch_size(model), name)
        assert grid.dim() == 4 and grid.shape[2] >= 7 and grid.shape[2] == grid.shape[3], (spec.name, shapes)
        assert grid.shape[1] >= 256, (spec.name, grid.shape)  # channels, not a side of the grid


def test_a_registered_model_without_cam_layer_says_so(lite0):
    from saliency_core.models.registry import LoadedModel

    no_cam = LoadedModel(lite0.name, dataclasses.replace(lite0.spec, cam_layer=""), lite0.model,
                         lite0.categories, lite0.device)
    with pytest.raises(InvalidInputError, match="no convolutional feature map"):
        attribute(no_cam, torch.zeros(1, 3, 64, 64), [0], "grad_cam")


@pytest.mark.parametrize("name, layer", [("resnet18", "layer4"), ("squeezenet1_1", "features.12")])
def test_grad_cam_equals_captum_layer_grad_cam_with_bilinear_upsampling(nets, name, layer):
    from captum.attr import LayerAttribution, LayerGradCam

    model = nets[name]
    X, y = inputs(size=96)
    r = attribute(model, X, y, "grad_cam", layer=layer)
    assert r.params == {"layer": layer}
    for obj in ("score", "loss"):
        f = oracle(model, obj)
        coarse = LayerGradCam(f, f.get_submodule(layer if obj == "score" else "model." + layer)).attribute(
            X.clone(), target=y, relu_attributions=True)
        ref = LayerAttribution.interpolate(coarse, (96, 96), interpolate_mode="bilinear")
        assert r.attributions[obj].shape == (2, 1, 96, 96)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r.maps[obj], ref[:, 0], rtol=1e-5, atol=1e-6)
        assert float(ref.detach().amax()) > 0  # a map that is not all zeros


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
