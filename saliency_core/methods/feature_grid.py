"""A layer's output as the (N, K, h, w) grid the CAM methods weigh, for transformers as for CNNs.

A CNN's layer gives (N, K, h, w) as it is. A vision transformer's gives
tokens, and the CAM methods need them folded back into the patch grid;
pytorch-grad-cam and torch-cam leave that to the user (a
``reshape_transform``). Here the layer's own module says how:

* **tokens** (N, T, C), a ViT or DeiT block: the first ``T − h·w`` tokens
  (class and distillation tokens) are dropped, the rest are the patch grid
  (h, w) = (H / p, W / p) for patches of p pixels (read from the model:
  torchvision's ``patch_size``, timm's ``patch_embed.patch_size`` and
  ``num_prefix_tokens``; for another model, the patch embedding's stride),
  channels first: ``tokens[:, prefix:].reshape(N, h, w, C).permute(0, 3, 1, 2)``,
  pytorch-grad-cam's documented transform.
* **channels last** (N, h, w, C), a Swin stage (torchvision's and timm's keep
  their feature maps channels-last): permuted to channels first.
* anything else: as it is.

The fold is done inside the private copy's wrapper, before the rest of the
network sees the output (:func:`fold`): the wrapper hands the grid to the CAM
method and passes on the same values, rebuilt from the grid, so the
gradient ∂f/∂A is the gradient at the grid itself and the logits are
unchanged. A ViT's default layer is the last block's first norm (its patch
tokens reach the class token through that block's attention; after it they
don't reach the logits at all), a Swin's and a ConvNeXt's the last stage
(:func:`transformer_layer`); :func:`block_layers` names the blocks the layer
picker offers beside the convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from saliency_core.core.model_access import is_conv2d, source_class
from saliency_core.errors import InvalidInputError

#: The most tokens before the patch grid (class, distillation, register tokens) a token layer may have.
MAX_PREFIX = 16

TOKENS, CHANNELS_LAST, CHANNELS_FIRST = "tokens", "channels last", "channels first"


def _kind(root: torch.nn.Module) -> str:
    """"vit" (torchvision), "timm_vit", "swin", "convnext" or "" from the module's structure and class (the class
    it was, for an unflattened torch.export program, whose attributes other than modules and tensors are gone)."""
    cls = source_class(root)
    name = cls.rsplit(".", 1)[-1].lower()
    if cls == "torchvision.models.vision_transformer.VisionTransformer" or (
            hasattr(root, "encoder") and hasattr(getattr(root.encoder, "layers", None), "__len__")
            and hasattr(root, "class_token")):
        return "vit"
    if isinstance(getattr(root, "blocks", None), torch.nn.Module) and (
            hasattr(root, "num_prefix_tokens")
            or cls.startswith(("timm.models.vision_transformer.VisionTransformer", "timm.models.deit."))):
        return "timm_vit"
    if "swin" in name:
        return "swin"
    if "convnext" in name:
        return "convnext"
    return ""


def _last_child(root: torch.nn.Module, container: str) -> str | None:
    module = getattr(root, container, None)
    if not isinstance(module, torch.nn.Module):
        return None
    children = [n for n, _ in module.named_children()]
    return f"{container}.{children[-1]}" if children else None


def transformer_layer(root: torch.nn.Module) -> str | None:
    """The CAM methods' default layer of a ViT/DeiT, Swin or ConvNeXt (torchvision's or timm's); None for
    another model. ViT: the last block's first norm; Swin and ConvNeXt: the last stage."""
    kind = _kind(root)
    if kind == "vit":
        last = _last_child(root.encoder, "layers")
        return f"encoder.{last}.ln_1" if last else None
    if kind == "timm_vit":
        last = _last_child(root, "blocks")
        return f"{last}.norm1" if last and hasattr(root.get_submodule(last), "norm1") else None
    if kind in ("swin", "convnext"):
        for container in ("features", "layers", "stages"):  # torchvision's Swin and ConvNeXt; timm's Swin; timm's
            last = _last_child(root, container)
            if last:
                return last
    return None


def block_layers(root: torch.nn.Module) -> list[str]:
    """The transformer blocks and stages (and a ViT block's first norm) the layer picker offers beside the
    convolutions, input to output; empty for another model."""
    kind = _kind(root)
    names: list[str] = []
    if kind in ("vit", "timm_vit"):
        container = "encoder.layers" if kind == "vit" else "blocks"
        norm = "ln_1" if kind == "vit" else "norm1"
        for child, block in root.get_submodule(container).named_children():
            names.append(f"{container}.{child}")
            if hasattr(block, norm):
                names.append(f"{container}.{child}.{norm}")
    elif kind in ("swin", "convnext"):
        for container in ("features", "layers", "stages"):
            module = getattr(root, container, None)
            if isinstance(module, torch.nn.Module):
                names += [f"{container}.{child}" for child, _ in module.named_children()]
        if kind == "swin" and isinstance(getattr(root, "norm", None), torch.nn.Module):
            names.append("norm")
    return names


def layout_of(root: torch.nn.Module, layer: str) -> str:
    """How ``layer``'s 4-D output is laid out: CHANNELS_LAST inside a Swin (not its convolutions), else
    CHANNELS_FIRST. (A 3-D output is tokens whatever the model.)"""
    if _kind(root) != "swin" or is_conv2d(root, layer):
        return CHANNELS_FIRST
    return CHANNELS_LAST if layer.split(".")[0] in ("features", "layers", "norm", "patch_embed") else CHANNELS_FIRST


def patch_size(root: torch.nn.Module) -> tuple[int, int] | None:
    """A token model's patch side (ph, pw) in pixels: torchvision's ``patch_size``, timm's
    ``patch_embed.patch_size``, else the stride of the first convolution whose stride equals its kernel (a patch
    embedding); None when there is none."""
    size = getattr(root, "patch_size", None)
    if size is None:
        size = getattr(getattr(root, "patch_embed", None), "patch_size", None)
    if size is None:
        for m in root.modules():
            if isinstance(m, torch.nn.Conv2d) and tuple(m.stride) == tuple(m.kernel_size) and m.stride[0] > 1:
                size = m.stride
                break
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def token_grid(tokens: int, image_hw: tuple[int, int], patch: tuple[int, int] | None,
               layer: str) -> tuple[int, int, int]:
    """(prefix, h, w): how ``tokens`` tokens of an image of ``image_hw`` pixels split into the tokens before the
    grid and an h × w patch grid. Without a patch size the grid is the largest square that leaves at most
    MAX_PREFIX tokens before it. InvalidInputError when the tokens don't fit."""
    if patch is not None:
        h, w = image_hw[0] // patch[0], image_hw[1] // patch[1]
    else:
        side = math.isqrt(tokens)
        h = w = side
    prefix = tokens - h * w
    if h < 1 or w < 1 or not 0 <= prefix <= MAX_PREFIX:
        raise InvalidInputError(
            f"layer {layer!r} gives {tokens} tokens, which don't fold into a patch grid"
            + (f" of {h} x {w} (patches of {patch[0]} x {patch[1]} px)" if patch else "")
            + f" after at most {MAX_PREFIX} class/distillation tokens; choose a transformer block or its norm")
    return prefix, h, w


Restore = Callable[[torch.Tensor], torch.Tensor]


def fold(out: torch.Tensor, layout: str, image_hw: tuple[int, int], patch: tuple[int, int] | None,
         layer: str) -> tuple[torch.Tensor, Restore]:
    """(grid (N, K, h, w), restore): ``out`` as the CAM grid, and the function that rebuilds the layer's output
    from the grid (with the tokens before the grid as they were), so that the network downstream runs on it.

    out : (N, T, C) tokens, or (N, h, w, C) channels last, or (N, K, h, w)
    """
    if out.dim() == 3:
        prefix, h, w = token_grid(out.shape[1], image_hw, patch, layer)
        n, _, c = out.shape
        grid = out[:, prefix:].reshape(n, h, w, c).permute(0, 3, 1, 2)
        head = out[:, :prefix]
        return grid, lambda g: torch.cat([head, g.permute(0, 2, 3, 1).reshape(n, h * w, c)], dim=1)
    if out.dim() == 4 and layout == CHANNELS_LAST:
        return out.permute(0, 3, 1, 2), lambda g: g.permute(0, 2, 3, 1)
    return out, lambda g: g
