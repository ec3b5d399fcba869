"""Small networks and batches the method tests share (tests/methods/), and what a call must leave alone."""

from __future__ import annotations

import hashlib
import math

import torch

from saliency_core.core.model_access import TOP1_TARGET
from saliency_core.inputs.preprocessing import Preprocessing

SMALL = {  # parameters that keep the embedded-model tests short
    "smoothgrad": {"samples": 2},
    "smoothgrad_sq": {"samples": 2},
    "vargrad": {"samples": 2},
    "integrated_gradients": {"steps": 3},
    "blur_ig": {"steps": 3},
    "guided_ig": {"steps": 3},
    "xrai": {"steps": 2, "mode": "fast"},
    "expected_gradients": {"samples": 2},
    "score_cam": {"channels": 2},
    "occlusion": {"window": 56, "stride": 56},
    "rise": {"masks": 4},
    "kernel_shap": {"samples": 6, "segments": 8},
    "lime": {"samples": 6, "superpixels": "slic", "segments": 8},
}


def relu_net(seed: int = 0) -> torch.nn.Module:
    """Conv-BN-ReLU-Conv-ReLU6-pool-linear, eval mode with non-trivial BN statistics."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 7),
    )
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, 16, 16))
    return net.eval()


def smooth_net(seed: int = 0) -> torch.nn.Module:
    """A tanh net: smooth, so path integrals converge like the quadrature rules promise."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 7),
    ).eval()


class Linear(torch.nn.Module):
    def __init__(self, shape=(3, 4, 6), n_classes: int = 5) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(math.prod(shape), n_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class WithPreprocessing:
    """A LoadedModel-like wrapper: a module plus its normalisation (what "black" needs)."""

    def __init__(self, model: torch.nn.Module, mean, std) -> None:
        self.model = model
        self.preprocessing = Preprocessing(16, 16, mean, std)

    def module_for(self, precision: str) -> torch.nn.Module:
        return self.model


def batch(n: int = 3, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([0, 3, TOP1_TARGET, 6][:n])


def fingerprint(module: torch.nn.Module) -> dict:
    """Everything a call must leave alone: weights and buffers (sha256), grads, modes, hooks."""
    digest = hashlib.sha256()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    hooks = sum(len(v) for m in module.modules() for k, v in vars(m).items() if "hooks" in k and isinstance(v, dict))
    return {
        "sha256": digest.hexdigest(),
        "grads": [p.grad is None for p in module.parameters()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "training": [m.training for m in module.modules()],
        "types": [type(m).__name__ for m in module.modules()],
        "hooks": hooks,
    }


class RowCounter(torch.nn.Module):
    """``inner``, counting the rows it runs: ``rows["grad"]`` with gradients on, ``rows["forward"]`` without (a
    method's declared cost is checked against them)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = {"grad": 0, "forward": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows["grad" if torch.is_grad_enabled() else "forward"] += x.shape[0]
        return self.inner(x)
