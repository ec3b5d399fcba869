"""The Methods page in AppTest: every method's maps, the agreement, the ranking, its link and bad links.

The maps drawn are compared with :func:`saliency_core.attribute` and the
ranking's AUCs with :func:`saliency_core.evaluation.faithfulness.deletion_insertion`,
both called here for the same image: the page's numbers are not re-derived
from what it shows.
"""

from __future__ import annotations

import numpy as np
import pytest

from saliency_core import ATTRIBUTION_METHODS, attribute
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import faithfulness, method_comparison, metric_table
from saliency_core.evaluation.method_ranking import RANKING_METRICS
from saliency_core.evaluation.metrics import get_metric
from saliency_core.methods.registry import map_title, shown_by_default
from tests.app.apptest import assert_healthy, charts, coffee, decode_plotly_array, embedded_can_run, heatmaps, texts
from tests.app.test_methods_in_pages import FAST_PARAMS, assert_close

pytestmark = pytest.mark.usefixtures("upload_dir")

PAGE = "pages/methods.py"
FAST_METHODS = embedded_can_run(shown_by_default())  # the fast methods (one pass) the embedded CNN can run
# Every method but the perturbation family, whose defaults take about 200 forward passes each (their maps on the
# pages are checked with few passes in test_methods_in_pages.py).
GRADIENT_BASED = list(embedded_can_run(m for m, spec in ATTRIBUTION_METHODS.items() if spec.family != "perturbation"))
SMOOTH = {k: str(v) for k, v in FAST_PARAMS["smoothgrad"].items()}  # a few samples: the sidebar's SmoothGrad


@pytest.fixture(scope="module")
def coffee_x(lite0):
    return lite0.preprocess(coffee()).x


def grid(at) -> dict[str, np.ndarray]:
    """The grid's maps by their subplot label ("Gradient · score")."""
    return {t["name"]: decode_plotly_array(t["z"]) for t in heatmaps(charts(at)["grid"])}


def test_the_gradient_row_reuses_the_pages_analysis_one_backward_pass_for_the_first_view(
        new_app, monkeypatch, lite0, coffee_x):
    from pages.ui import caches
    from saliency_core.core import gradients

    calls: list[int] = []
    real = gradients.forward_and_vjps

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gradients, "forward_and_vjps", counting)  # every input gradient's forward and backward
    caches.analyses().clear(), caches.method_runs().clear()  # the first view of this image and target
    at = new_app(PAGE, methods="gradient,grad_cam", target="2").run()
    assert_healthy(at)
    assert len(calls) == 1, "the Gradient row is the analysis's gradient, not a second backward pass"
    drawn = grid(at)
    expected = attribute(lite0, coffee_x, [2], "gradient", ("score", "loss"))
    for o in ("score", "loss"):
        assert_close(drawn[map_title("gradient", o)], expected.maps[o])
    assert list(drawn) == [map_title(m, o) for m in ("gradient", "grad_cam") for o in ("score", "loss")]


def test_the_page_is_registered_after_compare():
    from pages.ui.site import PAGES

    files = [p.file for p in PAGES]
    assert files.index(PAGE) == files.index("pages/compare.py") + 1


def test_default_is_the_fast_methods_and_their_maps_equal_attribute(new_app, lite0, coffee_x):
    at = new_app(PAGE).run()
    assert_healthy(at)
    assert at.multiselect(key="methods_pick").value == list(FAST_METHODS)
    drawn = grid(at)
    assert list(drawn) == [map_title(m, o) for m in FAST_METHODS for o in ("score", "loss")]
    for m in FAST_METHODS:
        expected = attribute(lite0, coffee_x, [967], m, ("score", "loss"))
        for o in ("score", "loss"):
            assert_close(drawn[map_title(m, o)], expected.maps[o])
    assert "methods" not in at.query_params and "rank" not in at.query_params  # defaults stay out of the link


def test_all_methods_render_with_the_sidebars_parameters_for_its_method(new_app, lite0, coffee_x, monkeypatch):
    monkeypatch.setenv("SALIENCY_CONFIRM_ABOVE_S", "inf")  # a rendering test: the budget has its own tests
    # Thirteen methods, Integrated Gradients' adaptive rule and Score-CAM included: over AppTest's default wait
    # on a shared 2-core machine.
    at = new_app(PAGE, methods=",".join(GRADIENT_BASED), method="smoothgrad", **SMOOTH).run(timeout=600)
    assert_healthy(at)
    drawn = grid(at)
    assert len(drawn) == 2 * len(GRADIENT_BASED)
    engine = {}
    for m in ("smoothgrad", "integrated_gradients"):  # the sidebar's method with its parameters, the other defaults
        params = FAST_PARAMS["smoothgrad"] if m == "smoothgrad" else {}
        expected = engine[m] = attribute(lite0, coffee_x, [967], m, ("score", "loss"), **params)
        for o in ("score", "loss"):
            assert_close(drawn[map_title(m, o)], expected.maps[o])
    used = at.dataframe[0].value
    row = used[used["method"] == "SmoothGrad"].iloc[0]
    assert "samples=3" in row["parameters"] and "seed=7" in row["parameters"]
    assert row["from"] == "the sidebar's Advanced"
    assert used[used["method"] == "Integrated Gradients"].iloc[0]["from"] == "defaults"
    ig = used[used["method"] == "Integrated Gradients"].iloc[0]["parameters"]
    assert "steps=256" in ig and "rule=adaptive" in ig and "tolerance=0.05" in ig  # the cap, the default rule
    # The default (adaptive) says the steps it took and the gap it reached; at the old default, 32 trapezoid
    # steps, Coffee's gap was 16 % (score) and 19 % (loss).
    steps = int(engine["integrated_gradients"].steps_used[0])
    assert f"after {steps} steps, within the 5 % tolerance" in texts(at.main.caption)
    agreement = charts(at)["agreement"]["data"][0]
    assert len(agreement["x"]) == 2 * len(GRADIENT_BASED)


def test_agreement_matrix_is_the_cores_clustered_matrix(new_app, lite0, coffee_x):
    at = new_app(PAGE, methods="gradient,grad_cam", agreement="iou_top5").run()
    assert_healthy(at)
    maps = {map_title(m, o): attribute(lite0, coffee_x, [967], m, ("score", "loss")).maps[o][0].numpy()
            for m in ("gradient", "grad_cam") for o in ("score", "loss")}
    expected = method_comparison.agreement_matrix(maps, "iou_top5")
    trace = charts(at)["agreement"]["data"][0]
    assert trace["x"] == expected.order
    np.testing.assert_allclose(decode_plotly_array(trace["z"]), expected.ordered().to_numpy(), atol=2e-3)


@pytest.mark.slow  # 9 orders x 40 images and a randomised model: about 25 s on 2 cores
def test_ranking_numbers_equal_deletion_insertion(new_app, lite0, coffee_x):
    at = new_app(PAGE, methods="gradient,grad_cam", rank="1").run()
    assert_healthy(at)
    table = at.dataframe[-1].value.set_index("map")
    for m in ("gradient", "grad_cam"):
        maps = attribute(lite0, coffee_x, [967], m, ("score", "loss")).maps
        for o in ("score", "loss"):
            r = faithfulness.deletion_insertion(lite0, coffee_x, [967], maps[o], 20, "blur", seed=0)
            row = table.loc[map_title(m, o)]
            assert row["deletion_auc"] == pytest.approx(float(r.deletion_auc[0]), rel=1e-3, abs=1e-4)
            assert row["insertion_auc"] == pytest.approx(float(r.insertion_auc[0]), rel=1e-3, abs=1e-4)
            for name in RANKING_METRICS:  # the metric columns: the engine's metric of the same map
                expected = float(get_metric(name).run(maps[o].double())[0])
                assert row[name] == pytest.approx(expected, rel=1e-4, nan_ok=True), (m, o, name)
    # Grad-CAM's map on the randomised model is zero everywhere: no ranking, ρ is NaN, and the page says why.
    assert np.isnan(table.loc[map_title("grad_cam", "score"), "randomised_spearman"])
    assert np.isfinite(table.loc[map_title("gradient", "score"), "randomised_spearman"])
    assert "a constant map has no ranking" in texts(at.main.caption)
    assert "explaining the image" in texts(at.main.caption)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Ranking (CSV)", "Ranking (JSON)"]


@pytest.mark.slow  # deletion/insertion and random logit for two maps: about 15 s on 2 cores
def test_a_linked_metric_that_runs_the_model_is_a_ranking_column_equal_to_the_engines(new_app, lite0, coffee_x):
    at = new_app(PAGE, methods="gradient", rank="1", rank_metrics="random_logit").run()
    assert_healthy(at)
    assert at.multiselect(key="methods_rank_metrics").value == ["random_logit"]
    assert at.query_params["rank_metrics"] == "random_logit"
    table = at.dataframe[-1].value.set_index("map")
    maps = attribute(lite0, coffee_x, [967], "gradient", ("score", "loss")).maps
    judged = {map_title("gradient", o): metric_table.JudgedMap("gradient", o, maps[o][0].numpy())
              for o in ("score", "loss")}
    expected = metric_table.evaluate(lite0, coffee_x, 967, judged, ["random_logit"], batch_size=8)
    for label, value in expected["random_logit"].items():
        assert table.loc[label, "random_logit"] == pytest.approx(value, rel=1e-4, abs=1e-6), label
    assert "Random logit (Sixt" in texts(at.main.caption)


def test_a_metric_the_ranking_cannot_add_is_refused_by_name_in_the_link(new_app):
    at = new_app(PAGE, methods="gradient", rank_metrics="pointing_game").run()
    assert_healthy(at)
    assert "rank_metrics=pointing_game" in texts(at.warning)
    assert at.multiselect(key="methods_rank_metrics").value == []


def test_link_round_trip(new_app):
    query = {"methods": "grad_cam,gradient", "scale": "method", "agreement": "iou_top5"}
    at = new_app(PAGE, **query).run()
    assert_healthy(at)
    assert at.multiselect(key="methods_pick").value == ["grad_cam", "gradient"]
    assert at.toggle(key="methods_scale_per_method").value and at.toggle(key="methods_iou").value
    assert not at.toggle(key="methods_rank").value
    assert {k: at.query_params[k] for k in query} == query
    assert "rank" not in at.query_params
    at.multiselect(key="methods_pick").unselect("grad_cam").run()
    at.toggle(key="methods_iou").set_value(False).run()
    assert_healthy(at)
    assert at.query_params["methods"] == "gradient" and "agreement" not in at.query_params
    assert list(grid(at)) == [map_title("gradient", "score"), map_title("gradient", "loss")]
    again = new_app(PAGE, **{k: at.query_params[k] for k in at.query_params}).run()  # the link, shared
    assert again.multiselect(key="methods_pick").value == ["gradient"]
    assert list(grid(again)) == list(grid(at))


@pytest.mark.parametrize(("query", "notice"), [
    ({"methods": "gradient,no_such_method"}, "methods=gradient,no_such_method"),
    ({"methods": ""}, "methods="),
    ({"methods": "<b>x</b>"}, "is not a comma-separated list"),
    ({"scale": "huge"}, "scale=huge"),
    ({"rank": "yes"}, "rank=yes"),
])
def test_bad_link_values_give_a_notice_and_the_default(new_app, query, notice):
    at = new_app(PAGE, **query).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error
    assert notice in texts(at.warning)
    assert at.multiselect(key="methods_pick").value == list(FAST_METHODS)
    assert not at.toggle(key="methods_rank").value and not at.toggle(key="methods_scale_per_method").value
    assert len(grid(at)) == 2 * len(FAST_METHODS)


def test_dataset_hand_over_preselects_methods(new_app):
    from pages.ui import handover

    at = new_app(PAGE)
    at.session_state[handover.METHODS_PICK] = ["gradient", "smoothgrad"]
    at.query_params["samples"] = "3"  # keep SmoothGrad short: the sidebar's parameters only apply to its method
    at.run()
    assert_healthy(at)
    assert at.multiselect(key="methods_pick").value == ["gradient", "smoothgrad"]
    assert handover.METHODS_PICK not in at.session_state
    assert at.query_params["methods"] == "gradient,smoothgrad"


def test_a_method_that_cannot_run_is_an_error_and_the_page_keeps_working(new_app, monkeypatch):
    from pages.ui import caches

    real = method_comparison.attribute

    def refuse_guided(model, X, y, method, *args, **kwargs):
        if method == "guided_backprop":
            raise InvalidInputError("guided backprop needs ReLUs (a test stand-in)")
        return real(model, X, y, method, *args, **kwargs)

    monkeypatch.setattr(method_comparison, "attribute", refuse_guided)
    caches.method_runs().clear()
    try:
        at = new_app(PAGE, methods="gradient,guided_backprop", target="1").run()
        assert not at.exception
        assert texts(at.error) == "Guided backprop can't run here: guided backprop needs ReLUs (a test stand-in)"
        assert list(grid(at)) == [map_title("gradient", "score"), map_title("gradient", "loss")]
    finally:
        caches.method_runs().clear()  # the stand-in's error must not outlive the test


def test_no_method_picked_says_so(new_app):
    at = new_app(PAGE).run()
    at.multiselect(key="methods_pick").set_value([]).run()
    assert_healthy(at)
    assert "Pick at least one method" in texts(at.info)
    assert "grid" not in charts(at)


def test_a_whole_family_is_one_click_and_goes_into_the_link(new_app):
    """With a dozen methods, picking them one by one is tedious: one button per family adds its methods after those
    already picked (each once), and the link carries the result."""
    from saliency_core.methods.registry import by_family

    at = new_app(PAGE, methods="gradient").run()
    assert_healthy(at)
    buttons = {b.key for b in at.button if (b.key or "").startswith("methods_add_")}
    assert buttons == {f"methods_add_{f}" for f in by_family() if embedded_can_run(by_family()[f])}
    at.button(key="methods_add_gradient").click().run()
    assert at.multiselect(key="methods_pick").value == list(by_family()["gradient"])  # "gradient" kept first, once
    at.button(key="methods_add_CAM").click().run()
    assert_healthy(at)
    expected = [*by_family()["gradient"], *by_family()["CAM"]]
    assert at.multiselect(key="methods_pick").value == expected
    assert at.query_params["methods"] == ",".join(expected)
