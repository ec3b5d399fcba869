"""The CAM methods on vision transformers and Swin: the layer found, tokens folded, pytorch-grad-cam's maps.

pytorch-grad-cam (PyPI grad-cam 1.5.7) is the oracle, given the
``reshape_transform`` its documentation asks the user to write: drop the
class (and distillation) tokens and fold the rest into the patch grid for
a ViT/DeiT, permute a Swin stage's channels-last map. The dashboard does it
itself (:mod:`saliency_core.methods.feature_grid`). Small random models are
built here, in float64: torchvision's ``VisionTransformer`` and
``SwinTransformer``, timm's ViT, distilled DeiT and Swin.
"""

from __future__ import annotations

import functools

import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

from saliency_core import attribute
from saliency_core.errors import InvalidInputError
from saliency_core.methods import feature_grid, grad_cam_plus_plus
from saliency_core.methods.cam_layer import conv_layers, registered_layer
from tests.methods.cam_oracle import check_against_oracle

timm = pytest.importorskip("timm")

SIZE = 32  # 4 x 4 patches of 8 px for the ViTs, 8 x 8 then 4 x 4 for the Swins (patches of 4 px)


def _frozen(net: torch.nn.Module) -> torch.nn.Module:
    net = net.double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def tv_vit() -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5)
    torch.nn.init.normal_(net.heads.head.weight)  # torchvision starts the head at zero: every gradient would be 0
    return _frozen(net)


def tv_swin() -> torch.nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return _frozen(SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                   window_size=[2, 2], num_classes=5))


def timm_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return _frozen(timm.models.vision_transformer.VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=16,
                                                                    depth=2, num_heads=2, num_classes=5))


def timm_deit_distilled() -> torch.nn.Module:
    torch.manual_seed(0)
    return _frozen(timm.models.deit.VisionTransformerDistilled(img_size=SIZE, patch_size=8, embed_dim=16, depth=2,
                                                               num_heads=2, num_classes=5))


def timm_swin() -> torch.nn.Module:
    torch.manual_seed(0)
    return _frozen(timm.models.swin_transformer.SwinTransformer(img_size=SIZE, patch_size=4, embed_dim=8,
                                                                depths=(1, 1), num_heads=(1, 2), window_size=2,
                                                                num_classes=5))


def drop_tokens(prefix: int, side: int):
    """pytorch-grad-cam's documented ViT transform: drop the first ``prefix`` tokens, fold a side × side grid."""
    def transform(tensor: torch.Tensor) -> torch.Tensor:
        grid = tensor[:, prefix:, :].reshape(tensor.size(0), side, side, tensor.size(2))
        return grid.transpose(2, 3).transpose(1, 2)
    return transform


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's transform for a (N, h, w, C) Swin stage."""
    return tensor.permute(0, 3, 1, 2)


#: model, the layer found by itself, the oracle's reshape_transform.
MODELS = {
    "torchvision ViT": (tv_vit, "encoder.layers.encoder_layer_1.ln_1", drop_tokens(1, 4)),
    "timm ViT": (timm_vit, "blocks.1.norm1", drop_tokens(1, 4)),
    "timm DeiT distilled": (timm_deit_distilled, "blocks.1.norm1", drop_tokens(2, 4)),
    "torchvision Swin": (tv_swin, "features.3", channels_last),
    "timm Swin": (timm_swin, "layers.1", channels_last),
}
CAMS = {"grad_cam": GradCAM, "grad_cam_plus_plus": GradCAMPlusPlus, "layer_cam": LayerCAM, "hires_cam": HiResCAM}


def batch(n: int = 2) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, SIZE, SIZE, generator=g, dtype=torch.float64), [1, 4][:n]


@pytest.mark.parametrize("name", MODELS)
def test_the_layer_is_found_by_itself(name):
    make, layer, _ = MODELS[name]
    assert registered_layer(make()) == layer


@pytest.mark.parametrize("method", CAMS)
@pytest.mark.parametrize("name", MODELS)
def test_cam_equals_pytorch_grad_cam_with_the_documented_reshape_transform(name, method, monkeypatch):
    make, layer, transform = MODELS[name]
    if method == "grad_cam_plus_plus":  # pytorch-grad-cam's 1e-6 in α's denominator (test_grad_cam_plus_plus.py)
        monkeypatch.setattr(grad_cam_plus_plus, "weigh", functools.partial(grad_cam_plus_plus.weigh, eps=1e-6))
    net = make()
    X, y = batch()
    r = check_against_oracle(method, CAMS[method], net, net, layer, X, y, monkeypatch, rtol=1e-9,
                             reshape_transform=transform)
    # Without layer= the same layer is used: the default finds it.
    again = attribute(net, X, y, method, ("score", "loss"))
    assert again.params["layer"] == layer
    torch.testing.assert_close(again.attributions["score"], r.attributions["score"], rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_folding_the_tokens_leaves_the_logits_unchanged(name):
    make, _, _ = MODELS[name]
    net = make()
    X, y = batch()
    with torch.no_grad():
        direct = net(X)
    for method in ("grad_cam", "score_cam"):
        r = attribute(net, X, y, method, ("score",))
        torch.testing.assert_close(r.logits, direct, rtol=0, atol=1e-12)


def test_the_picker_lists_the_blocks_whose_patch_tokens_reach_the_logits():
    vit = tv_vit()
    # The last block's own output reaches the logits through the class token only: its patch grid has no
    # gradient, so it is not offered; its first norm is (the patch tokens feed that block's attention).
    assert conv_layers(vit, size=SIZE) == ["conv_proj", "encoder.layers.encoder_layer_0",
                                          "encoder.layers.encoder_layer_0.ln_1",
                                          "encoder.layers.encoder_layer_1.ln_1"]
    assert "layers.1" in conv_layers(timm_swin(), size=SIZE)
    assert conv_layers(tv_swin(), size=SIZE)[-2:] == ["features.3", "norm"]


def test_the_shared_transformer_is_not_hooked_or_changed():
    net = tv_vit()
    before = {name: type(m) for name, m in net.named_modules()}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    X, y = batch()
    for method in ("grad_cam", "score_cam"):
        attribute(net, X, y, method, ("score", "loss"))
    conv_layers(net, size=SIZE)
    assert {name: type(m) for name, m in net.named_modules()} == before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_tokens_that_do_not_fold_into_the_grid_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="'mlp' gives 40 tokens"):
        feature_grid.token_grid(40, (32, 32), (8, 8), "mlp")  # 16 patches leave 24 tokens before the grid
    assert feature_grid.token_grid(197, (224, 224), (16, 16), "x") == (1, 14, 14)
    assert feature_grid.token_grid(198, (224, 224), None, "x") == (2, 14, 14)  # no patch size: the square grid


def test_a_non_square_image_folds_into_a_non_square_grid():
    prefix, h, w = feature_grid.token_grid(1 + 2 * 4, (16, 32), (8, 8), "x")
    assert (prefix, h, w) == (1, 2, 4)
    tokens = torch.arange(9 * 3, dtype=torch.float64).reshape(1, 9, 3)
    grid, restore = feature_grid.fold(tokens, feature_grid.CHANNELS_FIRST, (16, 32), (8, 8), "x")
    assert grid.shape == (1, 3, 2, 4)
    assert torch.equal(grid[0, :, 1, 2], tokens[0, 1 + 1 * 4 + 2])  # row-major patches after the class token
    assert torch.equal(restore(grid), tokens)


def test_a_cnn_keeps_its_registered_layer_and_a_bare_cnn_still_needs_one(lite0):
    assert registered_layer(lite0) == "_blocks.15"
    with pytest.raises(InvalidInputError, match="needs layer="):
        attribute(lite0.model, torch.zeros(1, 3, 64, 64), [0], "grad_cam")


@pytest.mark.parametrize("name", ["torchvision ViT", "timm Swin"])
def test_guided_backprop_refuses_a_gelu_model_with_the_reason(name):
    from saliency_core.methods.model_needs import why_not
    from saliency_core.methods.registry import get_method

    net = MODELS[name][0]()
    assert "no GELU" in why_not(get_method("guided_backprop"), net)
    with pytest.raises(InvalidInputError, match="uses GELU"):
        attribute(net, *batch(), "guided_backprop")


def test_guided_backprop_refuses_gelu_beside_relus_rather_than_mixing_rules():
    torch.manual_seed(0)
    net = _frozen(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
                                      torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                      torch.nn.Linear(4, 5)))
    with pytest.raises(InvalidInputError, match=r"uses GELU \('3'\)"):
        attribute(net, *batch(), "guided_backprop")
