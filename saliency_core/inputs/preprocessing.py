"""How a PIL image becomes model input: resize the shorter side, centre crop, scale, normalise.

Each registered model (:mod:`saliency_core.models.registry`) carries a
:class:`Preprocessing`; :meth:`saliency_core.models.registry.LoadedModel.preprocess`
applies it. The crop is kept as uint8 pixels beside the normalised tensor,
so maps are drawn over exactly what the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite checkpoints were trained on inputs scaled to
# [-1, 1]; timm's port of them uses the same. Checked on the samples: with
# these constants the embedded model gives "espresso" 0.95 on the coffee
# photo, against 0.78 with ImageNet's mean/std.
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes model input: resize the shorter side, centre crop, normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def describe(self) -> str:
        return (
            f"resize shorter side to {self.resize} ({self.interpolation}), centre crop "
            f"{self.crop}x{self.crop}, scale to [0, 1], normalise mean={list(self.mean)} "
            f"std={list(self.std)}"
        )


@dataclass
class PreparedBatch:
    """Model input and the exact pixels it was made from.

    Attributes
    ----------
    x : (N, 3, H, W) float32 tensor, normalised for the model, on CPU
    display : (N, H, W, 3) uint8 array, the resized and cropped images the
        model saw, pixel for pixel; draw maps over these.
    """

    x: torch.Tensor
    display: np.ndarray


# Above this many pixels, the resized image is not made whole (see crop_image).
MAX_RESIZED_PIXELS = 16 * 256 * 256


def crop_image(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize the shorter side to ``prep.resize`` and centre-crop ``prep.crop``.

    Works for any size, 1x1 and 10000x1 included: the shorter side is scaled
    up or down to ``prep.resize`` and the longer one keeps the aspect ratio
    (at least ``prep.crop`` pixels so the crop is always full).

    For ordinary photos the whole image is resized, then cropped, exactly as
    torchvision's ``Resize`` + ``CenterCrop`` do. An extreme aspect ratio would
    make that resized image huge (10000x1 -> 2,560,000x256: seconds and
    gigabytes); above :data:`MAX_RESIZED_PIXELS` only the cropped region (plus a
    margin for the filter) is resampled, with Pillow's ``box``, at the same
    scale. Those pixels can differ from the whole-image path by a few levels.
    """
    image = image.convert("RGB")
    w, h = image.size
    scale = prep.resize / min(w, h)
    new_w = max(prep.crop, round(w * scale))
    new_h = max(prep.crop, round(h * scale))
    left = (new_w - prep.crop) // 2
    top = (new_h - prep.crop) // 2
    resample = _RESAMPLE[prep.interpolation]
    if new_w * new_h <= MAX_RESIZED_PIXELS:
        # Pillow's resize with a reducing filter antialiases like torchvision's
        # antialias=True on PIL input.
        image = image.resize((new_w, new_h), resample)
        return image.crop((left, top, left + prep.crop, top + prep.crop))
    margin = 8  # output pixels: wider than any filter's reach
    x0, y0 = max(0, left - margin), max(0, top - margin)
    x1, y1 = min(new_w, left + prep.crop + margin), min(new_h, top + prep.crop + margin)
    sx, sy = w / new_w, h / new_h
    part = image.resize((x1 - x0, y1 - y0), resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    return part.crop((left - x0, top - y0, left - x0 + prep.crop, top - y0 + prep.crop))


def normalize(crops: np.ndarray, prep: Preprocessing, device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised with ``prep``'s mean and std, on ``device``.

    The uint8 crops travel to the device first (a quarter of the float32
    bytes; pinned for CUDA) and are scaled there.
    """
    crops = np.ascontiguousarray(crops)
    # torch wants writable memory; a read-only view (np.asarray of a PIL image, a cached crop) is copied.
    x = torch.from_numpy(crops if crops.flags.writeable else crops.copy())
    device = torch.device(device)
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
