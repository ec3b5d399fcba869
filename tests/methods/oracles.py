"""Captum as an oracle: the loss objective as −L through log_softmax, reference inputs and baselines.

Captum explains a forward function's output, so ``log_softmax`` (whose target entry is −L) stands in for the
model where our method uses −L. Small torchvision models with random weights and 64 x 64 inputs keep it fast
(the ``nets`` fixture, tests/methods/conftest.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
