"""Every page's cached computation is keyed on the view's MapKey (pages/ui/caches.view_key).

Three kinds of test: the key of a view, field by field (equal views, equal keys; any field that changes
the maps, another key; a display choice, the same key); each page visited twice with one view computes
once, and once more after any one field changes (AppTest, counting the engine's calls); and a scan of
the pages' source for cache keys built by hand (a map's caches also refuse them when used:
``saliency_core.serving.map_key.MapCache``).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.app.apptest import PAGES, assert_healthy
from tests.app.test_own_models import models_dir  # noqa: F401 -- fixture (custom:tiny)

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- the key of a view


def make_view(**changes):
    from pages.ui.image_sources import ImageChoice
    from pages.ui.sidebar import View

    image = ImageChoice(key="ab" * 32, title="coffee", label=967, source="sample:coffee",
                        crop=np.zeros((4, 4, 3), np.uint8), thumbnail=None)
    fields = {"model": SimpleNamespace(key=("efficientnet_lite0", ())), "image": image, "target": 3,
              "objective": "score", "reduction": "max", "precision": "exact", "problem": None,
              "problem_is_error": False, "method": "smoothgrad", "params": {"samples": 2, "noise": 0.15, "seed": 7}}
    fields.update(changes)
    return View(**fields)


def other_image(**changes):
    return dataclasses.replace(make_view().image, **changes)


#: A View field changed to another value whose maps differ: another key.
NEW_MAPS = {
    "model": SimpleNamespace(key=("efficientnet_lite0", (("/models/x.pt", 10, 1, 2),))),  # same name, new file
    "image": other_image(key="cd" * 32),
    "target": 4,
    "reduction": "mean_abs",
    "precision": "fast",
    "method": "gradient",
    "params": {"samples": 2, "noise": 0.15, "seed": 8},
}
#: A View field changed without changing the maps: the same key (the objective picks which of the maps computed
#: together a page shows; the problem is only ever set without an image).
SAME_MAPS = {"objective": "loss", "problem": "why there is no image", "problem_is_error": True}


def test_every_field_of_the_view_is_checked_below():
    from pages.ui.sidebar import View

    assert set(NEW_MAPS) | set(SAME_MAPS) == {f.name for f in dataclasses.fields(View)}


def test_identical_views_have_the_same_key():
    from pages.ui import caches

    a, b = caches.view_key(make_view()), caches.view_key(make_view(params={"seed": 7, "noise": 0.15, "samples": 2}))
    assert a == b and hash(a) == hash(b)
    assert caches.analysis_key(a) == caches.analysis_key(b)


@pytest.mark.parametrize("field", list(NEW_MAPS))
def test_views_that_differ_in_one_field_have_different_keys(field):
    from pages.ui import caches

    assert caches.view_key(make_view(**{field: NEW_MAPS[field]})) != caches.view_key(make_view())


@pytest.mark.parametrize("field", list(SAME_MAPS))
def test_a_choice_that_changes_no_map_keeps_the_key(field):
    from pages.ui import caches

    assert caches.view_key(make_view(**{field: SAME_MAPS[field]})) == caches.view_key(make_view())


def test_the_image_counts_by_its_bytes_and_its_label_not_by_where_it_came_from():
    from pages.ui import caches

    base = caches.view_key(make_view())
    assert caches.view_key(make_view(image=other_image(title="upload.png", source="upload"))) == base
    assert caches.view_key(make_view(image=other_image(label=None))) != base  # the automatic target follows it


def test_the_keys_a_page_derives_replace_one_part_of_the_view():
    from pages.ui import caches

    v = make_view()
    base = caches.view_key(v)
    gallery = caches.view_key(v, other_image(key="cd" * 32, label=1), target=-1)
    assert (gallery.image, gallery.label, gallery.target) == ("cd" * 32, 1, -1)
    run = caches.view_key(v, method="grad_cam", target=967, label=None)
    assert (run.method, run.params, run.target, run.label) == ("grad_cam", (), 967, None)
    for k in (gallery, run):
        assert (k.model, k.reduction, k.precision, k.objectives) == (base.model, base.reduction, base.precision,
                                                                     base.objectives)
    assert caches.view_key(v, method="smoothgrad", params=v.params) == base


def test_the_caches_of_maps_take_only_computation_keys():
    from pages.ui import caches
    from saliency_core.serving.map_key import MapCache

    for cache in (caches.analyses, caches.gallery_batches, caches.method_runs, caches.progress_results):
        assert isinstance(cache(), MapCache), cache.__name__


# --------------------------------------------------------------------------- no key built by hand

#: Caches in pages/ that hold no maps, so are plain LRUCaches, and the functions that key them on the model:
#: an image's decoded pixels and thumbnail (per model crop), .npz batches, a model's measured price per pass.
NOT_MAPS = {"pass_costs", "decoded_images", "decoded_npz"}
MODEL_KEYED_NOT_MAPS = {"image_views", "pass_cost"}


def _name(node: ast.AST) -> str:
    """The name a Name, Attribute or call of one ends with ("" for anything else)."""
    node = node.func if isinstance(node, ast.Call) else node
    return getattr(node, "id", None) or getattr(node, "attr", None) or ""


def _is_model_key(node: ast.AST) -> bool:
    """``model.key``, ``v.model.key``, ``get_model(name).key``: the model's part of a map's key."""
    if not (isinstance(node, ast.Attribute) and node.attr == "key"):
        return False
    owner = node.value
    return _name(owner) == ("get_model" if isinstance(owner, ast.Call) else "model")


def hand_built_keys(source: str, name: str = "<source>") -> list[str]:
    """What in ``source`` builds a map's cache key other than through map_key and computation_key."""
    found: list[str] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            called = _name(node)
            if called in ("MapKey", "ComputationKey"):
                found.append(f"{where}: {called}(...) made directly (use map_key / computation_key)")
            if called == "LRUCache" and function not in NOT_MAPS:
                found.append(f"{where}: {function}() keeps a plain LRUCache (a cache of maps is a MapCache)")
        if isinstance(node, (ast.Attribute, ast.Name)) and _name(node) == "cache_key":
            found.append(f"{where}: parameters keyed by hand (cache_key)")
        if (isinstance(node, ast.Tuple) and function not in MODEL_KEYED_NOT_MAPS
                and any(_is_model_key(n) for n in ast.walk(node))):
            found.append(f"{where}: a tuple with the model's key in it (a map's key built by hand)")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), None)
    return found


def test_no_page_builds_a_cache_key_by_hand():
    files = [REPO / "dashboard.py", *sorted((REPO / "pages").rglob("*.py"))]
    found = [f for path in files for f in hand_built_keys(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []


@pytest.mark.parametrize("source", [
    # As pages/faithfulness.py and pages/ui/caches.py built them before MapKey.
    "key = (v.image.key, v.model.key, a.target, a.reduction, v.precision)",
    "def run_key(image_key, model_name):\n    return ('method_run', image_key, get_model(model_name).key)",
    "params = method_params.cache_key(v.params)",
    "k = MapKey(model, image, 'gradient', (), ('score',), 3, None, 'max', 'exact')",
    "@st.cache_resource\ndef gallery_batches():\n    return LRUCache(max_entries=16)",
])
def test_the_scan_finds_keys_built_by_hand(source):
    assert len(hand_built_keys(source)) == 1


# --------------------------------------------------------------------------- each page, twice, then one field changed


@pytest.fixture
def engine_calls(monkeypatch) -> list[str]:
    """The engine's computations the pages start, by name (an analysis by its method's name, a method's run on
    the Methods page as "run <method>")."""
    from saliency_core.evaluation import analysis, faithfulness, method_comparison, method_ranking, sanity

    calls: list[str] = []

    def spy(module, name: str, label) -> None:
        real = getattr(module, name)

        def recording(*args, **kwargs):
            calls.append(label(*args, **kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)

    spy(analysis, "analyse", lambda *a, **k: k.get("method", "gradient"))
    spy(method_comparison, "compare_methods", lambda *a, **k: "run " + ",".join(a[3]))
    spy(faithfulness, "deletion_insertion_orders", lambda *a, **k: "deletion/insertion")
    spy(sanity, "cascading_randomization", lambda *a, **k: "randomisation")
    spy(method_ranking, "ranking_table", lambda *a, **k: "ranking")
    return calls


#: The view every case starts from (a target and seed no other test module asks for), and one field changed.
BASE = {"method": "smoothgrad", "samples": "2", "seed": "37", "target": "3"}
CHANGED = {
    "image": {"sample": "chelsea"},
    "model": {"model": "custom:tiny"},
    "method": {"method": "gradient_x_input", "samples": None, "seed": None},
    "params": {"seed": "38"},
    "target": {"target": "2"},
    "reduction": {"reduction": "mean_abs"},
    "precision": {"precision": "fast"},
    "objective": {"objective": "loss"},
}


def link(changes: dict | None = None, **more: str) -> dict[str, str]:
    return {k: v for k, v in {**BASE, **(changes or {}), **more}.items() if v is not None}


def visit(new_app, page: str, query: dict[str, str], **state) -> object:
    at = new_app(PAGES[page], **query)
    for key, value in state.items():  # the page's own options, set before its first run
        at.session_state[key] = value
    at.run()
    assert_healthy(at)
    return at


def twice_then_changed(new_app, request, page: str, field: str, base: dict, **state) -> tuple[list, list]:
    """Visit ``page`` with ``base`` twice (two sessions), then with ``field`` changed twice, then ``base``
    again; returns what the second base visit computed (nothing) and what the changed view computed."""
    if field == "model":
        request.getfixturevalue("models_dir")
    calls = request.getfixturevalue("engine_calls")
    visit(new_app, page, base, **state)
    first = len(calls)
    visit(new_app, page, base, **state)
    again = calls[first:]
    changed = {k: v for k, v in {**base, **CHANGED[field]}.items() if v is not None}
    start = len(calls)
    visit(new_app, page, changed, **state)
    new = calls[start:]
    visit(new_app, page, changed, **state)
    visit(new_app, page, base, **state)
    assert len(calls) == start + len(new), f"{page}: a view computed a second time ({calls[start:]})"
    return again, new


@pytest.mark.slow
@pytest.mark.parametrize("field", list(CHANGED))
def test_an_analysis_is_computed_once_per_view(new_app, request, field):
    again, new = twice_then_changed(new_app, request, "saliency", field, link())
    assert again == []
    if field == "objective":
        assert new == [], "the objective only picks which map is shown"
    else:
        assert new == [link(CHANGED[field])["method"]], f"{field} changed: one new analysis"


#: What the Gallery ignores of the view: the sidebar's image and target, and the objective.
GALLERY_IGNORES = {"image", "target", "objective"}


@pytest.mark.slow
@pytest.mark.parametrize("field", list(CHANGED))
def test_a_gallery_batch_is_computed_once_per_view(new_app, request, field):
    again, new = twice_then_changed(new_app, request, "gallery", field, link())
    assert again == []
    assert new == ([] if field in GALLERY_IGNORES else [link(CHANGED[field])["method"]])  # five photos: one batch


@pytest.mark.slow
@pytest.mark.parametrize("field", [*CHANGED, "steps", "stages"])
def test_the_faithfulness_checks_are_computed_once_per_view(new_app, request, field):
    state = {"faith_steps": 5, "faith_stages": 2}
    if field in ("steps", "stages"):  # the page's own options: one check each
        calls = request.getfixturevalue("engine_calls")
        visit(new_app, "faithfulness", link(), **state)
        start = len(calls)
        visit(new_app, "faithfulness", link(), **state)
        visit(new_app, "faithfulness", link(), **{**state, f"faith_{field}": 10 if field == "steps" else 3})
        assert calls[start:] == ["deletion/insertion" if field == "steps" else "randomisation"]
        return
    again, new = twice_then_changed(new_app, request, "faithfulness", field, link(), **state)
    assert again == []
    checks = [c for c in new if c in ("deletion/insertion", "randomisation")]
    assert checks == ([] if field == "objective" else ["deletion/insertion", "randomisation"])


METHODS = "gradient,gradient_x_input,smoothgrad"


@pytest.mark.slow
@pytest.mark.parametrize("field", list(CHANGED))
def test_the_methods_runs_are_computed_once_per_view(new_app, request, field):
    again, new = twice_then_changed(new_app, request, "methods", field, link(methods=METHODS))
    assert again == []
    runs = [c.removeprefix("run ") for c in new if c.startswith("run ")]
    if field == "objective":
        assert runs == []
    elif field == "params":  # the sidebar's parameters reach the method it shows only
        assert runs == ["smoothgrad"]
    elif field == "method":  # SmoothGrad is back to its defaults; Gradient × Input is given the sidebar's
        assert runs == ["gradient_x_input", "smoothgrad"]
    else:  # the Gradient row is the page's analysis: no run of its own
        assert runs == ["gradient_x_input", "smoothgrad"]


@pytest.mark.slow
def test_the_methods_ranking_is_computed_once_per_view(new_app, engine_calls):
    cheap = {"methods": "gradient,grad_cam", "method": "gradient", "target": "6", "rank": "1"}
    visit(new_app, "methods", cheap)
    visit(new_app, "methods", cheap)
    assert engine_calls.count("ranking") == 1
    visit(new_app, "methods", {**cheap, "reduction": "mean_abs"})
    assert engine_calls.count("ranking") == 2
