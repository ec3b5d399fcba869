"""Where the batch job's localisation metrics find each image's object: ``--boxes CSV`` or ``--masks DIR``.

* ``--boxes boxes.csv``: a header with ``key`` (the job's key: the path relative to ``--images``, or
  ``name.npz#i``) or ``path`` (absolute, or relative to ``--images``), and ``x0, y0, x1, y1`` in the original
  image's pixels (after EXIF orientation: the row's ``width`` and ``height``), right and bottom edges
  excluded. Several rows of one image are one object, their union. Other columns are ignored.
* ``--masks DIR``: for image ``cat/x.jpg`` the PNG ``DIR/cat/x.png``, the image's size, non-zero on the object.

Either is carried through the model's resize and crop (:mod:`saliency_core.inputs.object_masks`); an image
without a box or mask gets NaN in the localisation columns. Both are read by rules a hostile file can't
bend, checked before the model is loaded (a usage error, one line): the CSV at most
:data:`~saliency_core.core.limits.MAX_BOXES_BYTES` and :data:`~saliency_core.core.limits.MAX_BOX_ROWS` rows
of finite coordinates from 0 to :data:`~saliency_core.core.limits.MAX_BOX_COORDINATE`, every row naming a
path inside ``--images`` and at least one an image of it; a mask a regular file of at most
:data:`~saliency_core.core.limits.MAX_MASK_BYTES` whose real path lies inside ``DIR``, and ``DIR`` not inside
``--images`` (its PNGs would be read as images). A mask that then fails to decode, or has another size than
its image, sends that image to the errors table with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from saliency_core.core import limits
from saliency_core.errors import InvalidImageError, InvalidInputError
from saliency_core.inputs.image_bytes import read_regular_file
from saliency_core.inputs.object_masks import Box, box_mask, crop_mask, read_mask_png
from saliency_core.inputs.preprocessing import Preprocessing
from saliency_core.jobs.imagefolder import Discovery
from saliency_core.jobs.results_access import is_inside

COORDINATES = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Objects:
    """Each image's object, from boxes (key -> its boxes) or a masks folder (its real path). Picklable: the
    DataLoader's workers make the masks beside the crops."""

    boxes: dict[str, tuple[Box, ...]] | None = None
    masks: str | None = None
    summary: dict[str, object] = field(default_factory=dict)  # for the manifest

    def mask_file(self, key: str) -> Path:
        assert self.masks is not None
        return Path(self.masks) / PurePosixPath(key).with_suffix(".png")

    def mask(self, key: str, width: int, height: int, prep: Preprocessing) -> np.ndarray | None:
        """(crop, crop) bool object mask of image ``key`` (width x height as decoded), or None without one.

        Raises InvalidImageError when its mask file can't be used (the image then goes to the errors table).
        """
        if self.boxes is not None:
            boxes = self.boxes.get(key)
            return None if boxes is None else box_mask(boxes, width, height, prep)
        path = self.mask_file(key)
        if not os.path.lexists(path):
            return None
        where = f"its mask {path}"
        if not is_inside(path, self.masks):  # checked at the start too; a link may have changed since
            raise InvalidImageError(f"{where} lies outside --masks")
        try:
            data = read_regular_file(path, limits.MAX_MASK_BYTES)
        except OSError as exc:
            raise InvalidImageError(f"{where} can't be read: {exc.strerror or exc}") from exc
        except InvalidImageError as exc:
            raise InvalidImageError(f"{where}: {exc}") from exc
        try:
            return crop_mask(read_mask_png(data, width, height), prep)
        except InvalidImageError as exc:
            raise InvalidImageError(f"{where}: {exc}") from exc


def load_objects(boxes: str | None, masks: str | None, discovery: Discovery) -> Objects | None:
    """The :class:`Objects` the options name (None for neither). InvalidInputError, one line, for a bad file."""
    if boxes is not None:
        found, summary = read_boxes(boxes, discovery)
        return Objects(boxes=found, summary=summary)
    if masks is not None:
        folder, summary = check_masks(masks, discovery)
        return Objects(masks=folder, summary=summary)
    return None


def file_sha256(path: str) -> str:
    """sha256 of a boxes CSV (recorded in the config: a changed CSV must not be mixed into a resumed run)."""
    try:
        data = read_regular_file(Path(path).expanduser(), limits.MAX_BOXES_BYTES)
    except (OSError, InvalidImageError) as exc:
        raise InvalidInputError(f"--boxes {path}: {_why(exc)}") from exc
    return hashlib.sha256(data).hexdigest()


def _why(exc: Exception) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


def _key_of(text: str, column: str, discovery: Discovery) -> str | None:
    """The job's key for a CSV cell, None for an empty one; InvalidInputError for a path outside the dataset."""
    text = text.strip()
    if not text:
        return None
    root = Path(discovery.root)
    if discovery.kind == "npz":
        name, sep, index = text.rpartition("#")
        if column == "path" and sep and Path(name).name == root.name:
            text = f"{root.name}#{index}"
        if not (sep and text.startswith(f"{root.name}#") and index.isdigit()):
            raise InvalidInputError(f"{text!r} is not an image of {root} (expected {root.name}#INDEX)")
        return text
    path = Path(os.path.normpath(root / text))  # an absolute path replaces the root; ".." is folded
    if not (path == root or root in path.parents):  # a name, never opened: where it points is no matter
        raise InvalidInputError(f"{text!r} points outside the dataset {root}")
    return path.relative_to(root).as_posix()


def _coordinates(row: dict[str, str]) -> Box:
    values = []
    for c in COORDINATES:
        try:
            v = float(row[c] or "")
        except ValueError:
            raise InvalidInputError(f"{c} is {row[c]!r}, not a number") from None
        if not (math.isfinite(v) and 0 <= v <= limits.MAX_BOX_COORDINATE):
            raise InvalidInputError(f"{c} is {row[c]!r}, not from 0 to {limits.MAX_BOX_COORDINATE:,} pixels")
        values.append(v)
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise InvalidInputError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty: x0 < x1 and y0 < y1 expected")
    return x0, y0, x1, y1


def read_boxes(path: str, discovery: Discovery) -> tuple[dict[str, tuple[Box, ...]], dict[str, object]]:
    """key -> its boxes, and a summary; InvalidInputError (one line naming the file and the row) otherwise."""
    where = f"--boxes {path}"
    try:
        data = read_regular_file(Path(path).expanduser(), limits.MAX_BOXES_BYTES)
        text = data.decode("utf-8-sig")
    except (OSError, InvalidImageError) as exc:
        raise InvalidInputError(f"{where}: {_why(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    keys = {it.key for it in discovery.items}
    found: dict[str, list[Box]] = {}
    rows = unmatched = 0
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        column = "key" if "key" in header else "path" if "path" in header else None
        if column is None or any(c not in header for c in COORDINATES):
            raise InvalidInputError(f"the header must name key (or path), {', '.join(COORDINATES)}; it has "
                                    f"{', '.join(repr(h) for h in header[:10]) or 'nothing'}")
        for row in reader:
            rows += 1
            if rows > limits.MAX_BOX_ROWS:
                raise InvalidInputError(f"more than {limits.MAX_BOX_ROWS:,} rows")
            try:
                if None in row or any(row.get(c) is None for c in COORDINATES):
                    raise InvalidInputError(f"{len(header)} fields expected")
                key = _key_of(row[column] or "", column, discovery)
                if key is None:
                    raise InvalidInputError(f"no {column}")
                box = _coordinates(row)
            except InvalidInputError as exc:
                raise InvalidInputError(f"line {reader.line_num}: {exc}") from None
            if key not in keys:
                unmatched += 1
                continue
            boxes = found.setdefault(key, [])
            if len(boxes) >= limits.MAX_BOXES_PER_IMAGE:
                raise InvalidInputError(f"line {reader.line_num}: more than {limits.MAX_BOXES_PER_IMAGE:,} boxes "
                                        f"for {key}")
            boxes.append(box)
    except csv.Error as exc:
        raise InvalidInputError(f"{where}: line {reader.line_num}: not CSV ({exc})") from exc
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    if not found:
        raise InvalidInputError(f"{where}: none of its {rows:,} rows names one of the {len(keys):,} images of "
                                f"{discovery.root} (by {column})")
    summary = {"source": "boxes", "file": str(Path(path).expanduser().resolve()), "rows": rows,
               "images_with_object": len(found), "rows_of_other_images": unmatched}
    return {k: tuple(v) for k, v in found.items()}, summary


def check_masks(folder: str, discovery: Discovery) -> tuple[str, dict[str, object]]:
    """The masks folder's real path and a summary, after checking every image's mask file (not its pixels)."""
    where = f"--masks {folder}"
    root = Path(folder).expanduser().resolve()
    if discovery.kind == "npz":
        raise InvalidInputError(f"{where}: an .npz dataset has no image paths to match; give --boxes with keys "
                                f"{Path(discovery.root).name}#INDEX instead")
    if not root.is_dir():
        raise InvalidInputError(f"{where}: not a folder")
    if is_inside(root, discovery.root):
        raise InvalidInputError(f"{where} lies inside --images {discovery.root}: its PNGs would be read as images")
    objects = Objects(masks=str(root))
    count = 0
    for item in discovery.items:
        path = objects.mask_file(item.key)
        if not os.path.lexists(path):
            continue
        if not is_inside(path, root):
            raise InvalidInputError(f"{where}: {path} points outside the masks folder")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InvalidInputError(f"{where}: {path} can't be read ({exc.strerror or exc})") from exc
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"{where}: {path} is not a regular file")
        if st.st_size > limits.MAX_MASK_BYTES:
            raise InvalidInputError(f"{where}: {path} is {st.st_size / 2**20:.0f} MB, more than the "
                                    f"{limits.MAX_MASK_BYTES / 2**20:.0f} MB a mask may have")
        count += 1
    if not count:
        raise InvalidInputError(f"{where}: no mask for any of the {len(discovery.items):,} images (image a/b.jpg "
                                "has its mask at a/b.png)")
    return str(root), {"source": "masks", "folder": str(root), "images_with_object": count}
