"""pytorch-grad-cam as the CAM methods' oracle, before its min-max scaling, and the models to run it on.

pytorch-grad-cam (``pytorch_grad_cam``, PyPI grad-cam 1.5.7) returns each
map ReLU-ed, min-max scaled to [0, 1] and resized with OpenCV. Its
``scale_cam_image`` is replaced by the identity here, so what it returns
is its layer's (N, h, w) map after the ReLU, before any scaling: the
definition itself. Ours is that map bilinearly upsampled
(``align_corners=False``), so the oracle's map is upsampled the same way
before the two are compared.

Its targets are callables on one image's (C,) logits: the score is
``ClassifierOutputTarget(y)`` (s_y); for the loss, :class:`LogProb` gives
log p_y = −L, the loss as every CAM method here uses it.

It runs on a copy of the model (it registers hooks and calls
``.backward()``); the input is given ``requires_grad`` so that a model
with frozen weights still has a gradient at the layer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F


class LogProb:
    """pytorch-grad-cam target: log p_y = log_softmax(logits)[y] = −L, for one image's (C,) logits."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(output, dim=-1)[..., self.category]


def targets(objective: str, y) -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(int(c)) if objective == "score" else LogProb(int(c)) for c in y]


def oracle_coarse(cam_class, model: torch.nn.Module, layer: str, X: torch.Tensor, y, objective: str,
                  monkeypatch, **cam_kwargs) -> torch.Tensor:
    """(N, 1, h, w) float64: pytorch-grad-cam's map of ``layer`` after its ReLU and before its min-max scaling."""
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    twin = copy.deepcopy(model).eval()
    with cam_class(model=twin, target_layers=[twin.get_submodule(layer)], **cam_kwargs) as cam:
        out = cam(input_tensor=X.clone().requires_grad_(True), targets=targets(objective, y))
    return torch.from_numpy(np.asarray(out, dtype=np.float64))[:, None]


def upsampled(coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W): the oracle's coarse map upsampled as the dashboard's CAMs are (bilinear, align_corners=False)."""
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def assert_same_map(ours: torch.Tensor, oracle: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal to ``rtol`` of the oracle's largest value (a sum over channels cancels: its small values are
    differences of large ones), and not all zeros."""
    oracle = oracle.to(ours.dtype)
    peak = float(oracle.abs().amax())
    assert peak > 0, "the oracle's map is zero everywhere: the comparison would show nothing"
    torch.testing.assert_close(ours, oracle, rtol=rtol, atol=rtol * peak)


def small_cnn(seed: int = 0) -> torch.nn.Module:
    """Conv-ReLU-conv-ReLU-conv-ReLU-pool-linear, eval mode, frozen: the CAM layer "2" (8 channels at
    16 × 16 for a 32 px input) is followed by a convolution and a ReLU, so its gradient varies by position."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def small_batch(n: int = 3, size: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([0, 3, 4, 1][:n])


def check_against_oracle(method: str, cam_class, model, module: torch.nn.Module, layer: str, X: torch.Tensor,
                         y, monkeypatch, rtol: float = 1e-5, reshape_transform=None, **params):
    """``saliency_core.attribute(model, X, y, method, layer=layer)`` for both objectives equals pytorch-grad-cam's
    ``cam_class`` on ``module`` (the model's module, given ``reshape_transform`` for a transformer's tokens),
    upsampled alike; returns the result."""
    from saliency_core import attribute

    r = attribute(model, X, y, method, ("score", "loss"), layer=layer, **params)
    assert r.params["layer"] == layer and r.reduction == "none"
    for objective in ("score", "loss"):
        ref = upsampled(oracle_coarse(cam_class, module, layer, X, r.targets, objective, monkeypatch,
                                      **({"reshape_transform": reshape_transform} if reshape_transform else {})),
                        tuple(X.shape[2:]))
        assert r.attributions[objective].shape == (X.shape[0], 1, *X.shape[2:])
        assert_same_map(r.attributions[objective], ref, rtol)
        assert torch.equal(r.maps[objective], r.attributions[objective][:, 0])
    return r
