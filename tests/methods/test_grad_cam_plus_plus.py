"""Grad-CAM++ against pytorch-grad-cam's GradCAMPlusPlus, score and −L, on the embedded model and a small CNN.

pytorch-grad-cam adds 1e-6 to α's denominator, the paper doesn't: the two
are compared with that eps put into ours (``weigh(..., eps=1e-6)``); ours
without it is checked against the paper's Eq. 19 written out by hand.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAMPlusPlus

from saliency_core import attribute
from saliency_core.methods import grad_cam_plus_plus
from tests.app.apptest import coffee
from tests.methods.cam_oracle import check_against_oracle, small_batch, small_cnn

ORACLE_EPS = 1e-6  # pytorch_grad_cam/grad_cam_plusplus.py


@pytest.fixture
def with_oracle_eps(monkeypatch):
    monkeypatch.setattr(grad_cam_plus_plus, "weigh", functools.partial(grad_cam_plus_plus.weigh, eps=ORACLE_EPS))


def test_equals_pytorch_grad_cam_on_the_embedded_model(lite0, monkeypatch, with_oracle_eps):
    x = lite0.preprocess(coffee()).x
    check_against_oracle("grad_cam_plus_plus", GradCAMPlusPlus, lite0, lite0.model, "_blocks.15", x, [967],
                         monkeypatch)


def test_equals_pytorch_grad_cam_on_a_small_cnn(monkeypatch, with_oracle_eps):
    net = small_cnn()
    X, y = small_batch()
    check_against_oracle("grad_cam_plus_plus", GradCAMPlusPlus, net, net, "2", X, y, monkeypatch)


def test_the_eps_matters_at_the_embedded_models_last_block(lite0):
    """Most g² there are below 1e-6 (59 % for the coffee photo), so eps = 1e-6 moves the map by 15 % of its peak:
    why ours leaves it out (module docstring)."""
    x = lite0.preprocess(coffee()).x
    paper = attribute(lite0, x, [967], "grad_cam_plus_plus").attributions["score"]
    a, g = _activation_and_gradient(lite0, x, 967)
    assert float(((g * g) < ORACLE_EPS).float().mean()) > 0.5
    with_eps = F.interpolate(torch.relu(grad_cam_plus_plus.weigh(a, g, eps=ORACLE_EPS)), size=(224, 224),
                             mode="bilinear", align_corners=False)
    assert float((paper - with_eps).abs().max()) > 0.1 * float(paper.max())


def test_the_weights_are_the_papers_equation_19():
    """α = g² / (2g² + Σ_ab A_ab g³), w_k = Σ_ij α ReLU(g), written out position by position for a 2 × 2 map."""
    a = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[0.5, -1.0], [0.0, 2.0]]]], dtype=torch.float64)
    s = 6.0  # Σ_ab A_ab
    w = sum(gij ** 2 / (2 * gij ** 2 + s * gij ** 3) * max(gij, 0.0) for gij in (0.5, 2.0))  # g = 0: α = 0
    torch.testing.assert_close(grad_cam_plus_plus.weigh(a, g), w * a)


def _activation_and_gradient(lite0, x, y):
    acts = []
    layer = lite0.model.get_submodule("_blocks.15")
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        with torch.enable_grad():
            logits = lite0.model(x.clone().requires_grad_(True))
            (g,) = torch.autograd.grad(logits[0, y], acts[0])
    finally:
        handle.remove()
    return acts[0].detach(), g
