"""timm models in the own-models folder: ``architecture = "timm:<name>"``, timm's preprocessing, every method.

The models are small random DeiT and Swin variants saved as state dicts
(tests/transformer_folder.py), loaded as a user's would be.
"""

from __future__ import annotations

import json

import pytest
import torch

from saliency_core import attribute
from saliency_core.errors import ModelUnavailableError
from saliency_core.methods import model_needs
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from saliency_core.models import custom_models
from saliency_core.models.loading import load_model
from saliency_core.models.registry import get_spec
from tests import transformer_folder
from tests.methods.small_nets import SMALL

pytest.importorskip("timm")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(custom_models.MODELS_DIR_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("stem", transformer_folder.MODELS)
def test_a_timm_state_dict_loads_with_timms_preprocessing_and_the_same_logits(folder, stem):
    net = transformer_folder.write(folder, stem)
    spec = get_spec(f"custom:{stem}")
    # timm's configuration of these names: bicubic, ImageNet's mean and std, crop 0.9 of the resize.
    prep = spec.preprocessing
    assert (prep.crop, prep.resize, prep.interpolation) == (64, 71, "bicubic")
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    assert spec.weights.startswith("timm ") and spec.weights.endswith(" state dict")
    loaded = load_model(f"custom:{stem}")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=0)


def test_the_sidecars_fields_win_over_timms(folder):
    transformer_folder.write(folder, "tiny_deit", resize=80, interpolation="bilinear", mean=[0.5, 0.5, 0.5])
    prep = get_spec("custom:tiny_deit").preprocessing
    assert (prep.crop, prep.resize, prep.interpolation, prep.mean) == (64, 80, "bilinear", (0.5, 0.5, 0.5))


@pytest.mark.filterwarnings("ignore:Integrated Gradients")
@pytest.mark.parametrize("stem, layer", [("tiny_deit", "blocks.1.norm1"), ("tiny_swin", "layers.1")])
def test_every_method_the_model_can_run_gives_finite_maps_and_cams_find_their_layer(folder, stem, layer):
    transformer_folder.write(folder, stem)
    model = load_model(f"custom:{stem}")
    x = torch.randn(1, 3, 64, 64)
    ran = []
    for name, method in ATTRIBUTION_METHODS.items():
        if model_needs.unmet_needs(method, model):
            continue
        params = dict(SMALL.get(name, {}))
        if name in ("occlusion",):
            params = {"window": 16, "stride": 16}
        r = attribute(model, x, [0], name, ("score", "loss"), **params)
        for objective in ("score", "loss"):
            assert torch.isfinite(r.maps[objective]).all() and r.maps[objective].shape == (1, 64, 64), name
        if method.family == "CAM":
            assert r.params["layer"] == layer
        ran.append(name)
    assert "guided_backprop" not in ran  # GELU: refused with its reason (tests/methods/test_transformer_cams.py)
    assert "deeplift" not in ran  # layer norm: no rule, so not offered
    assert "layer norm" in model_needs.why_not(ATTRIBUTION_METHODS["deeplift"], model)
    assert {"gradient", "integrated_gradients", "grad_cam", "score_cam", "occlusion"} <= set(ran)


@pytest.mark.parametrize("changes, match", [
    ({"architecture": "timm:no_such_net"}, "timm has no model 'no_such_net'"),
    ({"architecture_args": {"checkpoint_path": "/etc/passwd"}}, "can't set 'checkpoint_path'"),
    ({"architecture_args": {"pretrained_cfg_overlay": {"file": "x"}}}, "can't set 'pretrained_cfg_overlay'"),
    ({"architecture_args": {"depth": -1}}, "architecture_args.depth must be a number"),
    ({"architecture_args": ["depth"]}, "architecture_args must be a table"),
])
def test_bad_timm_sidecars_are_refused_with_the_reason(folder, changes, match):
    transformer_folder.write(folder, "tiny_deit", **changes)
    with pytest.raises(ModelUnavailableError, match=match):
        get_spec("custom:tiny_deit")


def test_architecture_args_are_for_timm_only(folder):
    transformer_folder.write(folder, "tiny_deit", architecture="resnet18", resize=72, crop=64,
                             mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(ModelUnavailableError, match="architecture_args is for timm models"):
        get_spec("custom:tiny_deit")


def test_args_that_do_not_fit_the_architecture_or_the_file_are_told_at_load(folder):
    transformer_folder.write(folder, "tiny_deit")
    data = json.loads((folder / "tiny_deit.json").read_text())
    data["architecture_args"]["embed_dim"] = 48  # the file's tensors are 32 wide
    (folder / "tiny_deit.json").write_text(json.dumps(data))
    with pytest.raises(ModelUnavailableError, match="does not fit timm deit_tiny_patch16_224 with 3 classes"):
        load_model("custom:tiny_deit")
    data["architecture_args"]["embed_dim"] = 33  # not divisible by the heads: timm's own assertion
    (folder / "tiny_deit.json").write_text(json.dumps(data))
    with pytest.raises(ModelUnavailableError, match="can't be built with architecture_args"):
        load_model("custom:tiny_deit")


def test_without_timm_a_timm_sidecar_names_the_package(folder, monkeypatch):
    transformer_folder.write(folder, "tiny_deit")
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ModelUnavailableError, match=r"need the timm package \(pip install timm\)"):
        get_spec("custom:tiny_deit")
