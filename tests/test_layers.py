"""The engine's folders are its layers, and imports only look down; the README's picture of them is current.

Every ``import`` of every module is read from its syntax tree, those inside
functions included (an import hidden in a function is still a dependency).
The test fails on an import cycle between modules, on ``saliency_core``
importing Streamlit or the pages, and on a layer importing one above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from docs.architecture import architecture_svg, declared_layers

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "saliency_core"

# Each layer declares its rank (``LAYER = N`` in its __init__.py; errors.py is 0), lowest first. A module may
# import from its own layer or from a lower one; layers of the same rank are peers and may not import each
# other. The package root (its public face and the batch command) sits on top.
LAYERS = {name: layer.rank for name, layer in declared_layers(ROOT).items()}
TOP = max(LAYERS.values()) + 1
FORBIDDEN = ("streamlit", "pages")


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved; a name imported from a
    package counts as its submodule when there is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in known else base), node.lineno


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) == 1:
        return PACKAGE, TOP
    layer = parts[1]
    if layer not in LAYERS:
        return layer, TOP  # a module at the root: the public face or the batch command
    return layer, LAYERS[layer]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m, _ in imports(name, path, known) if m in known and m != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_inside_functions():
    assert cycles(graph()) == []


def test_the_engine_never_imports_streamlit_or_the_pages():
    known = modules()
    bad = [f"{path.relative_to(ROOT)}:{line} imports {m}" for name, path in known.items()
           for m, line in imports(name, path, known) if m.split(".")[0] in FORBIDDEN]
    assert bad == []


def test_every_module_sits_in_a_layer_and_imports_only_below_it():
    known = modules()
    unplaced = [n for n in known if len(n.split(".")) > 2 and n.split(".")[1] not in LAYERS]
    assert unplaced == []
    upward = []
    for name, path in known.items():
        layer, rank = layer_of(name)
        for m, line in imports(name, path, known):
            if m not in known:
                continue
            other, other_rank = layer_of(m)
            if other != layer and other_rank >= rank:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {m} ({other})")
    assert upward == []


@pytest.mark.parametrize(("edges", "expected"), [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_the_layer_check_sees_an_import_inside_a_function(tmp_path):
    (tmp_path / PACKAGE / "core").mkdir(parents=True)
    (tmp_path / PACKAGE / "core" / "low.py").write_text("def f():\n    from saliency_core.jobs import high\n")
    (tmp_path / PACKAGE / "jobs").mkdir()
    (tmp_path / PACKAGE / "jobs" / "high.py").write_text("")
    known = modules(tmp_path)
    found = list(imports(f"{PACKAGE}.core.low", known[f"{PACKAGE}.core.low"], known))
    assert found == [(f"{PACKAGE}.jobs.high", 2)]
    assert layer_of(f"{PACKAGE}.jobs.high")[1] > layer_of(f"{PACKAGE}.core.low")[1]


def test_every_folder_of_the_engine_is_a_layer_with_its_rank():
    """A new folder must say what it holds and where it sits (docs/architecture.py reads both)."""
    folders = {p.parent.name for p in (ROOT / PACKAGE).glob("*/__init__.py")}
    assert folders | {"errors"} == set(LAYERS)
    assert LAYERS["errors"] == 0 and LAYERS["core"] == 1 and max(LAYERS.values()) == LAYERS["jobs"]


def test_the_architecture_picture_is_drawn_from_the_code_as_it_is():
    """docs/architecture.svg (in the README) is what docs/architecture.py draws now: after a change to the layers,
    run `.venv/bin/python docs/architecture.py`."""
    assert (ROOT / "docs" / "architecture.svg").read_text() == architecture_svg(declared_layers(ROOT))
    assert "![" in (readme := (ROOT / "README.md").read_text()) and "docs/architecture.svg" in readme
