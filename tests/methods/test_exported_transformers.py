"""The CAM methods on transformers saved with torch.export, as a team saves its own models (.pt2 in the models
folder): the same layer, the same layer picker and the same maps as the model they were exported from.

Unflattening an exported program makes every module an ``InterpreterModule``: a Swin stage's channels-last output
looked channels-first, and the maps were wrong without a word (on the torchvision Swin here, Grad-CAM off by
as much as its largest value, HiResCAM by 750 times it), while the layer picker offered no layer. The loader
now records the class each module was (``source_classes``), and the token fold and the picker read it. The eager
models' maps equal pytorch-grad-cam's (tests/methods/test_transformer_cams.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from saliency_core import attribute
from saliency_core.methods.cam_layer import conv_layers
from saliency_core.methods.model_needs import why_not
from saliency_core.methods.registry import get_method
from saliency_core.models.loading import load_model
from tests.transformer_folder import build as build_timm

CAMS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "hires_cam", "score_cam")


def torchvision_vit() -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(3)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=3)
    torch.nn.init.normal_(net.heads.head.weight)  # torchvision starts the head at zero: no gradient to map
    return net


def torchvision_swin() -> torch.nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4],
                           num_classes=3)


#: stem -> (the eager model, its image side)
MODELS = {
    "tv_vit": (torchvision_vit, 32),
    "tv_swin": (torchvision_swin, 32),
    "timm_deit": (lambda: build_timm("tiny_deit"), 64),
    "timm_swin": (lambda: build_timm("tiny_swin"), 64),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{stem: (eager model, side)}, each also saved as stem.pt2 (dynamic batch) with a sidecar in one folder."""
    folder = tmp_path_factory.mktemp("exported_transformers")
    eager = {}
    for stem, (make, side) in MODELS.items():
        net = make().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        program = torch.export.export(net, (torch.zeros(2, 3, side, side),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(folder / f"{stem}.pt2"))
        (folder / f"{stem}.json").write_text(json.dumps({
            "title": stem, "classes": ["a", "b", "c"], "resize": side, "crop": side,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
        eager[stem] = (net, side)
    return folder, eager


@pytest.mark.parametrize("stem", sorted(MODELS))
def test_an_exported_transformer_gets_the_maps_of_the_model_it_was(exported, stem, monkeypatch):
    folder, eager = exported
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(folder))
    loaded = load_model(f"custom:{stem}", "cpu", channels_last=False)
    net, side = eager[stem]
    offered, offered_eager = conv_layers(loaded), conv_layers(net, size=side)
    # The layer picker offers the eager model's layers, less any whose exported module returns a list (torchvision's
    # exported ViT blocks hand their attention's inner values on with their output): each offered layer runs.
    assert offered and set(offered) <= set(offered_eager)
    if stem != "tv_vit":
        assert offered == offered_eager
    torch.manual_seed(1)
    x, y = torch.randn(2, 3, side, side), [0, 2]
    # Offered as to the eager model: the CAM methods; not DeepLIFT (layer norm and attention have no rule), which
    # would otherwise be refused only once it ran.
    for method in (*CAMS, "deeplift"):
        assert (why_not(get_method(method), loaded) is None) == (why_not(get_method(method), net) is None)
    assert why_not(get_method("deeplift"), loaded) is not None
    drawn = 0.0
    for method in CAMS:
        want = attribute(net, x, y, method)
        got = attribute(loaded, x, y, method)
        assert got.params["layer"] == want.params["layer"] in offered  # found by itself, as for the eager model
        for obj in ("score", "loss"):
            scale = float(want.maps[obj].abs().max())
            torch.testing.assert_close(got.maps[obj], want.maps[obj], rtol=1e-5, atol=1e-6 * max(scale, 1e-12))
            drawn = max(drawn, scale)
    assert drawn > 0  # some map is not all zero: the comparison says something
