"""Baselines: what removed pixels become (deletion/insertion) and where an attribution path starts
(Integrated Gradients, Gradient × input). One vocabulary for both, named by what the image looks like.

A baseline is an image of the same shape as the input, in the model's
normalised space: a Gaussian blur of the image (RISE's insertion baseline),
the image's own mean colour, black pixels through the model's own
normalisation, or the dataset's mean colour (0 after normalisation).

The old name "zeros" (until the next release) meant two images: black pixels
for deletion/insertion where the normalisation was known (0 after
normalisation where not), and 0 after normalisation for attribution. Each
reader maps it to the image it made there, with a DeprecationWarning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from saliency_core.core import deprecation
from saliency_core.core.model_access import ModelLike, preprocessing_of
from saliency_core.errors import InvalidInputError

#: Every baseline by name, with what the page says it is ("pixels replaced by the <label>").
BASELINE_LABELS = {"blur": "blurred image", "mean": "image's mean colour", "black": "black image",
                   "dataset_mean": "dataset's mean colour (0 after normalisation)"}
BASELINES = tuple(BASELINE_LABELS)
OLD_ZEROS = "zeros"  # the old name, see the module docstring

# RISE blurs with a Gaussian of sigma about 5 px at the usual 224 px input;
# other sizes scale it so the baseline looks the same at any resolution.
BLUR_SIGMA_224 = 5.0


def normalisation_of(model: ModelLike, mean: Sequence[float] | None,
                     std: Sequence[float] | None) -> tuple[Sequence[float], Sequence[float]] | None:
    """The (mean, std) that normalised the model's input: as given, else the LoadedModel's; None if unknown."""
    if (mean is None) != (std is None):
        raise InvalidInputError("give both mean and std, or neither")
    if mean is None:
        prep = preprocessing_of(model)
        if prep is None or not hasattr(prep, "mean") or not hasattr(prep, "std"):
            return None
        mean, std = prep.mean, prep.std
    if len(mean) != 3 or len(std) != 3 or any(float(s) == 0 for s in std):
        raise InvalidInputError(f"mean and std must be three numbers each (std non-zero), got {mean!r}, {std!r}")
    return mean, std


def _gaussian_kernel(sigma: float, radius: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


#: :func:`gaussian_blur`'s paddings: "reflect" (the blur baseline's) and "zeros" (scipy's mode="constant").
PADDINGS = ("reflect", "zeros")


def gaussian_blur(X: torch.Tensor, sigma: float, *, padding: str = "reflect",
                  truncate: float | None = None) -> torch.Tensor:
    """Gaussian blur of every channel, as two 1-D passes (a 2-D Gaussian is the product of two 1-D ones).

    Parameters
    ----------
    X : (N, C, H, W) float tensor, any device.
    sigma : standard deviation in pixels, > 0.
    padding : what lies beyond the border. "reflect" (the blur baseline's): the image mirrored, the kernel
        radius ceil(2 sigma) cut to the image size (reflect padding cannot be wider than the image) and
        normalised over what is left. "zeros": 0, as ``scipy.ndimage.gaussian_filter(mode="constant")``
        (PAIR's Blur IG): the kernel is scipy's, radius ``int(truncate * sigma + 0.5)``, normalised over that
        whole radius, so near the border the blur fades towards 0; its taps beyond the image only ever meet
        the 0s, so they are dropped, and each pass is one product with an (size, size) band matrix (fast for
        a sigma as large as the image, where a convolution would take hundreds of taps).
    truncate : "zeros" only: the kernel's radius in sigmas (None: scipy's 4.0).

    Returns
    -------
    (N, C, H, W) tensor, same dtype and device; ``X`` is not modified.
    """
    if not sigma > 0 or not math.isfinite(sigma):
        raise InvalidInputError(f"blur sigma must be a positive number, got {sigma!r}")
    if padding not in PADDINGS:
        raise InvalidInputError(f"blur padding must be one of {PADDINGS}, got {padding!r}")
    if padding == "zeros":
        return _blur_zeros(X, float(sigma), 4.0 if truncate is None else float(truncate))
    _, c, h, w = X.shape
    x = X.detach().contiguous()
    out = x
    for dim, size in ((3, w), (2, h)):
        radius = min(math.ceil(2 * sigma), size - 1)
        if radius < 1:
            continue
        k = _gaussian_kernel(sigma, radius, x.device, x.dtype)
        shape = (1, 1, 1, -1) if dim == 3 else (1, 1, -1, 1)
        pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
        weight = k.view(shape).expand(c, -1, -1, -1)  # one filter per channel (groups=c)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), weight, groups=c)
    return out if out is not x else x.clone()


def _band(sigma: float, radius: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size, size) matrix M with M[i, j] = k[j − i] for |j − i| <= radius: a zero-padded 1-D blur as M @ x."""
    k = _gaussian_kernel(sigma, radius, device, torch.float64)
    offset = torch.arange(size, device=device)
    offset = offset.view(1, -1) - offset.view(-1, 1)  # j − i
    inside = offset.abs() <= radius
    return torch.where(inside, k[(offset + radius).clamp(0, 2 * radius)], 0.0).to(dtype)


def _blur_zeros(X: torch.Tensor, sigma: float, truncate: float) -> torch.Tensor:
    """:func:`gaussian_blur` with padding "zeros": scipy's kernel (radius int(truncate sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = X.detach()
    if radius < 1:
        return x.clone()  # scipy's kernel is [1]: the image itself
    h, w = x.shape[-2:]
    rows = _band(sigma, radius, h, x.device, x.dtype)
    cols = _band(sigma, radius, w, x.device, x.dtype)
    return rows @ x @ cols.T  # (M_h x)[i] = Σ_j k[j − i] x[j]; along the width, x M_wᵀ


def read_old_name(baseline: object, zeros: str) -> object:
    """``baseline``, or for the old name "zeros" (with a DeprecationWarning) ``zeros``: the image it made there."""
    if isinstance(baseline, str) and baseline == OLD_ZEROS:
        deprecation.warn(f'baseline "zeros" is deprecated: here it was the {BASELINE_LABELS[zeros]}; write '
                         f'baseline="{zeros}"')
        return zeros
    return baseline


def deletion_baseline(baseline: str, model: ModelLike, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> tuple[str, tuple[Sequence[float], Sequence[float]] | None]:
    """Deletion/insertion's baseline checked: (its name, the normalisation "black" needs, else None).

    The old "zeros" is read as "black" where the normalisation is known (given, or a LoadedModel's), else as
    "dataset_mean": the images it made. "black" without a known normalisation is an InvalidInputError.
    """
    if baseline == OLD_ZEROS:
        baseline = read_old_name(baseline, "black" if normalisation_of(model, mean, std) else "dataset_mean")
    if baseline not in BASELINES:
        raise InvalidInputError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline != "black":
        return baseline, None
    norm = normalisation_of(model, mean, std)
    if norm is None:
        raise InvalidInputError('baseline "black" needs the model\'s normalisation: pass a LoadedModel, or mean '
                                'and std (three numbers each)')
    return baseline, norm


def make_baseline(X: torch.Tensor, baseline: str = "blur", *, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, blur_sigma: float | None = None) -> torch.Tensor:
    """The baseline image: what deleted pixels become, where insertion and an attribution path start.

    Parameters
    ----------
    X : (N, 3, H, W) float tensor, normalised for the model.
    baseline : a name from :data:`BASELINES`. "blur": Gaussian blur of ``X``
        (RISE's insertion baseline), sigma ``blur_sigma`` or 5 px scaled by
        min(H, W) / 224; "mean": each image's own mean colour, per channel;
        "black": black pixels, intensity 0 normalised, ``(0 - mean) / std``
        (needs ``mean`` and ``std``); "dataset_mean": 0 in the normalised
        space, the mean colour of the dataset the normalisation came from.
        The old "zeros" is "black" with ``mean``/``std``, else "dataset_mean".
    mean, std : the model's per-channel normalisation (three floats each).

    Returns
    -------
    (N, 3, H, W) tensor, same dtype and device as ``X``.
    """
    if (mean is None) != (std is None):
        raise InvalidInputError("give both mean and std, or neither")
    baseline = read_old_name(baseline, "black" if mean is not None else "dataset_mean")
    if baseline not in BASELINES:
        raise InvalidInputError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    x = X.detach()
    if baseline == "blur":
        return gaussian_blur(x, resolve_blur_sigma(x.shape, blur_sigma))
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if baseline == "dataset_mean":
        return torch.zeros_like(x)
    if mean is None:
        raise InvalidInputError('baseline "black" needs the model\'s normalisation: give mean and std')
    m = torch.tensor([float(v) for v in mean], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor([float(v) for v in std], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return ((0.0 - m) / s).expand_as(x).clone()


def resolve_blur_sigma(shape: Sequence[int], blur_sigma: float | None = None) -> float:
    """The "blur" baseline's sigma for images of ``shape`` (..., H, W): ``blur_sigma``, else 5 px * min(H, W) / 224."""
    if blur_sigma is not None:
        return float(blur_sigma)
    return BLUR_SIGMA_224 * min(shape[-2:]) / 224.0
