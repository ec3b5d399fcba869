"""HiResCAM against pytorch-grad-cam's HiResCAM, score and −L, on the embedded model and a small CNN.

The definition is the same (ReLU(Σ_k ∂f/∂A^k ⊙ A^k)); only the upsampling
differs (pytorch-grad-cam: OpenCV after min-max scaling), so its unscaled
map is upsampled as ours before they are compared.
"""

from __future__ import annotations

import torch
from pytorch_grad_cam import HiResCAM

from saliency_core import attribute
from tests.app.apptest import coffee
from tests.methods.cam_oracle import check_against_oracle, small_batch, small_cnn


def test_equals_pytorch_grad_cam_on_the_embedded_model(lite0, monkeypatch):
    x = lite0.preprocess(coffee()).x
    check_against_oracle("hires_cam", HiResCAM, lite0, lite0.model, "_blocks.15", x, [967], monkeypatch)


def test_equals_pytorch_grad_cam_on_a_small_cnn(monkeypatch):
    net = small_cnn()
    X, y = small_batch()
    check_against_oracle("hires_cam", HiResCAM, net, net, "2", X, y, monkeypatch)


def test_equals_grad_cam_right_before_global_pooling_and_a_linear_layer_only():
    """Draelos & Carin: with global average pooling and one linear layer after the layer, ∂f/∂A is the same at
    every position, so HiResCAM is Grad-CAM; before another convolution it is not."""
    net = small_cnn()
    X, y = small_batch()
    for layer, same in (("5", True), ("2", False)):
        hires = attribute(net, X, y, "hires_cam", layer=layer)
        grad_cam = attribute(net, X, y, "grad_cam", layer=layer)
        for objective in ("score", "loss"):
            close = torch.allclose(hires.attributions[objective], grad_cam.attributions[objective],
                                   rtol=1e-5, atol=1e-7)
            assert close == same, (layer, objective)
