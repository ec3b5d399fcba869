"""The content-addressed upload store behind shared links."""

from __future__ import annotations

import os
import time

import pytest

from saliency_core.images import image_sha256
from saliency_core.store import UploadStore, is_sha256


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
    store = UploadStore(tmp_path, max_bytes=2500)
    blobs = [bytes([i]) * 1000 for i in range(4)]
    for i, blob in enumerate(blobs):
        store.put(image_sha256(blob), blob)
        t = time.time() - 100 + i  # strictly increasing ages
        os.utime(tmp_path / image_sha256(blob), (t, t))
    store.prune()
    kept = [store.get(image_sha256(b)) is not None for b in blobs]
    assert kept == [False, False, True, True]


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
