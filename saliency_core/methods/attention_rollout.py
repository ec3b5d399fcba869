"""Attention rollout: the class token's attention to the patches, combined over the layers by matrix products.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
With A_l the (heads, T, T) attention of layer l (read by
:mod:`saliency_core.methods.attention_layers`):

- fuse the heads: Ā_l = mean over heads (``head_fusion`` "max" / "min" as in
  the common implementations, e.g. jacobgil's vit-explain);
- optionally zero the ``discard_ratio`` smallest entries of Ā_l (never the
  class token's attention to itself), as vit-explain does; 0 (the paper) keeps all;
- account for the residual connection: Â_l = 0.5 Ā_l + 0.5 I, rows renormalised to sum 1;
- roll out: R = Â_L ⋯ Â_2 Â_1.

The map is R's class-token row over the patch tokens (the class and
distillation tokens dropped), on the patch grid, bilinearly upsampled to the
input's H × W as the CAM methods' maps (``align_corners=False``).

Rollout has no target: the attention does not depend on the class, so the
map is the same for every target and for both objectives
(:attr:`~saliency_core.methods.declaration.AttributionMethod.uses_target`).
One forward pass per image, no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saliency_core.core.gradients import resolve_targets
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import MethodOutput, Request, image_rows
from saliency_core.methods.attention_layers import attention_copy, attentions, class_row_on_grid
from saliency_core.methods.declaration import AttributionMethod, Param, Passes

TITLE = "Attention rollout"
HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(a: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """(..., heads, T, T) -> (..., T, T): the mean, max or min over the heads."""
    if head_fusion == "mean":
        return a.mean(dim=-3)
    return a.amax(dim=-3) if head_fusion == "max" else a.amin(dim=-3)


def discard(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """``fused`` (B, T, T) with each image's ``ratio`` · T² smallest entries set to 0, the class token's
    attention to itself (entry [0, 0]) kept (vit-explain's rule)."""
    if ratio == 0:
        return fused
    flat = fused.flatten(1)
    smallest = flat.topk(int(flat.shape[1] * ratio), dim=1, largest=False).indices
    kept = flat.scatter(1, smallest, 0.0)
    kept[:, 0] = flat[:, 0]
    return kept.reshape(fused.shape)


def rollout(a: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """(B, T, T) rollout Â_L ⋯ Â_1 of attentions ``a`` (layers, B, heads, T, T), Â = rows-normalised
    0.5 Ā + 0.5 I."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    r = eye.expand(a.shape[1], -1, -1)
    for layer in a:
        fused = 0.5 * discard(fuse_heads(layer, head_fusion), discard_ratio) + 0.5 * eye
        r = (fused / fused.sum(dim=-1, keepdim=True)) @ r
    return r


def run(req: Request, head_fusion: str = "mean", discard_ratio: float = 0.0) -> MethodOutput:
    """attributions[obj] = the rollout's class-token row over the patches, upsampled; (N, 1, H, W) >= 0, the
    same for both objectives (rollout has no target)."""
    if not 0 <= discard_ratio < 1:
        raise InvalidInputError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    wrapped = attention_copy(req.module, TITLE)
    size = tuple(req.X.shape[2:])

    def step(start: int, stop: int):
        logits, a = attentions(req, wrapped, TITLE, start, stop)
        grid = class_row_on_grid(req, rollout(a, head_fusion, discard_ratio))
        up = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)  # as the CAM methods' maps
        return logits, resolve_targets(logits, req.y[start:stop]), {obj: up for obj in req.objectives}

    logits, targets, attributions = image_rows(req, step)
    return MethodOutput(attributions=attributions, maps={obj: a[:, 0] for obj, a in attributions.items()},
                        logits=logits, targets=targets)


def passes(**_params: object) -> Passes:
    """One forward pass per image, no gradient."""
    return Passes(gradient=0, forward=1)


METHOD = AttributionMethod(
    name="attention_rollout", title=TITLE, citation="Abnar & Zuidema 2020",
    summary="the class token's row of Π_l (0.5 Ā_l + 0.5 I), Ā_l layer l's attention averaged over heads, "
            "over the patches; the same map for every target and objective",
    params=(Param("head_fusion", "mean", str, "how each layer's heads are combined: mean (the paper), max or min",
                  HEAD_FUSIONS),
            Param("discard_ratio", 0.0, float, "the fraction of each layer's smallest attention entries set to "
                  "0 before the rollout (vit-explain's filter; 0: none, as the paper)", minimum=0.0, maximum=0.99)),
    loss_objective="L", output="layer", run=run, passes=passes, needs=frozenset({"attention_blocks"}),
    family="attention", uses_target=False,
)
