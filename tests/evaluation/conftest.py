"""Fixtures of the metric tests: a small CNN, 16 px images, explicit targets, gradient maps and Quantus
(0.6.0, the oracle) quietened."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
from small_nets import relu_net

from saliency_core.methods.registry import attribute

os.environ.setdefault("PYTEST", "1")  # Quantus: no progress bars


@pytest.fixture(scope="module")
def net():
    return relu_net()


@pytest.fixture(scope="module")
def data(net):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(4, 3, 16, 16, generator=g)
    y = torch.tensor([0, 3, 5, 6])
    maps = attribute(net, X, y, "gradient", ("score",)).maps["score"].double()
    return X, y, maps


def quantus_arrays(X, y, maps):
    """Quantus's inputs: x (N, 3, H, W) float32, y (N,) int, a (N, 1, H, W) float."""
    return X.numpy().astype(np.float32), y.numpy(), np.asarray(maps)[:, None].astype(np.float64)


def gradient_explainer(objective: str = "score"):
    """A Quantus explain_func that returns this engine's gradient maps."""

    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        r = attribute(model, x, torch.as_tensor(np.asarray(targets)), "gradient", (objective,))
        return r.maps[objective].double().numpy()[:, None]

    return explain
