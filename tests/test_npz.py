"""cs231n .npz batches: parsed safely, never unpickled."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from saliency_core.errors import InvalidImageError
from saliency_core.inputs.npz import load_npz_batch


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_cs231n_layout_with_pickled_label_map_loads_without_unpickling():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    y = np.array([967, 281, 657])
    data = npz_bytes(X=X, y=y, label_map=np.array({967: "espresso"}, dtype=object))
    batch = load_npz_batch(data)
    assert [b.label for b in batch] == [967, 281, 657]
    assert [b.index for b in batch] == [0, 1, 2]
    np.testing.assert_array_equal(np.asarray(batch[1].image), X[1])
    assert batch[0].image.mode == "RGB"


def test_float_images_in_unit_range_are_scaled():
    X = np.full((1, 8, 8, 3), 0.5, dtype=np.float32)
    batch = load_npz_batch(npz_bytes(X=X, y=np.array([1])))
    assert np.asarray(batch[0].image)[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PK\x03\x04 not really a zip",
        b"hello",
        npz_bytes(X=np.zeros((2, 8, 8, 3), np.uint8)),  # no y
        npz_bytes(X=np.zeros((2, 8, 8), np.uint8), y=np.array([1, 2])),  # no channels
        npz_bytes(X=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([1, 2, 3])),  # y length
        npz_bytes(X=np.zeros((1, 8, 8, 3), np.uint8), y=np.array([1000])),  # label range
        npz_bytes(X=np.zeros((1, 8, 8, 3), np.uint8), y=np.array([1.5])),  # float labels
        npz_bytes(X=np.array([[[[{"a": 1}] * 3]]], dtype=object), y=np.array([1])),  # pickled X
        npz_bytes(X=np.zeros((300, 2, 2, 3), np.uint8), y=np.zeros(300, np.int64)),  # too many
    ],
)
def test_malformed_batches_raise_invalid_image_error(data):
    with pytest.raises(InvalidImageError) as info:
        load_npz_batch(data)
    assert "npz" in str(info.value)


def test_a_header_claiming_a_huge_array_is_refused_before_allocation():
    # A tiny archive whose X.npy header claims 200 images of 4000x4000.
    fake = io.BytesIO()
    np.lib.format.write_array_header_1_0(fake, {"descr": "|u1", "fortran_order": False, "shape": (200, 4000, 4000, 3)})
    fake.write(b"\0" * 16)
    labels = io.BytesIO()
    np.save(labels, np.zeros(200, np.int64))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("X.npy", fake.getvalue())
        zf.writestr("y.npy", labels.getvalue())
    with pytest.raises(InvalidImageError) as info:
        load_npz_batch(buf.getvalue())
    assert "too many or too large" in str(info.value)
