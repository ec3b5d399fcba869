"""Gradient-weighted attention: each layer's attention weighted by its gradient, accumulated over the layers.

Chefer, Gur & Wolf, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021 (the
self-attention rule, their eq. 5-6 and their ViT notebook). With A_l the
(heads, T, T) attention of layer l (read by
:mod:`saliency_core.methods.attention_layers`) and f the objective:

- Ē_l = mean over heads of (∂f/∂A_l ⊙ A_l)⁺ (the positive part);
- R = I, then R ← R + Ē_l · R for l = 1 … L.

The map is R's class-token row over the patch tokens (the class and
distillation tokens dropped), on the patch grid, bilinearly upsampled to the
input's H × W as the CAM methods' maps (``align_corners=False``). It is >= 0.

The loss objective is used as −L (the target's log-probability): the
positive part keeps what is evidence *for* the target, as for the score.
One forward pass and one backward pass per objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saliency_core.methods._common import MethodOutput, Request, image_rows
from saliency_core.methods.attention_layers import attention_copy, attentions_and_gradients, class_row_on_grid
from saliency_core.methods.declaration import AttributionMethod

TITLE = "Gradient-weighted attention"


def relevance(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(B, T, T) relevance R of attentions ``a`` and their gradients ``g`` (layers, B, heads, T, T)."""
    r = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand(a.shape[1], -1, -1)
    for a_l, g_l in zip(a, g, strict=True):
        r = r + (g_l * a_l).clamp(min=0).mean(dim=1) @ r
    return r


def run(req: Request) -> MethodOutput:
    """attributions[obj] = the class-token row of R for f = s_y or −L, upsampled; (N, 1, H, W) >= 0."""
    wrapped = attention_copy(req.module, TITLE)
    size = tuple(req.X.shape[2:])

    def step(start: int, stop: int):
        logits, targets, grads, a = attentions_and_gradients(req, wrapped, TITLE, start, stop)
        maps = {obj: F.interpolate(class_row_on_grid(req, relevance(a, g)), size=size, mode="bilinear",
                                   align_corners=False)  # as the CAM methods' maps
                for obj, g in grads.items()}
        return logits, targets, maps

    logits, targets, attributions = image_rows(req, step)
    return MethodOutput(attributions=attributions, maps={obj: a[:, 0] for obj, a in attributions.items()},
                        logits=logits, targets=targets)


METHOD = AttributionMethod(
    name="chefer_attention", title=TITLE, citation="Chefer, Gur & Wolf 2021",
    summary="the class token's row of R, R ← R + mean_heads((∂f/∂A_l ⊙ A_l)⁺) · R from R = I over the layers, "
            "over the patches",
    params=(),
    loss_objective="-L", output="layer", run=run, needs=frozenset({"attention_blocks"}),
    empty_reason="no attention had a positive gradient-weighted value from the class token to a patch",
    family="attention",
)
