"""The compute budget in the pages (AppTest): a link over it shows the estimate and a "Compute" button and
computes nothing; only the button starts it, for that view; under the budget, and for what a cache already
holds, nothing changes.

Estimates are priced at ``PINNED_PASS_COST`` (tests/app/conftest.py), so whether a view asks does not
depend on the machine's speed; views "over the budget" here are far over it (minutes at the pinned price),
or the budget is lowered for views that are quick to compute.
"""

from __future__ import annotations

import re

import pytest

from saliency_core import ATTRIBUTION_METHODS
from tests.app.apptest import PAGES, assert_healthy, charts, embedded_can_run, texts

pytestmark = pytest.mark.usefixtures("upload_dir")

BUTTON = "confirm_compute"
ALL = ",".join(embedded_can_run(ATTRIBUTION_METHODS))  # the page drops what the embedded CNN can't run

# The probe's links (security issue, point 5), and how each page may start computing.
HEAVY_LINKS = {
    "faithfulness": {"method": "smoothgrad", "samples": "256"},
    "methods": {"methods": ALL, "rank": "1", "method": "smoothgrad", "samples": "256"},
    "gallery": {"method": "integrated_gradients", "steps": "256"},
}


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """The name of every computation the pages start in the engine (a method's maps by method name; the
    plain gradient's analysis as "gradient")."""
    from saliency_core.evaluation import analysis, faithfulness, method_comparison, method_ranking, sanity

    calls: list[str] = []

    def spy(module, name: str, label) -> None:
        real = getattr(module, name)

        def recording(*args, **kwargs):
            calls.append(label(*args, **kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)

    spy(analysis, "analyse", lambda *a, **k: k.get("method", "gradient"))
    spy(method_comparison, "compare_methods", lambda *a, **k: f"compare {','.join(a[3])}")
    spy(faithfulness, "deletion_insertion_orders", lambda *a, **k: "deletion/insertion")
    spy(sanity, "cascading_randomization", lambda *a, **k: "randomisation")
    spy(method_ranking, "ranking_table", lambda *a, **k: "ranking")
    return calls


def confirm_button(at):
    buttons = [b for b in at.button if b.key == BUTTON]
    return buttons[0] if buttons else None


def notice(at) -> str:
    return texts(at.markdown)


@pytest.mark.parametrize("page", list(HEAVY_LINKS))
def test_a_heavy_link_shows_its_estimate_and_computes_nothing(new_app, started, page):
    query = HEAVY_LINKS[page]
    at = new_app(PAGES[page], **query).run()
    assert_healthy(at)
    button = confirm_button(at)
    assert button is not None, f"{page}: the link started its computation without asking"
    about = re.fullmatch(r"Compute \(about (\d+) (s|min)\)", button.label)
    assert about and int(about[1]) * (60 if about[2] == "min" else 1) > 40, button.label  # far over 20 s
    assert "more than it starts without asking (20 s)" in notice(at)
    assert [c for c in started if c != "gradient"] == [], f"{page} computed {started} before the click"
    assert not charts(at)
    for key, value in query.items():  # the link still says what it asked for: it can be shared as it is
        assert at.query_params[key] in (value, [value])


def test_the_button_starts_the_view_which_then_stays_confirmed(new_app, started, monkeypatch):
    monkeypatch.setenv("SALIENCY_CONFIRM_ABOVE_S", "1")  # a few seconds at the pinned price: over this budget
    link = {"method": "smoothgrad", "samples": "2", "seed": "41", "target": "8"}  # a view no other test asks for
    at = new_app(PAGES["faithfulness"], **link).run()
    assert_healthy(at)
    assert confirm_button(at) is not None and started == [] and not charts(at)
    assert "(1 s)" in notice(at)

    confirm_button(at).click().run()
    assert_healthy(at)
    assert confirm_button(at) is None
    assert started == ["smoothgrad", "deletion/insertion", "randomisation"]
    assert {"deletion", "insertion", "similarity", "strip"} <= set(charts(at))

    at.run()  # a rerun (a display option changed): the same view, computed once
    assert confirm_button(at) is None and len(started) == 3 and "strip" in charts(at)

    at.slider(key="faith_steps").set_value(25).run()  # another view: its new curves ask again
    assert confirm_button(at) is not None and len(started) == 3

    guest = new_app(PAGES["faithfulness"], **link).run()  # another session, the same link: all of it cached
    assert_healthy(guest)
    assert confirm_button(guest) is None and len(started) == 3 and "strip" in charts(guest)


def test_under_the_budget_nothing_changes_and_one_pass_is_not_even_priced(new_app, started, pinned_pass_cost):
    at = new_app(PAGES["saliency"], target="9").run()  # one image's plain gradient: one pass
    assert_healthy(at)
    assert confirm_button(at) is None and "heatmap" in charts(at) and started == ["gradient"]
    assert pinned_pass_cost == [], "work no bigger than measuring its price is not priced"

    at = new_app(PAGES["faithfulness"], target="9").run()  # the default checks: seconds, under 20 s
    assert_healthy(at)
    assert confirm_button(at) is None and {"deletion", "insertion", "similarity", "strip"} <= set(charts(at))
    assert pinned_pass_cost, "the checks' work was priced"


def test_the_methods_page_asks_for_the_ranking_alone_when_the_grid_is_cheap(new_app, started, monkeypatch):
    monkeypatch.setenv("SALIENCY_CONFIRM_ABOVE_S", "1")
    at = new_app(PAGES["methods"], methods="gradient,grad_cam", target="12").run()
    assert_healthy(at)
    assert confirm_button(at) is None and "grid" in charts(at)  # Grad-CAM: one pass, never priced

    at.toggle(key="methods_rank").set_value(True).run()
    assert_healthy(at)
    assert confirm_button(at) is not None, "five orders' deletion and insertion: over a 1 s budget"
    assert "This page with 2 methods and the ranking takes about" in notice(at)
    assert "grid" in charts(at) and "ranking" not in started
    confirm_button(at).click().run()
    assert_healthy(at)
    assert confirm_button(at) is None and started.count("ranking") == 1
    assert at.get("arrow_data_frame") or at.dataframe


def test_the_gallery_asks_for_its_uncached_images_and_then_computes_them(new_app, started, monkeypatch):
    monkeypatch.setenv("SALIENCY_CONFIRM_ABOVE_S", "0.5")
    at = new_app(PAGES["gallery"], method="smoothgrad", samples="3", seed="43").run()
    assert_healthy(at)
    assert confirm_button(at) is not None and started == [] and not charts(at)
    assert "gallery of 5 images" in notice(at)
    confirm_button(at).click().run()
    assert_healthy(at)
    assert confirm_button(at) is None and started == ["smoothgrad"] and "gallery_0" in charts(at)


def test_a_budget_that_is_not_a_number_is_said_on_the_page(new_app, monkeypatch):
    monkeypatch.setenv("SALIENCY_CONFIRM_ABOVE_S", "soon")
    at = new_app(PAGES["faithfulness"], target="10").run()
    assert not at.exception
    assert "SALIENCY_CONFIRM_ABOVE_S must be a number of seconds" in texts(at.error), texts(at.error)
