"""Datasets on disk for the batch job: an ImageFolder tree or a cs231n ``.npz``.

An ImageFolder tree has one subfolder per class, named by WordNet id
(``n01440764``) or by ImageNet class index (``0`` .. ``999``); files anywhere
below a class folder get its label. Files directly in the root, or below a
folder with any other name, have no known label (the job then explains the
model's top-1 prediction and says so). A ``.npz`` holds arrays ``X`` (N, H,
W, 3) and ``y`` (N,) as cs231n's ``imagenet_val_25.npz`` does.

Symbolic links are followed, as torchvision's ImageFolder follows them (a
tree of class folders linked to a central store is common), but each real
folder is entered once and each file counted once: see :func:`discover`.
Only regular files are read; a FIFO, a socket or a device named ``x.jpg``
is listed, and its record says what it is (see
:func:`saliency_core.inputs.image_bytes.open_regular_file`).

:class:`ImageDataset` decodes and crops in DataLoader worker processes, so
it holds only picklable, torch-free state; a file that can't be read comes
back as an error record, never as an exception.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saliency_core.errors import InvalidImageError, InvalidInputError
from saliency_core.inputs.image_bytes import open_regular_file, read_regular_file
from saliency_core.inputs.images import DEFAULT_MAX_BYTES, load_image, pixels_sha256
from saliency_core.inputs.npz import load_npz_batch
from saliency_core.inputs.preprocessing import Preprocessing, crop_image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"})
_WNID = re.compile(r"n\d{8}")


@lru_cache(maxsize=1)
def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted, as the class indices are)."""
    text = (Path(__file__).resolve().parents[1] / "data" / "imagenet_wnids.txt").read_text(encoding="utf-8")
    return text.split()


def label_of_folder(name: str) -> tuple[int | None, str | None]:
    """(class index, how it was read) for a class folder's name; (None, None) when it names no class."""
    if _WNID.fullmatch(name):
        index = {w: i for i, w in enumerate(imagenet_wnids())}.get(name)
        return (index, "wnid") if index is not None else (None, None)
    if name.isdigit() and 0 <= int(name) < 1000:
        return int(name), "index"
    return None, None


@dataclass(frozen=True)
class Item:
    """One image of a dataset.

    key : unique, stable id: the path relative to the dataset root in POSIX
        form, or ``name.npz#i`` for an image in an npz
    label : ImageNet class index when known
    label_source : "wnid", "index" or "npz" (how the label was known); None
    """

    key: str
    label: int | None
    label_source: str | None


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found: the items, sorted by key, and the files it passed over."""

    root: str  # absolute path of the folder or the npz
    kind: str  # "folder" or "npz"
    items: tuple[Item, ...]
    ignored: tuple[str, ...]  # files that are not images by their extension


def discover(source: str | os.PathLike) -> Discovery:
    """List the images of a folder (ImageFolder layout) or an npz file, in a stable order.

    Symbolic links are followed, once: every real folder (by device and
    inode) is entered at most once, real folders before linked ones, so a
    folder reached both by its own name and through a link is listed under
    its own name, and a link back up the tree (``ln -s . loop``) adds
    nothing. A link to a folder outside the tree is followed (its images
    are listed under the link's name and take the label of the class
    folder it stands for) unless that folder was entered already. A linked
    file whose target is also listed by a name of its own is left out;
    hard links, two names the user gave one file, are both listed.
    Hidden files and folders (``.name``) are skipped.

    Raises
    ------
    InvalidInputError : the path does not exist, or the npz can't be read.
    """
    path = Path(source).expanduser().resolve()
    if path.is_file() and path.suffix.lower() == ".npz":
        try:
            with open_regular_file(path) as fh:
                batch = load_npz_batch(fh)
        except (InvalidImageError, OSError) as exc:
            raise InvalidInputError(f"{path}: {exc}") from exc
        items = tuple(Item(f"{path.name}#{b.index}", b.label, "npz") for b in batch)
        return Discovery(str(path), "npz", items, ())
    if not path.is_dir():
        raise InvalidInputError(f"{path} is neither a folder of images nor an .npz file")
    found, ignored = _walk(path)
    items, labels = [], {"": (None, None)}  # top folder -> (label, source); "" for files in the root
    for key in _count_files_once(found):
        top = key.partition("/")[0] if "/" in key else ""
        if top not in labels:
            labels[top] = label_of_folder(top)
        items.append(Item(key, *labels[top]))
    return Discovery(str(path), "folder", tuple(sorted(items, key=lambda it: it.key)), tuple(sorted(ignored)))


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # a dangling link, a file gone since the listing: listed, and its record will say why
        return None
    return st.st_dev, st.st_ino


def _walk(root: Path) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """(image files as (key, path, is a link), other files' keys) under ``root``, each real folder once.

    Folders are walked breadth-first by level of links: first every folder
    reachable without following a link, then the targets of the links found
    there (in key order), then the links found in those, and so on.
    """
    files: list[tuple[str, str, bool]] = []
    ignored: list[str] = []
    seen: set[tuple[int, int]] = set()
    st = os.stat(root)
    seen.add((st.st_dev, st.st_ino))
    level = [("", str(root))]  # (key prefix, real path to list) of folders entered through a link, or the root
    while level:
        links: list[tuple[str, str]] = []
        todo = list(level)
        while todo:
            prefix, folder = todo.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:  # unreadable folder: nothing to list, as os.walk does
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = f"{prefix}{entry.name}"
                try:
                    is_dir = entry.is_dir()  # follows links
                    is_link = entry.is_symlink()
                except OSError:
                    is_dir, is_link = False, False
                if is_dir and is_link:
                    links.append((key, entry.path))
                elif is_dir:
                    st = entry.stat()
                    if (st.st_dev, st.st_ino) not in seen:  # a bind mount of an ancestor would loop too
                        seen.add((st.st_dev, st.st_ino))
                        todo.append((key + "/", entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append((key, entry.path, is_link))
                else:
                    ignored.append(key)
        level = []
        for key, link in sorted(links):
            target = _file_id(link)
            if target is not None and target not in seen:
                seen.add(target)
                level.append((key + "/", os.path.realpath(link)))
    return files, ignored


def _count_files_once(files: list[tuple[str, str, bool]]) -> list[str]:
    """The keys to keep: a linked file is dropped when its target is listed by a name that is no link, or
    (only links to it) by a link whose key sorts first. Without linked files, nothing is stat'ed."""
    if not any(is_link for _, _, is_link in files):
        return [key for key, _, _ in files]
    names: dict[tuple[int, int], list[tuple[bool, str]]] = {}
    keep = []
    for key, path, is_link in files:
        file_id = _file_id(path)
        if file_id is None:
            keep.append(key)
        else:
            names.setdefault(file_id, []).append((is_link, key))
    for group in names.values():
        real = [key for is_link, key in group if not is_link]
        keep.extend(real if real else [min(key for _, key in group)])
    return keep


def item_path(discovery: Discovery, item: Item) -> str:
    """Where an item lives: the file's absolute path, or ``/path/to/batch.npz#i``."""
    if discovery.kind == "npz":
        return f"{discovery.root}#{_npz_index(item.key)}"
    return str(Path(discovery.root) / item.key)


def _npz_index(key: str) -> int:
    return int(key.rsplit("#", 1)[1])


def split_item_path(path: str) -> tuple[Path, int | None]:
    """(file on disk, index in the npz or None) of an :func:`item_path`.

    Raises InvalidInputError when ``path`` is not a non-empty string (a row without a path).
    """
    if not isinstance(path, str) or not path:
        raise InvalidInputError(f"No file path was given (got {path!r}).")
    base, sep, index = path.rpartition("#")
    if sep and base.lower().endswith(".npz") and index.isdigit():
        return Path(base), int(index)
    return Path(path), None


def read_item_bytes(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The encoded bytes of an item from its :func:`item_path`: the file's, or a lossless PNG of an npz image.

    Only regular files are read (a FIFO or a device named like an image is refused), up to ``max_bytes``.

    Raises OSError when the file is gone or unreadable, InvalidImageError when it is not a regular file, is
    larger than ``max_bytes``, or is a bad npz; InvalidInputError when ``path`` is no path.
    """
    file, index = split_item_path(path)
    if index is None:
        return read_regular_file(file, max_bytes)
    buf = io.BytesIO()
    _npz_images(str(file))[index].save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=2)
def _npz_images(path: str) -> tuple[Image.Image, ...]:
    # Once per worker process: the images of an npz are decoded together.
    with open_regular_file(path) as fh:
        return tuple(b.image for b in load_npz_batch(fh))


class ImageDataset(torch.utils.data.Dataset):
    """Items decoded and cropped for a model; one record per item, errors included.

    Each record is a dict: ``index`` (position in ``items``), ``crop``
    ((H, W, 3) uint8 array, or None), ``sha256`` (of the file's bytes, or
    :func:`~saliency_core.inputs.images.pixels_sha256` of an npz image), ``width``, ``height`` (of the image as decoded)
    and ``error`` (None, or why the file can't be used); with ``objects``
    (:class:`saliency_core.jobs.localisation.Objects`) also ``mask``, the (crop, crop) bool object mask or None.
    """

    def __init__(self, discovery: Discovery, items: list[Item], prep: Preprocessing,
                 max_bytes: int = DEFAULT_MAX_BYTES, objects: object | None = None) -> None:
        self.root, self.kind = discovery.root, discovery.kind
        self.items = items
        self.prep = prep
        self.max_bytes = max_bytes
        self.objects = objects

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        record = {"index": index, "crop": None, "sha256": None, "width": None, "height": None, "error": None,
                  "mask": None}
        try:
            if self.kind == "npz":
                image = _npz_images(self.root)[_npz_index(item.key)]
                record["sha256"] = pixels_sha256(image)
            else:
                data = read_regular_file(Path(self.root) / item.key, self.max_bytes)
                record["sha256"] = hashlib.sha256(data).hexdigest()
                image = load_image(data, max_bytes=self.max_bytes)
        except InvalidImageError as exc:
            record["error"] = str(exc)
            return record
        except OSError as exc:
            record["error"] = f"The file can't be read: {exc.strerror or exc}"
            return record
        record["width"], record["height"] = image.size
        if self.objects is not None:
            try:
                record["mask"] = self.objects.mask(item.key, *image.size, self.prep)
            except InvalidImageError as exc:  # the mask, not the image: say so
                record["error"] = str(exc)
                return record
        record["crop"] = np.asarray(crop_image(image, self.prep), dtype=np.uint8)
        return record


def collate(records: list[dict]) -> list[dict]:
    """Keep records as they are: the loop stacks the good crops itself and keeps the errors apart."""
    return records


class ShardSampler(torch.utils.data.Sampler[int]):
    """Rank ``rank`` of ``world`` takes items rank, rank + world, rank + 2 world, ...

    ``torch.utils.data.DistributedSampler`` pads the list with repeats so
    that every rank gets the same count, which training needs and a batch
    job must not do: a repeated image would be computed and written twice.
    This sampler gives every item to exactly one rank, in order.
    """

    def __init__(self, n: int, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise InvalidInputError(f"rank {rank} is outside a world of {world}")
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def write_sample_folder(dest: str | os.PathLike, n: int = 12, *, corrupt: int = 1) -> Path:
    """Write a small ImageFolder tree from the bundled sample photos: a dataset to try the batch job on.

    ``n`` JPEGs cycle through the samples (as taken, mirrored, then cropped to
    the central 80 %), each in its class's WordNet-id folder, except that the
    second image sits in a class-index folder and the third at the root with
    no label. ``corrupt`` truncated JPEGs and a README.txt (not an image)
    are added. Returns the folder.
    """
    from PIL import ImageOps

    from saliency_core.inputs.samples import sample_images

    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    samples = sample_images()
    wnids = imagenet_wnids()
    for i in range(n):
        s = samples[i % len(samples)]
        image, variant = s.image, i // len(samples) % 3
        if variant == 1:
            image = ImageOps.mirror(image)
        elif variant == 2:
            w, h = image.size
            image = image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        folder = {1: root / str(s.label), 2: root}.get(i, root / wnids[s.label])
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{s.name}_{i:03d}.jpg", quality=90)
    for j in range(corrupt):
        good = (root / wnids[samples[0].label] / f"{samples[0].name}_000.jpg").read_bytes()
        (root / wnids[samples[0].label] / f"broken_{j}.jpg").write_bytes(good[: len(good) // 3])
    (root / "README.txt").write_text("Sample photos from scikit-image, in ImageFolder layout.\n")
    return root
