"""Integrated Gradients under a map: the steps its rule took and the gap it reached, in the caption and downloads.

Issue 22: the default (then 32 trapezoid steps) missed completeness by 16-128 % on the samples and said so
only in small print. The adaptive default says how many steps it took and that it met its tolerance, or, in
bold and first, that it stopped at its cap short of it. Few steps keep these runs short: 17 is the first
grid of the adaptive rule (9 points) and one halving of each of its segments, where Coffee's gaps are 40 %
(score) and 56 % (−L), within a tolerance of 100 %; 9 points cannot tell how much the map would move.
"""

from __future__ import annotations

import pytest

from tests.app.apptest import PAGES, assert_healthy, coffee, texts
from tests.app.test_methods_in_pages import spy_downloads
from tests.test_export import read_csv_provenance

pytestmark = pytest.mark.usefixtures("upload_dir")


@pytest.fixture(scope="module")
def coffee_ig(lite0):
    """``coffee_ig(**params)``: the engine's Integrated Gradients of Coffee, both objectives."""
    from saliency_core import attribute

    x = lite0.preprocess(coffee()).x
    return lambda **params: attribute(lite0, x, [967], "integrated_gradients", ("score", "loss"), **params)


def test_a_map_that_met_its_tolerance_says_its_steps_and_gap(new_app, coffee_ig):
    at = new_app(PAGES["saliency"], method="integrated_gradients", steps="17", tolerance="1").run()
    assert_healthy(at)
    expected = coffee_ig(steps=17, tolerance=1.0)
    assert expected.converged.tolist() == [True] and expected.steps_used.tolist() == [17]
    notes = texts(at.main.caption)
    gaps = ", ".join(f"{o} {abs(float(expected.convergence[o][0])) * 100:.1f} %" for o in ("score", "loss"))
    assert f"{gaps} after 17 steps, within the 100 % tolerance (adaptive rule)" in notes, notes
    assert "Not converged" not in notes


def test_a_map_stopped_at_its_cap_says_so_first_and_in_the_download(new_app, monkeypatch, coffee_ig):
    data = spy_downloads(monkeypatch)
    at = new_app(PAGES["saliency"], method="integrated_gradients", steps="9").run()
    assert_healthy(at)
    expected = coffee_ig(steps=9)
    assert expected.converged.tolist() == [False]
    captions = [c.value for c in at.main.caption]
    (note,) = [c for c in captions if "Completeness gap" in c]
    assert note.startswith("**Not converged:** the adaptive rule stopped at its cap of 9 steps short of the 5 % "
                           "tolerance"), note
    assert f"loss {abs(float(expected.convergence['loss'][0])) * 100:.1f} %" in note
    header = read_csv_provenance(data["Download map and attributions (CSV)"]())
    record = header["saliency"]["attribution"]
    assert record["params"] == {"steps": 9, "baseline": "black", "rule": "adaptive", "tolerance": 0.05}
    assert record["steps_used"] == 9 and record["converged"] is False
    assert record["completeness_gap"]["score"] == pytest.approx(float(expected.convergence["score"][0]), rel=1e-4)


def test_a_fixed_rule_says_its_steps_and_no_tolerance(new_app, coffee_ig):
    at = new_app(PAGES["saliency"], method="integrated_gradients", steps="4", rule="trapezoid").run()
    assert_healthy(at)
    expected = coffee_ig(steps=4, rule="trapezoid")
    notes = texts(at.main.caption)
    assert f"score {abs(float(expected.convergence['score'][0])) * 100:.1f} %" in notes
    assert "at 4 steps (trapezoid rule); more steps or the adaptive rule reduce it" in notes, notes
    assert "tolerance" not in notes
