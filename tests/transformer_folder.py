"""Small timm transformers saved as a user saves them: a state dict and a sidecar in the own-models folder.

Random weights, built offline (``pretrained=False``); the sidecar names the
architecture as ``timm:<name>`` with ``architecture_args`` that shrink it to a
few thousand parameters, and leaves the preprocessing to timm's configuration.
Shared by tests/test_timm_models.py and the browser test that opens them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CLASSES = ["tabby", "tiger", "lynx"]

#: stem -> (timm name, architecture_args): a ViT (DeiT, class token) and a Swin, 64 px images.
MODELS = {
    "tiny_deit": ("deit_tiny_patch16_224", {"img_size": 64, "patch_size": 16, "depth": 2, "embed_dim": 32,
                                            "num_heads": 2}),
    "tiny_swin": ("swin_tiny_patch4_window7_224", {"img_size": 64, "patch_size": 4, "embed_dim": 8,
                                                   "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}),
}


def build(stem: str, seed: int = 0) -> torch.nn.Module:
    import timm

    name, args = MODELS[stem]
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=len(CLASSES), **args).eval()


def write(folder: Path, stem: str, **sidecar) -> torch.nn.Module:
    """``stem``.pth (the state dict) and ``stem``.json in ``folder``; returns the model written."""
    net = build(stem)
    torch.save(net.state_dict(), folder / f"{stem}.pth")
    name, args = MODELS[stem]
    data = {"architecture": f"timm:{name}", "architecture_args": args, "classes": CLASSES, **sidecar}
    (folder / f"{stem}.json").write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return net
