"""What the in-process (AppTest) page tests share: reading what a page shows, and the maps it should show.

``charts``/``heatmaps``/``heatmap_z`` read the Plotly figures a run drew (``decode_plotly_array`` for typed
arrays); ``texts``/``shown``/``main_markdown`` the Markdown as a person reads it; ``assert_healthy`` is what
every test checks after a run; ``link`` builds a shared link's query; ``PAGES`` names each page's file. The
fixtures (``new_app``, ``upload_dir``, ``pinned_pass_cost``) are tests/app/conftest.py's.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re

import numpy as np
from PIL import Image

from saliency_core.core import gradients
from saliency_core.inputs.samples import sample_by_name

RTOL, ATOL = 1e-5, 1e-7
PAGES = {
    "home": "pages/home.py",
    "saliency": "pages/saliency.py",
    "compare": "pages/compare.py",
    "methods": "pages/methods.py",
    "gallery": "pages/gallery.py",
    "statistics": "pages/statistics.py",
    "faithfulness": "pages/faithfulness.py",
}


# --------------------------------------------------------------------------- helpers


def embedded_can_run(methods) -> tuple[str, ...]:
    """``methods`` (names, in their order) that the pages' default model, the embedded CNN, can run: the attention
    methods need a ViT, and the pages leave them out for it."""
    from saliency_core.methods.registry import ATTRIBUTION_METHODS

    return tuple(m for m in methods if "attention_blocks" not in ATTRIBUTION_METHODS[m].needs)


def decode_plotly_array(obj: object) -> np.ndarray:
    """A Plotly array from a figure's JSON: a plain (nested) list or a typed array.

    Plotly sends numpy arrays as ``{"dtype": "f4", "bdata": <base64>, "shape": "224, 224"}``
    (little-endian; ``shape`` absent for 1-D arrays).
    """
    if isinstance(obj, dict) and "bdata" in obj:
        dtype = np.dtype(obj["dtype"]).newbyteorder("<")
        arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=dtype)
        shape = obj.get("shape")
        if shape is not None:
            dims = [int(s) for s in shape.split(",")] if isinstance(shape, str) else [int(s) for s in shape]
            arr = arr.reshape(dims)
        return arr
    return np.asarray(obj)


def charts(at) -> dict[str, dict]:
    """Every Plotly figure on the page, by its element key, as parsed JSON."""
    out = {}
    for el in at.get("plotly_chart"):
        key = el.proto.id.rsplit("-", 1)[-1] if getattr(el, "key", None) is None else el.key
        out[key] = json.loads(el.proto.spec)
    return out


def heatmaps(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t.get("type") == "heatmap"]


def heatmap_z(at, key: str = "heatmap") -> np.ndarray:
    """The map drawn by the chart ``key`` (one heatmap trace)."""
    figs = charts(at)
    assert key in figs, f"no chart {key!r} on the page; charts: {sorted(figs)}"
    (trace,) = heatmaps(figs[key])
    return decode_plotly_array(trace["z"])


def assert_healthy(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(elements) -> str:
    """The Markdown bodies of elements, as the user reads them (rendered, tags dropped)."""
    return "\n".join(shown(str(e.value)) for e in elements)


def shown(markdown: str) -> str:
    """What Markdown shows: rendered by a CommonMark/GFM parser, tags stripped, entities decoded, without the
    invisible word joiners (U+2060) that pages.ui.text.plain puts where an autolink would start."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("gfm-like").render(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).replace("\u2060", "").strip()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def ref_map(result: gradients.SaliencyResult, method: str) -> np.ndarray:
    return result.maps[method][0].detach().cpu().numpy()


def assert_map_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape == (224, 224)
    assert float(expected.max()) > 0  # a real map, not an empty one
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def coffee() -> Image.Image:
    return sample_by_name("coffee").image


def chelsea() -> Image.Image:
    return sample_by_name("chelsea").image


def decode_image_source(source: str) -> np.ndarray:
    """Pixels of a Plotly image trace sent as a PNG data URI."""
    head, data = source.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def main_markdown(at) -> str:
    return texts(at.main.markdown)


def link(**view: str | int) -> dict[str, str]:
    """Query parameters for a view, as the dashboard writes them to the address bar: option names."""
    return {k: str(v) for k, v in view.items()}


