"""saliency_core.jobs.results_access: the one rule for which results folders and dataset images may be read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from saliency_core.jobs import results_access as ra
from saliency_core.jobs.results_access import OutsideAllowedError


def _results(folder: Path, dataset_root: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"dataset": {"root": str(dataset_root)}}))
    return folder


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """results/ with one real folder and a symlink to a folder outside; a public and a private dataset."""
    public = tmp_path / "public"
    private = tmp_path / "private"
    for d in (public, private):
        d.mkdir()
        (d / "img.png").write_bytes(b"png bytes of " + d.name.encode())
    root = tmp_path / "results"
    _results(root / "val", public)
    _results(tmp_path / "elsewhere", private)
    os.symlink(tmp_path / "elsewhere", root / "ext")
    return {"root": root, "public": public, "private": private, "tmp": tmp_path}


def test_results_dir_comes_from_the_environment(tmp_path: Path):
    assert ra.results_dir({"SALIENCY_RESULTS_DIR": str(tmp_path)}) == tmp_path.resolve()
    assert ra.results_dir({}) == Path("results").resolve()


def test_a_symlinked_folder_outside_is_neither_listed_nor_opened(tree):
    assert ra.results_folders(tree["root"]) == ["val"]
    assert ra.results_folder(tree["root"], "val") == (tree["root"] / "val").resolve()
    for name in ("ext", "../elsewhere", str(tree["tmp"] / "elsewhere")):
        with pytest.raises(OutsideAllowedError, match="outside the results directory"):
            ra.results_folder(tree["root"], name)


def test_only_manifests_of_folders_inside_count_as_dataset_roots(tree):
    assert ra.dataset_roots(tree["root"]) == [tree["public"].resolve()]
    # Named explicitly, the symlinked folder still contributes nothing.
    assert ra.dataset_roots(tree["root"], ["val", "ext"]) == [tree["public"].resolve()]


def test_images_are_read_only_inside_a_dataset_root(tree):
    roots = ra.dataset_roots(tree["root"])
    assert ra.read_dataset_image(str(tree["public"] / "img.png"), roots) == b"png bytes of public"
    for path in (tree["private"] / "img.png", tree["public"] / ".." / "private" / "img.png", Path("/etc/passwd")):
        with pytest.raises(OutsideAllowedError, match="not in a dataset"):
            ra.read_dataset_image(str(path), roots)


def test_a_symlink_inside_a_dataset_pointing_outside_is_refused(tree):
    os.symlink(tree["private"] / "img.png", tree["public"] / "link.png")
    with pytest.raises(OutsideAllowedError):
        ra.read_dataset_image(str(tree["public"] / "link.png"), ra.dataset_roots(tree["root"]))


def test_npz_items_are_checked_by_their_file(tree):
    np.savez(tree["public"] / "b.npz", X=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([1, 2]))
    roots = ra.dataset_roots(tree["root"])
    assert ra.read_dataset_image(f"{tree['public'] / 'b.npz'}#1", roots).startswith(b"\x89PNG")
    with pytest.raises(OutsideAllowedError):
        ra.read_dataset_image(f"{tree['private'] / 'b.npz'}#1", roots)


def test_a_manifest_with_a_malformed_dataset_entry_is_ignored(tmp_path: Path):
    root = tmp_path / "results"
    for name, dataset in (("a", "not a dict"), ("b", {"root": 3}), ("c", {"root": ""})):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text(json.dumps({"dataset": dataset}))
    assert ra.dataset_roots(root) == []
