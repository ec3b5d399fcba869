"""The picture of the engine's layers in the README (docs/architecture.svg), drawn from the code.

    .venv/bin/python docs/architecture.py        # rewrites docs/architecture.svg

Each layer of ``saliency_core`` is a folder whose ``__init__.py`` says what it
holds (its docstring's first sentence) and its rank (``LAYER = N``); the
package's errors module is layer 0. :func:`declared_layers` reads both from the
syntax tree, without importing anything, for this picture and for
``tests/test_layers.py``, which checks that imports only look down the ranks and
that the SVG in the repository is the one this script draws now.
"""

from __future__ import annotations

import ast
import html
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "saliency_core"
SVG = REPO / "docs" / "architecture.svg"


@dataclass(frozen=True)
class Layer:
    name: str  # the folder ("core") or module ("errors") under saliency_core/
    rank: int
    summary: str  # the first sentence of its docstring


def declared_layers(root: Path = REPO) -> dict[str, Layer]:
    """Every layer of the package at ``root``: the folders with an ``__init__.py`` and ``errors.py``, each with
    the ``LAYER = N`` rank it declares (a layer without one raises ValueError, naming it)."""
    sources = {p.parent.name: p for p in sorted((root / PACKAGE).glob("*/__init__.py"))}
    sources["errors"] = root / PACKAGE / "errors.py"
    layers = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(), str(path))
        ranks = [node.value.value for node in tree.body
                 if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["LAYER"]
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)]
        if len(ranks) != 1:
            raise ValueError(f"{path.relative_to(root)} must declare its rank once: LAYER = <int>")
        doc = " ".join((ast.get_docstring(tree) or "").split("\n\n")[0].split())
        layers[name] = Layer(name, ranks[0], re.sub(r":\w+:`~?([^`]+)`", r"\1", doc))
    return layers


# --------------------------------------------------------------------------- the picture

WIDTH, ROW, GAP, LEFT, ARROW = 920, 62, 10, 20, 70
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
CHARS_PER_PX = 1 / 6.6  # 11 px text, about 6.6 px a character


def _box(x: int, y: int, w: int, title: str, text: str, fill: str) -> list[str]:
    lines = textwrap.wrap(text, max(20, int((w - 20) * CHARS_PER_PX)))[:2]
    out = [f"<rect x='{x}' y='{y}' width='{w}' height='{ROW}' rx='8' fill='{fill}' stroke='#4a5568'/>",
           f"<text x='{x + 10}' y='{y + 20}' {FONT} font-size='14' font-weight='bold' fill='#1a202c'>"
           f"{html.escape(title)}</text>"]
    out += [f"<text x='{x + 10}' y='{y + 38 + 14 * i}' {FONT} font-size='11' fill='#2d3748'>{html.escape(line)}</text>"
            for i, line in enumerate(lines)]
    return out


def architecture_svg(layers: dict[str, Layer] | None = None) -> str:
    """The SVG text: the pages on top, the package's public face, then the layers by rank, highest first (peers
    side by side), and an arrow saying that imports only look down."""
    layers = declared_layers() if layers is None else layers
    rows: list[list[tuple[str, str, str]]] = [
        [("dashboard.py, pages/", "Streamlit: each page picks, calls saliency_core and draws; pages/ui/ holds "
          "what pages share", "#fde68a")],
        [("saliency_core", "the public face (attribute, compute_saliency, load_model, …) and "
          "python -m saliency_core.batch", "#bfdbfe")],
    ]
    for rank in sorted({layer.rank for layer in layers.values()}, reverse=True):
        peers = sorted((n for n, layer in layers.items() if layer.rank == rank))
        rows.append([(f"{n}/" if n != "errors" else "errors.py", layers[n].summary, "#e2e8f0") for n in peers])
    inner = WIDTH - LEFT - ARROW - 10
    height = len(rows) * (ROW + GAP) + 2 * GAP
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
           f"viewBox='0 0 {WIDTH} {height}'>",
           f"<rect width='{WIDTH}' height='{height}' fill='white'/>"]
    for i, row in enumerate(rows):
        y = GAP + i * (ROW + GAP)
        w = (inner - GAP * (len(row) - 1)) // len(row)
        for j, (title, text, fill) in enumerate(row):
            out += _box(LEFT + j * (w + GAP), y, w, title, text, fill)
    x = WIDTH - ARROW + 20
    out += [f"<line x1='{x}' y1='{GAP + 10}' x2='{x}' y2='{height - GAP - 16}' stroke='#4a5568' stroke-width='3'/>",
            f"<polygon points='{x - 8},{height - GAP - 18} {x + 8},{height - GAP - 18} {x},{height - GAP}' "
            "fill='#4a5568'/>",
            f"<text x='{x + 14}' y='{height // 2}' {FONT} font-size='12' fill='#1a202c' "
            f"transform='rotate(90 {x + 14} {height // 2})' text-anchor='middle'>imports only look down</text>",
            "</svg>"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    SVG.write_text(architecture_svg())
    print(f"wrote {SVG.relative_to(REPO)}", file=sys.stderr)
