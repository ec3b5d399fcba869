"""Grad-CAM: the layer's feature maps weighed by their mean gradient, rectified and upsampled.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017: with A the (N, K, h, w) output
of a convolutional layer and f the objective,
``α_k = mean_ij ∂f/∂A^k_ij``, ``CAM = ReLU(Σ_k α_k A^k)``, bilinearly
upsampled to the input's H × W (``align_corners=False``, as Captum's
``LayerAttribution.interpolate``). The layer, its default and the private
model copy that hands its output over: :mod:`saliency_core.methods.cam_layer`.

The loss objective is used as −L (the target's log-probability): the ReLU
keeps what is evidence *for* the target, as for the score.
"""

from __future__ import annotations

import torch

from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.cam_layer import LAYER_PARAM, gradient_cam
from saliency_core.methods.declaration import AttributionMethod

TITLE = "Grad-CAM"


def weigh(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w): Σ_k mean_ij(g_k) · a_k, before the ReLU. a, g : (N, K, h, w)."""
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)


def run(req: Request, layer: str | None = None) -> MethodOutput:
    """attributions[obj] = Grad-CAM of f = s_y or −L at ``layer``; (N, 1, H, W) >= 0."""
    return gradient_cam(req, layer, TITLE, weigh)


METHOD = AttributionMethod(
    name="grad_cam", title=TITLE, citation="Selvaraju et al. 2017",
    summary="ReLU(Σ_k α_k A^k), α_k the mean gradient of feature map A^k, upsampled to the input",
    params=(LAYER_PARAM,),
    loss_objective="-L", output="layer", run=run, needs=frozenset({"conv_layer"}),
    empty_reason="Grad-CAM's ReLU left nothing: no feature map of its layer counts as evidence for this class",
    family="CAM",
)
