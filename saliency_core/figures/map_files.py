"""A map as a file: a colour PNG as on screen, or a CSV of its values (and per-channel gradients).

Everything returns bytes or plain Python objects; nothing here draws.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
from PIL import Image
from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

from saliency_core.figures.provenance import json_default


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


def map_frame(saliency: np.ndarray, gradients: np.ndarray | None = None, prefix: str = "grad") -> pd.DataFrame:
    """Long table of a map: columns x, y, value (+ grad_r, grad_g, grad_b; ``prefix`` names them, e.g.
    "attr" for another method's per-channel attributions)."""
    h, w = saliency.shape
    yy, xx = np.mgrid[0:h, 0:w]
    data = {"x": xx.ravel(), "y": yy.ravel(), "value": np.asarray(saliency).ravel()}
    if gradients is not None:
        for c, channel in enumerate("rgb"):
            data[f"{prefix}_{channel}"] = np.asarray(gradients[c]).ravel()
    return pd.DataFrame(data)


def map_csv(saliency: np.ndarray, gradients: np.ndarray | None = None, prefix: str = "grad",
            header: Mapping[str, object] | None = None) -> bytes:
    """CSV bytes of :func:`map_frame` (values written with full float32 precision).

    ``header``: provenance written first as ``# key: <JSON>`` lines (read with
    ``pd.read_csv(f, comment="#")`` and :func:`read_csv_provenance`).
    """
    if header:
        lines = "".join(f"# {k}: {json.dumps(v, default=json_default, ensure_ascii=False)}\n"
                        for k, v in header.items())
        return lines.encode() + map_frame(saliency, gradients, prefix).to_csv(index=False,
                                                                             float_format="%.9g").encode()
    return map_frame(saliency, gradients, prefix).to_csv(index=False, float_format="%.9g").encode()
