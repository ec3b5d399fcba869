"""Bundled sample photographs (from scikit-image, so no network is needed) with their ImageNet labels."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from saliency_core.errors import UnknownSampleError
from saliency_core.inputs.images import pixels_sha256


@dataclass(frozen=True)
class SampleImage:
    """A bundled example photograph with its expected ImageNet class.

    Attributes
    ----------
    name : str
        Short identifier (``"coffee"``), usable with :func:`sample_by_name`.
    title : str
        Human-readable title for menus.
    image : PIL.Image.Image
        ``RGB`` image, size ``(W, H)``.
    label : int
        ImageNet class index (0..999, torchvision's category order).
    label_name : str
        ImageNet class name for ``label``.
    description : str
        One sentence about the photo, with its credit.
    sha256 : str
        Hex SHA-256 of :func:`pixels_sha256` of ``image``; computed on creation.
        Equality and hashing use it instead of the (unhashable) image.
    """

    name: str
    title: str
    image: Image.Image = field(compare=False, repr=False)
    label: int
    label_name: str
    description: str
    # A field computed in __post_init__ (rather than a cached_property) keeps
    # the dataclass hashable and comparable by content.
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if self.image.mode != "RGB":
            # Frozen: bypass __setattr__ to normalise the field once.
            object.__setattr__(self, "image", self.image.convert("RGB"))
        object.__setattr__(self, "sha256", pixels_sha256(self.image))


def _skimage_file(filename: str) -> np.ndarray:
    """A photo from scikit-image's bundled data folder, as (H, W, 3) uint8.

    Read with Pillow from the folder itself: importing ``skimage.data`` (and
    its I/O plugins) costs more start-up time than decoding the photo.
    """
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownSampleError("The sample photos need scikit-image: pip install -r requirements.txt")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data", filename)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _skimage_loader(filename: str) -> Callable[[], np.ndarray]:
    return functools.partial(_skimage_file, filename)


# (name, title, loader returning (H, W, 3) uint8, label, label_name, description)
_SAMPLE_SPECS = (
    (
        "coffee",
        "Coffee",
        _skimage_loader("coffee.png"),
        967,
        "espresso",
        "A cup of espresso on a saucer, seen from above; photo by Rachel Michetti, from scikit-image's sample data.",
    ),
    (
        "chelsea",
        "Chelsea the cat",
        _skimage_loader("chelsea.png"),
        281,
        "tabby",
        "Chelsea, a ginger tabby cat, looking into the camera; photo by Stefan "
        "van der Walt, from scikit-image's sample data.",
    ),
    (
        "rocket",
        "Rocket",
        _skimage_loader("rocket.jpg"),
        657,
        "missile",
        "A SpaceX Falcon 9 rocket on the launch pad (ImageNet's nearest class "
        "is 'missile'); photo by SpaceX (public domain), from scikit-image's "
        "sample data.",
    ),
    (
        "motorcycle",
        "Motorcycle",
        _skimage_loader("motorcycle_left.png"),
        665,
        "moped",
        "A motorcycle in a cluttered room (ImageNet has no motorcycle class; "
        "'moped' is the nearest); left view from the Middlebury stereo "
        "dataset, via scikit-image's sample data.",
    ),
    (
        "camera",
        "Cameraman",
        _skimage_loader("camera.png"),
        872,
        "tripod",
        "The classic greyscale cameraman image, a man with a camera on a tripod; from scikit-image's sample data.",
    ),
)


@functools.lru_cache(maxsize=1)
def _cached_samples() -> tuple[SampleImage, ...]:
    samples = []
    for name, title, loader, label, label_name, description in _SAMPLE_SPECS:
        array = np.ascontiguousarray(loader(), dtype=np.uint8)  # (H, W, 3)
        samples.append(
            SampleImage(
                name=name,
                title=title,
                image=Image.fromarray(array).convert("RGB"),
                label=label,
                label_name=label_name,
                description=description,
            )
        )
    return tuple(samples)


def sample_images() -> list[SampleImage]:
    """Return the bundled sample photographs, in a fixed order.

    The photos come from scikit-image's bundled data (no network access) and
    are decoded once per process; each call returns a new list, so callers
    may reorder or filter it freely.

    Returns
    -------
    list of SampleImage
        ``coffee``, ``chelsea``, ``rocket``, ``motorcycle``, ``camera``.
        Each image is ``RGB`` with both sides at least 128 pixels.

    Notes
    -----
    The :class:`SampleImage` objects (and their images) are shared between
    callers; treat the images as read-only.
    """
    return list(_cached_samples())


def sample_by_name(name: str) -> SampleImage:
    """Return the sample called ``name``.

    Parameters
    ----------
    name : str
        One of the names returned by :func:`sample_images`.

    Returns
    -------
    SampleImage

    Raises
    ------
    UnknownSampleError
        If there is no sample with that name; the message lists valid names.
    """
    for sample in _cached_samples():
        if sample.name == name:
            return sample
    valid = ", ".join(spec[0] for spec in _SAMPLE_SPECS)
    raise UnknownSampleError(f"There is no sample image {name!r}. Choose one of: {valid}.")
