"""HiResCAM: the gradient times the activation, summed over channels, rectified.

Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks", arXiv:2011.08891, 2020:
with A the (N, K, h, w) output of the layer and g = ∂f/∂A,
``CAM = ReLU(Σ_k g^k ⊙ A^k)``, bilinearly upsampled to the input (as
Grad-CAM, :mod:`saliency_core.methods.cam_layer`). Grad-CAM averages g over
positions first; HiResCAM does not. Where the layer is followed by global
average pooling and one linear layer, g is the same at every position and
the two are equal; elsewhere HiResCAM shows which positions move f. The paper's map is
signed; its positive part is kept (as Grad-CAM's ReLU and pytorch-grad-cam),
what counts as evidence for the target.

The loss objective is used as −L = log p_y, so positive is evidence for the target.
"""

from __future__ import annotations

import torch

from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.cam_layer import LAYER_PARAM, gradient_cam
from saliency_core.methods.declaration import AttributionMethod

TITLE = "HiResCAM"


def weigh(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w): Σ_k g_k ⊙ a_k, before the ReLU. a, g : (N, K, h, w)."""
    return (g * a).sum(dim=1, keepdim=True)


def run(req: Request, layer: str | None = None) -> MethodOutput:
    """attributions[obj] = HiResCAM of f = s_y or −L at ``layer``; (N, 1, H, W) >= 0."""
    return gradient_cam(req, layer, TITLE, weigh)


METHOD = AttributionMethod(
    name="hires_cam", title=TITLE, citation="Draelos & Carin 2020",
    summary="ReLU(Σ_k ∂f/∂A^k ⊙ A^k): the gradient times the activation, position by position, upsampled",
    params=(LAYER_PARAM,),
    loss_objective="-L", output="layer", run=run, needs=frozenset({"conv_layer"}),
    empty_reason="HiResCAM's ReLU left nothing: no position of its layer counts as evidence for this class",
    family="CAM",
)
