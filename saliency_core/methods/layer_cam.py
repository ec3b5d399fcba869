"""LayerCAM: each activation weighed by its own positive gradient, summed over channels, rectified.

Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class
Activation Maps for Localization", IEEE TIP 2021: with A the (N, K, h, w)
output of the layer and g = ∂f/∂A, ``CAM = ReLU(Σ_k ReLU(g^k) ⊙ A^k)``
(their Eq. 5–6), bilinearly upsampled to the input (as Grad-CAM,
:mod:`saliency_core.methods.cam_layer`). Position-wise weights let it use
shallow layers too; the paper's extra scaling of shallow layers' maps
(tanh, for fusing several layers) is not applied: one layer, one map.

The loss objective is used as −L = log p_y: the ReLUs keep what is evidence
*for* the target, as for the score.
"""

from __future__ import annotations

import torch

from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.cam_layer import LAYER_PARAM, gradient_cam
from saliency_core.methods.declaration import AttributionMethod

TITLE = "LayerCAM"


def weigh(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w): Σ_k ReLU(g_k) ⊙ a_k, before the ReLU. a, g : (N, K, h, w)."""
    return (g.clamp_min(0) * a).sum(dim=1, keepdim=True)


def run(req: Request, layer: str | None = None) -> MethodOutput:
    """attributions[obj] = LayerCAM of f = s_y or −L at ``layer``; (N, 1, H, W) >= 0."""
    return gradient_cam(req, layer, TITLE, weigh)


METHOD = AttributionMethod(
    name="layer_cam", title=TITLE, citation="Jiang et al. 2021",
    summary="ReLU(Σ_k ReLU(∂f/∂A^k) ⊙ A^k): each position weighed by its own positive gradient, upsampled",
    params=(LAYER_PARAM,),
    loss_objective="-L", output="layer", run=run, needs=frozenset({"conv_layer"}),
    empty_reason="LayerCAM's ReLU left nothing: no position of its layer counts as evidence for this class",
    family="CAM",
)
