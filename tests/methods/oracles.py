"""Captum as an oracle: the loss objective as −L through log_softmax, reference inputs and baselines, and the
adaptations Captum's DeepLift needs (tests/methods/test_deeplift.py, benchmarks/bench_noise_deeplift.py); and the
numpy PAIR 0.2.1's Guided IG expects (tests/methods/test_guided_ig.py, benchmarks/bench_path_methods.py).

Captum explains a forward function's output, so ``log_softmax`` (whose target entry is −L) stands in for the
model where our method uses −L. Small torchvision models with random weights and 64 x 64 inputs keep it fast
(the ``nets`` fixture, tests/methods/conftest.py).
"""

from __future__ import annotations

import copy
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saliency_core.inputs.preprocessing import IMAGENET_MEAN, IMAGENET_STD


class LogSoftmax(torch.nn.Module):
    """The model followed by log_softmax: output[:, y] = log p_y = −L. A module, so Captum finds its ReLUs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return F.log_softmax(self.model(x), dim=1)


def inputs(n: int = 2, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([1, 250, 999, 7][:n])


def black(X: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((0 - mean) / std).expand_as(X).clone()


def oracle(model: torch.nn.Module, objective: str) -> torch.nn.Module:
    return model if objective == "score" else LogSoftmax(model)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


class Weighted(nn.Module):
    """Σ_k w_k s_k: the logits through fixed multipliers (a linear last step, which Captum takes exactly)."""

    def __init__(self, model: nn.Module, weights: torch.Tensor) -> None:
        super().__init__()
        self.model, self.weights = model, weights

    def forward(self, x):
        s = self.model(x)
        w = self.weights.repeat(s.shape[0] // self.weights.shape[0], 1)  # Captum runs x and x′ as one batch
        return (s * w).sum(dim=1, keepdim=True)


class PerCall(nn.Module):
    """A module called several times per forward pass, split into one copy per call (in call order)."""

    def __init__(self, module: nn.Module, calls: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(calls))
        self.count = 0

    def forward(self, x):
        m = self.copies[self.count % len(self.copies)]
        self.count += 1
        return m(x)


def captum_ready(model: nn.Module, X: torch.Tensor) -> nn.Module:
    """A copy of ``model`` Captum's DeepLift can take: every activation module called once per pass."""
    model = copy.deepcopy(model)
    calls: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(X[:1])
    for h in hooks:
        h.remove()
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if calls.get(child, 0) > 1:
                parent._modules[name] = PerCall(child, calls[child])
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model.eval()


class OldQuantileNumpy(types.ModuleType):
    """numpy, with the ``interpolation=`` keyword of ``quantile`` that PAIR 0.2.1's Guided IG passes (numpy 2.4
    dropped it for ``method=``): set as ``saliency.core.guided_ig.np``."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kwargs):
        return np.quantile(a, q, method=interpolation, **kwargs)
