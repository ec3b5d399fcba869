"""Grad-CAM++: Grad-CAM with each position's positive gradient weighed by a higher-order coefficient.

Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Generalized
Gradient-based Visual Explanations for Deep Convolutional Networks", WACV
2018: with A the (N, K, h, w) output of the layer and g = ∂f/∂A,

``α^k_ij = g_ij² / (2 g_ij² + Σ_ab A^k_ab · g_ij³)`` (their Eq. 19; 0 where the
denominator is 0), ``w_k = Σ_ij α^k_ij ReLU(g_ij)``, ``CAM = ReLU(Σ_k w_k A^k)``,

bilinearly upsampled to the input (as Grad-CAM, :mod:`saliency_core.methods.cam_layer`).
The paper derives α for Y = exp(f), whose factor exp(f) > 0 only scales the
map, so it is left out (as in pytorch-grad-cam). pytorch-grad-cam adds 1e-6
to the denominator; that is not in the paper, and at a late layer, where
most g² are below 1e-6 (59 % at EfficientNet-Lite0's last block for the
coffee photo), it moves the map by up to 15 % of its peak, so it is not
done here (the tests compare with pytorch-grad-cam at its eps).

The loss objective is used as −L = log p_y, so exp(f) is p_y: the paper's
Y is then the target's probability (the score's Y is exp(s_y)).
"""

from __future__ import annotations

import torch

from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.cam_layer import LAYER_PARAM, gradient_cam
from saliency_core.methods.declaration import AttributionMethod

TITLE = "Grad-CAM++"


def weigh(a: torch.Tensor, g: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """(N, 1, h, w): Σ_k w_k a_k before the ReLU, w_k = Σ_ij α^k_ij ReLU(g^k_ij). a, g : (N, K, h, w).

    ``eps`` is added to α's denominator (0: the paper; pytorch-grad-cam's 1e-6, for comparing with it).
    """
    g2 = g * g
    denominator = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g + eps
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
    w = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(dim=1, keepdim=True)


def run(req: Request, layer: str | None = None) -> MethodOutput:
    """attributions[obj] = Grad-CAM++ of f = s_y or −L at ``layer``; (N, 1, H, W) >= 0."""
    return gradient_cam(req, layer, TITLE, weigh)


METHOD = AttributionMethod(
    name="grad_cam_plus_plus", title=TITLE, citation="Chattopadhay et al. 2018",
    summary="ReLU(Σ_k w_k A^k), w_k = Σ_ij α_ij ReLU(∂f/∂A^k_ij) with higher-order weights α, upsampled",
    params=(LAYER_PARAM,),
    loss_objective="-L", output="layer", run=run, needs=frozenset({"conv_layer"}),
    empty_reason="Grad-CAM++'s ReLU left nothing: no feature map of its layer counts as evidence for this class",
    family="CAM",
)
