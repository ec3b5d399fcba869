"""Downloads: PNG and CSV of a map, provenance records."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
from PIL import Image

from saliency_core.export import colormap_lut, map_csv, map_png, map_to_rgb, provenance


def test_png_has_one_pixel_per_map_pixel_coloured_by_the_scale():
    m = np.zeros((5, 7), np.float32)
    m[2, 3] = 1.0
    img = Image.open(io.BytesIO(map_png(m, "hot")))
    assert img.size == (7, 5) and img.mode == "RGB"
    arr = np.asarray(img)
    assert arr[2, 3].tolist() == [255, 255, 255]  # "hot" ends at white
    assert arr[0, 0].tolist() == [0, 0, 0]  # and starts at black


def test_clipping_range_is_applied():
    m = np.array([[0.0, 0.5, 1.0]])
    rgb = map_to_rgb(m, "gray", zmin=0.0, zmax=0.5)
    assert rgb[0, 1].tolist() == rgb[0, 2].tolist()  # 0.5 and 1.0 both at the top
    lut = colormap_lut("gray")
    assert rgb[0, 0].tolist() == lut[0].tolist()


def test_csv_round_trips_values_and_gradients():
    rng = np.random.default_rng(0)
    m = rng.random((3, 4)).astype(np.float32)
    g = rng.normal(size=(3, 3, 4)).astype(np.float32)
    df = pd.read_csv(io.BytesIO(map_csv(m, g)))
    assert list(df.columns) == ["x", "y", "value", "grad_r", "grad_g", "grad_b"]
    assert len(df) == 12
    row = df[(df.x == 2) & (df.y == 1)].iloc[0]
    assert np.float32(row.value) == m[1, 2]
    assert np.float32(row.grad_b) == g[2, 1, 2]


def test_provenance_is_json_ready_and_names_versions():
    rec = provenance(model_name="efficientnet_lite0", weights="w", preprocessing="p", target=967,
                     target_name="espresso", method="score", reduction="max", precision="exact",
                     image_sha256="a" * 64, image_source="sample:coffee", device="cpu")
    text = json.dumps(rec)
    assert "espresso" in text and rec["versions"]["torch"] != "not installed"
    assert rec["image"]["sha256"] == "a" * 64 and rec["saliency"]["precision"] == "exact"
