"""The content-addressed upload store behind shared links."""

from __future__ import annotations

import os
import time

import pytest

from saliency_core.inputs.images import image_sha256
from saliency_core.inputs.upload_store import UploadStore, is_sha256


def prune(store: UploadStore) -> None:
    """What every put does after writing: drop expired files, then the oldest until the folder fits the cap."""
    with store._lock:
        store._prune_locked()


def test_put_then_get_round_trips_bytes_and_metadata(tmp_path):
    store = UploadStore(tmp_path)
    data = b"\x89PNG fake bytes"
    sha = image_sha256(data)
    assert store.put(sha, data, {"name": "cat.png", "label": 281})
    kept = store.get(sha)
    assert kept is not None and kept.data == data and kept.meta == {"name": "cat.png", "label": 281}


def test_unknown_malformed_and_path_like_keys_return_none(tmp_path):
    store = UploadStore(tmp_path)
    assert store.get("0" * 64) is None
    assert store.get("../../etc/passwd") is None
    assert store.get("A" * 64) is None  # upper case is not what we write
    assert not is_sha256(None) and not is_sha256("abc") and is_sha256("f" * 64)


def test_disabled_store_keeps_nothing(tmp_path):
    store = UploadStore(tmp_path / "u", enabled=False)
    sha = image_sha256(b"x")
    assert not store.put(sha, b"x")
    assert store.get(sha) is None
    assert not (tmp_path / "u").exists()


def test_expired_files_are_not_served_and_are_pruned(tmp_path):
    store = UploadStore(tmp_path, retention_s=60)
    old, new = b"old", b"new"
    store.put(image_sha256(old), old)
    past = time.time() - 3600
    os.utime(tmp_path / image_sha256(old), (past, past))
    assert store.get(image_sha256(old)) is None
    store.put(image_sha256(new), new)  # a put prunes
    assert not (tmp_path / image_sha256(old)).exists()
    assert store.get(image_sha256(new)).data == new


def test_size_cap_drops_the_oldest_first(tmp_path):
    store = UploadStore(tmp_path, max_bytes=2500, in_use_s=10)
    blobs = [bytes([i]) * 1000 for i in range(4)]
    for i, blob in enumerate(blobs):
        store.put(image_sha256(blob), blob)
        t = time.time() - 100 + i  # strictly increasing ages
        os.utime(tmp_path / image_sha256(blob), (t, t))
    prune(store)
    kept = [store.get(image_sha256(b)) is not None for b in blobs]
    assert kept == [False, False, True, True]


def test_an_image_in_use_survives_the_cap_and_a_use_restarts_its_retention(tmp_path):
    store = UploadStore(tmp_path, max_bytes=2500, retention_s=3 * 3600, in_use_s=3600)
    blobs = [bytes([i]) * 1000 for i in range(4)]
    ages = [2 * 3600, 2 * 3600 - 1, 600, 300]  # two untouched for two hours, two used minutes ago
    for blob, age in zip(blobs, ages, strict=True):
        store.put(image_sha256(blob), blob)
        t = time.time() - age
        os.utime(tmp_path / image_sha256(blob), (t, t))
    prune(store)
    assert [(tmp_path / image_sha256(b)).exists() for b in blobs] == [False, False, True, True]
    big = bytes([9]) * 2000  # over the cap with the two in use: they stay, the cap yields
    store.put(image_sha256(big), big)
    assert all((tmp_path / image_sha256(b)).exists() for b in (*blobs[2:], big))
    # A link opened after 2.5 hours restarts the clock: the image outlives its first 3 hours.
    t = time.time() - 2.5 * 3600
    os.utime(tmp_path / image_sha256(blobs[2]), (t, t))
    assert store.get(image_sha256(blobs[2])) is not None
    assert time.time() - (tmp_path / image_sha256(blobs[2])).stat().st_mtime < 60
    stale = time.time() - 2 * 3600
    os.utime(tmp_path / image_sha256(blobs[3]), (stale, stale))
    store.get(image_sha256(blobs[3]))  # a live session still shows it: every rerun reads it
    assert time.time() - (tmp_path / image_sha256(blobs[3])).stat().st_mtime < 60
    store.get("not a sha")  # ignored


def test_configuration_from_environment(tmp_path):
    store = UploadStore.from_env({"SALIENCY_UPLOAD_DIR": str(tmp_path), "SALIENCY_UPLOAD_MAX_MB": "1",
                                  "SALIENCY_UPLOAD_RETENTION_DAYS": "0.5", "SALIENCY_UPLOAD_STORE": "on"})
    assert store.root == tmp_path and store.max_bytes == 1024 * 1024 and store.retention_s == 43200
    assert store.enabled
    assert not UploadStore.from_env({"SALIENCY_UPLOAD_STORE": "off"}).enabled


def test_is_sha256_needs_exactly_64_hex_digits_and_nothing_after():
    sha = "a" * 64
    assert is_sha256(sha)
    for bad in (sha + "\n", sha + " ", "\n" + sha, sha.upper(), sha[:-1], sha + "0", None, 64):
        assert not is_sha256(bad), repr(bad)


def test_put_refuses_a_name_with_a_trailing_newline(tmp_path):
    store = UploadStore(tmp_path)
    with pytest.raises(ValueError, match="not a sha256"):
        store.put("b" * 64 + "\n", b"data", {})
    assert list(tmp_path.iterdir()) == []
