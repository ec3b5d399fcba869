"""The attention methods' reading of a vision transformer: its attention matrices, per layer, and the patch grid.

Attention rollout and gradient-weighted attention start from the (N, heads,
T, T) attention matrices A of every self-attention block, T the tokens
(prefix tokens first: the class token, DeiT's distillation token, then the
patches in row-major order). The models whose attention this code can read
(:func:`attention_modules`):

- torchvision ``VisionTransformer``: each ``EncoderBlock.self_attention`` is an
  ``nn.MultiheadAttention``, called with ``need_weights=False``;
- timm ``VisionTransformer`` and DeiT (``VisionTransformerDistilled``): each
  block's ``timm.models.vision_transformer.Attention``, fused (SDPA) when timm can.

Neither hands its attention over, so the matrices are computed here from the
block's own weights: ``softmax(q kᵀ / √d)``, q and k from the block's own
projection (``in_proj_weight`` / ``qkv``, timm's q/k norms and scale), the
output ``A v`` through its own output projection: the same function, so the
logits are the model's (to rounding: tests/methods/test_attention_maps.py).
Swin's windowed attention and other attention modules are not read (the
need "attention_blocks" is then unmet).

The shared model is never hooked or changed: the methods run a private copy
of its structure (sharing the weights, :func:`saliency_core.methods._common.private_copy`)
in which each attention module is wrapped by one that computes A explicitly
and hands it, in the autograd graph, to the calling thread.
"""

from __future__ import annotations

import sys
import threading

import torch
import torch.nn.functional as F

from saliency_core.core.gradients import VJPs
from saliency_core.core.model_access import memory_format_of, unwrap_module
from saliency_core.core.model_output import checked_forward
from saliency_core.core.precision import precision_context
from saliency_core.errors import InvalidInputError
from saliency_core.methods import feature_grid
from saliency_core.methods._common import Request, private_copy, vjps

_RECORDED = threading.local()

#: What the need "attention_blocks" accepts, in words (for refusals).
READABLE = ("torchvision VisionTransformer (nn.MultiheadAttention in its encoder blocks) and timm ViT/DeiT "
            "(timm.models.vision_transformer.Attention blocks)")


# ---------------------------------------------------------------- which modules


def _loaded(module_name: str, name: str) -> type | None:
    """A class of a module already imported, else None: a model built from timm or torchvision has imported it,
    so checking every page's model costs no import (timm is optional)."""
    return getattr(sys.modules.get(module_name), name, None)


def _torchvision_block_type() -> type | None:
    return _loaded("torchvision.models.vision_transformer", "EncoderBlock")


def _timm_attention_type() -> type | None:
    return _loaded("timm.models.vision_transformer", "Attention")


def _readable_mha(mha: torch.nn.Module) -> bool:
    """An nn.MultiheadAttention whose q, k, v come from one in-projection and nothing else is added."""
    return (isinstance(mha, torch.nn.MultiheadAttention) and mha._qkv_same_embed_dim and mha.bias_k is None
            and mha.bias_v is None and not mha.add_zero_attn)


def attention_modules(module: torch.nn.Module) -> list[str]:
    """Dotted names of the self-attention modules this code reads, in registration order; [] for a TorchScript
    module or a model with none (a CNN, Swin)."""
    if isinstance(module, torch.jit.ScriptModule):
        return []
    block, timm_attention = _torchvision_block_type(), _timm_attention_type()
    names = []
    for name, m in module.named_modules():
        if block is not None and isinstance(m, block) and _readable_mha(getattr(m, "self_attention", None)):
            names.append(f"{name}.self_attention" if name else "self_attention")
        elif (timm_attention is not None and isinstance(m, timm_attention)
              and type(m).forward is timm_attention.forward):  # a subclass with its own forward is not read
            names.append(name)
    return names


def _class_token_missing(module: torch.nn.Module) -> bool:
    """A timm ViT built without a class token (global average pooling): no class row to read."""
    vit = _loaded("timm.models.vision_transformer", "VisionTransformer")
    return vit is not None and any(isinstance(m, vit) and getattr(m, "cls_token", None) is None
                                   for m in module.modules())


def has_attention_blocks(module: torch.nn.Module) -> bool:
    """The need "attention_blocks": readable self-attention blocks and a class token."""
    return bool(attention_modules(module)) and not _class_token_missing(module)


# ---------------------------------------------------------------- the private copy


def _record(a: torch.Tensor) -> None:
    recorded = getattr(_RECORDED, "attentions", None)
    if recorded is not None:
        recorded.append(a)


def _no_masks(*masks: object) -> None:
    if any(m is not None and m is not False for m in masks):
        raise InvalidInputError("the attention methods read unmasked self-attention; this model's is masked")


class _RecordingMultiheadAttention(torch.nn.Module):
    """``nn.MultiheadAttention``'s forward with the attention computed explicitly and recorded.

    Same call and result as the wrapped module's (output, weights averaged over heads or None): q, k, v from
    its ``in_proj_weight``/``in_proj_bias``, ``softmax(q kᵀ / √d)``, ``out_proj``; no dropout (eval mode).
    """

    def __init__(self, inner: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        _no_masks(key_padding_mask, attn_mask, is_causal)
        m = self.inner
        if not m.batch_first:  # (T, B, E) -> (B, T, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_q, w_k, w_v = m.in_proj_weight.chunk(3)
        b_q, b_k, b_v = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None, None, None)
        heads, d = m.num_heads, m.head_dim

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T, E) -> (B, heads, T, d)
            return t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

        q, k, v = split(F.linear(query, w_q, b_q)), split(F.linear(key, w_k, b_k)), split(F.linear(value, w_v, b_v))
        a = (q @ k.transpose(-2, -1) * d ** -0.5).softmax(dim=-1)
        _record(a)
        out = (a @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], m.embed_dim)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
        if not m.batch_first:
            out = out.transpose(0, 1)
        weights = (a.mean(dim=1) if average_attn_weights else a) if need_weights else None
        return out, weights


class _RecordingTimmAttention(torch.nn.Module):
    """timm ``Attention.forward`` on its non-fused path (``softmax(q·scale kᵀ)``), the attention recorded."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        _no_masks(attn_mask, is_causal)
        m = self.inner
        b, n, _ = x.shape
        attn_dim = m.num_heads * m.head_dim
        gate = getattr(m, "gate", None)
        gate = gate(x).sigmoid() if gate is not None else None
        q, k, v = m.qkv(x).reshape(b, n, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = m.q_norm(q), m.k_norm(k)
        a = ((q * m.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        _record(a)
        out = m.norm((a @ v).transpose(1, 2).reshape(b, n, attn_dim))
        if gate is not None:
            out = out * gate
        return m.proj(out)


def _wrap_attention(clone: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        inner = parent._modules[child]
        wrapper = (_RecordingMultiheadAttention if isinstance(inner, torch.nn.MultiheadAttention)
                   else _RecordingTimmAttention)
        parent._modules[child] = wrapper(inner)
    return clone


def attention_copy(module: torch.nn.Module, title: str) -> torch.nn.Module:
    """A structure copy of ``module`` (sharing its weights) whose attention modules record their attention
    (cached); InvalidInputError naming what is readable for any other model."""
    names = attention_modules(module)
    if not names:
        raise InvalidInputError(
            f"{title} reads the global self-attention of a ViT/DeiT-style transformer: {READABLE}. "
            f"{type(module).__name__} has none that it can read (a CNN, Swin's windowed attention, TorchScript)")
    if _class_token_missing(module):
        raise InvalidInputError(f"{title} reads the class token's row of the attention; this model has no class "
                                "token (global average pooling)")
    return private_copy(module, ("attention", tuple(names)), lambda clone: _wrap_attention(clone, names))


# ---------------------------------------------------------------- passes


def _recorded(title: str) -> tuple[torch.Tensor, ...]:
    attentions = tuple(_RECORDED.attentions)
    if not attentions:
        raise InvalidInputError(f"{title}: no attention block ran in the model's forward pass")
    if len({a.shape for a in attentions}) != 1:
        raise InvalidInputError(f"{title} needs every layer's attention over the same tokens; got shapes "
                                f"{sorted({tuple(a.shape) for a in attentions})}")
    return attentions


def attentions(req: Request, wrapped: torch.nn.Module, title: str, start: int, stop: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C), A (layers, B, heads, T, T)) of images [start, stop) through ``wrapped``, forward only,
    in the request's dtype; the logits checked."""
    x = req.X[start:stop].detach().to(device=req.device, dtype=req.dtype)
    x = x.contiguous(memory_format=memory_format_of(req.module))
    _RECORDED.attentions = []
    try:
        with torch.no_grad(), precision_context(req.device, req.precision):
            logits = checked_forward(wrapped, x, req.check)
            a = torch.stack(_recorded(title))
    finally:
        _RECORDED.attentions = None
    return logits.to(req.dtype), a.to(req.dtype)


def attentions_and_gradients(req: Request, wrapped: torch.nn.Module, title: str, start: int, stop: int) -> VJPs:
    """One forward pass of images [start, stop) through ``wrapped``, one VJP to every layer's attention per
    objective (f = s_y, or the loss signed as the method declares: ``req.loss_sign``).

    Returns VJPs with ``wrt`` A (layers, B, heads, T, T) and ``grads[obj]`` ∂f/∂A stacked the same way, both in
    the request's dtype.
    """
    _RECORDED.attentions = []
    try:
        out = vjps(req, wrapped, start, stop, wrt=lambda: _recorded(title))
    finally:
        _RECORDED.attentions = None
    return VJPs(out.logits, out.targets, {o: torch.stack(g).to(req.dtype) for o, g in out.grads.items()},
                torch.stack(out.wrt).to(req.dtype))


def class_row_on_grid(req: Request, r: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w): the class token's row of ``r`` (B, T, T) over the patch tokens, on the patch grid.

    The patch grid is the input's H × W over the model's patch size; the prefix tokens (class, distillation,
    registers) are the T − h·w tokens before the patches, at least the class token
    (:func:`~saliency_core.methods.feature_grid.token_grid`, as the CAM methods fold a token layer).
    """
    tokens = r.shape[-1]
    prefix, h, w = feature_grid.token_grid(tokens, tuple(req.X.shape[2:]), feature_grid.patch_size(
        unwrap_module(req.model)), "the attention")  # the CAM methods' fold of a token layer
    if prefix < 1:
        raise InvalidInputError(f"the attention is over {tokens} tokens, which is not a class token and an "
                                f"{h} × {w} grid of patches: this model's token layout is not read")
    return r[:, 0, prefix:].reshape(r.shape[0], 1, h, w)
