"""LayerCAM against pytorch-grad-cam's LayerCAM, score and −L, on the embedded model and a small CNN.

The definition is the same (ReLU(Σ_k ReLU(∂f/∂A^k) ⊙ A^k)); only the
upsampling differs (pytorch-grad-cam: OpenCV after min-max scaling), so its
unscaled map is upsampled as ours before they are compared.
"""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import LayerCAM

from saliency_core import attribute
from tests.app.apptest import coffee
from tests.methods.cam_oracle import check_against_oracle, small_batch, small_cnn


@pytest.mark.parametrize("layer", ["_blocks.15", "_blocks.4._project_conv"])  # the last block, and a shallow one
def test_equals_pytorch_grad_cam_on_the_embedded_model(lite0, monkeypatch, layer):
    x = lite0.preprocess(coffee()).x
    check_against_oracle("layer_cam", LayerCAM, lite0, lite0.model, layer, x, [967], monkeypatch)


def test_equals_pytorch_grad_cam_on_a_small_cnn(monkeypatch):
    net = small_cnn()
    X, y = small_batch()
    check_against_oracle("layer_cam", LayerCAM, net, net, "2", X, y, monkeypatch, max_batch=2)


def test_negative_gradients_do_not_count():
    """A position whose gradient is negative adds nothing, however large its activation (unlike HiResCAM)."""
    net = small_cnn()
    X, y = small_batch()
    layer_cam = attribute(net, X, y, "layer_cam", layer="2").attributions["score"]
    hires_cam = attribute(net, X, y, "hires_cam", layer="2").attributions["score"]
    assert not torch.allclose(layer_cam, hires_cam)
