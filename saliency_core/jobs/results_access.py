"""Which results folders and dataset images the dashboard may read: one containment rule, here.

The Dataset page lists batch-job results under one directory
(``SALIENCY_RESULTS_DIR``) and shows images named in their rows. Rows come
from Parquet files, and an uploaded or forged one could name any file on the
server, so every path is checked with :func:`is_inside` after resolving
symbolic links:

* a results folder counts only when its real path lies inside the results
  directory (a symlink to a folder elsewhere is neither listed nor opened,
  and its manifest is not trusted);
* a dataset image is read only when its real path lies inside the dataset
  root recorded in the manifest of such a folder.

Nothing here imports Streamlit; the dashboard caches these calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from saliency_core.errors import SaliencyError
from saliency_core.jobs import results
from saliency_core.jobs.imagefolder import read_item_bytes, split_item_path

RESULTS_DIR_ENV = "SALIENCY_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results"


class OutsideAllowedError(SaliencyError, PermissionError):
    """A path that resolves outside every folder the dashboard may read."""


def results_dir(environ: os._Environ | dict | None = None) -> Path:
    """The results directory: ``SALIENCY_RESULTS_DIR``, default ``./results``, resolved."""
    env = os.environ if environ is None else environ
    return Path(env.get(RESULTS_DIR_ENV, DEFAULT_RESULTS_DIR)).expanduser().resolve()


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path``, with every symbolic link resolved, is ``root`` or lies under it."""
    real, real_root = Path(path).resolve(), Path(root).resolve()
    return real == real_root or real_root in real.parents


def _holds_results(folder: Path) -> bool:
    return folder.is_dir() and ((folder / results.MANIFEST).is_file() or (folder / results.RESULTS).is_dir())


def results_folders(root: str | os.PathLike) -> list[str]:
    """Names of the folders in ``root`` (and ``root`` itself, as ".") that hold results, newest first.

    Folders whose real path is outside ``root`` (symbolic links to elsewhere)
    are left out.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        return []
    found = [p for p in [root, *root.iterdir()] if is_inside(p, root) and _holds_results(p)]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.relative_to(root).as_posix() or "." for p in found]


def results_folder(root: str | os.PathLike, name: str) -> Path:
    """The real path of results folder ``name`` in ``root``.

    Raises
    ------
    OutsideAllowedError : ``name`` resolves outside ``root``.
    """
    root = Path(root).resolve()
    folder = root / name
    if not is_inside(folder, root):
        raise OutsideAllowedError(f"{name} is outside the results directory")
    return folder.resolve()


def dataset_roots(root: str | os.PathLike, folders: Iterable[str] | None = None) -> list[Path]:
    """The dataset roots named in the manifests of the results folders in ``root`` (resolved).

    ``folders`` defaults to :func:`results_folders`; a name outside ``root``
    contributes nothing.
    """
    roots = []
    for name in results_folders(root) if folders is None else folders:
        try:
            folder = results_folder(root, name)
        except OutsideAllowedError:
            continue
        dataset = results.read_manifest(folder).get("dataset", {})
        if isinstance(dataset, dict) and isinstance(dataset.get("root"), str) and dataset["root"]:
            roots.append(Path(dataset["root"]).resolve())
    return roots


def check_dataset_path(path: str, roots: Iterable[Path]) -> Path:
    """The file an item path names (``file`` or ``file.npz#i``), if it lies inside one of ``roots``.

    Raises
    ------
    OutsideAllowedError : the file is outside every root.
    """
    file = split_item_path(path)[0]
    if not any(is_inside(file, r) for r in roots):
        raise OutsideAllowedError(
            "it is not in a dataset of the results on this server; only those images are opened")
    return file.resolve()


def read_dataset_image(path: str, roots: Iterable[Path]) -> bytes:
    """The bytes of the image an item path names, if :func:`check_dataset_path` allows it.

    Raises
    ------
    OutsideAllowedError : the path is outside every dataset root.
    OSError : the file can't be read.
    """
    check_dataset_path(path, roots)
    return read_item_bytes(path)
