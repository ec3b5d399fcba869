"""Every page, any method: the sidebar's Method drives the pages, links carry it, bad links don't break them.

The maps drawn are compared with :func:`saliency_core.attribute` called here
for the same image, not re-derived from what the page shows. SmoothGrad and
Integrated Gradients run with a few samples / steps to keep the suite fast.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest

from saliency_core import ATTRIBUTION_METHODS, attribute
from tests.app.apptest import (
    PAGES,
    assert_healthy,
    charts,
    chelsea,
    coffee,
    decode_plotly_array,
    heatmap_z,
    heatmaps,
    main_markdown,
    shown,
    texts,
)
from tests.test_export import read_csv_provenance

pytestmark = pytest.mark.usefixtures("upload_dir")

# Small settings for the slow methods; every other method with its defaults.
FAST_PARAMS: dict[str, dict[str, object]] = {
    "gradient": {},
    "gradient_x_input": {},
    "smoothgrad": {"samples": 3, "noise": 0.2, "seed": 7},
    "smoothgrad_sq": {"samples": 3, "noise": 0.2, "seed": 7},
    "vargrad": {"samples": 2, "seed": 1},
    "integrated_gradients": {"steps": 4, "rule": "gauss_legendre"},
    "blur_ig": {"steps": 3},
    "guided_ig": {"steps": 3},
    "expected_gradients": {"samples": 3, "seed": 2},
    "xrai": {"steps": 2},
    "deeplift": {},
    "guided_backprop": {},
    "grad_cam": {},
    "grad_cam_plus_plus": {},
    "layer_cam": {},
    "hires_cam": {},
    "score_cam": {"channels": 4},
    "occlusion": {"window": 56, "stride": 56},
    "rise": {"masks": 6, "seed": 3},
    "kernel_shap": {"samples": 8, "segments": 12},
    "lime": {"samples": 8, "superpixels": "slic", "segments": 12},
    "attention_rollout": {},
    "chefer_attention": {},
}
# What a link writes for those settings (and a non-default layer / baseline where the method has one).
LINK_PARAMS: dict[str, dict[str, str]] = {
    "gradient": {},
    "gradient_x_input": {"baseline": "black"},
    "smoothgrad": {"samples": "3", "noise": "0.2", "seed": "7"},
    "smoothgrad_sq": {"samples": "3", "noise": "0.2", "seed": "7"},
    "vargrad": {"samples": "2", "seed": "1"},
    "integrated_gradients": {"steps": "4", "rule": "gauss_legendre", "baseline": "dataset_mean"},
    "blur_ig": {"steps": "3", "max_sigma": "30.0", "spacing": "sqrt"},
    "guided_ig": {"steps": "3", "fraction": "0.5", "max_dist": "0.1", "baseline": "dataset_mean"},
    "expected_gradients": {"samples": "3", "baselines": "noise", "seed": "2"},
    "xrai": {"steps": "2", "mode": "fast", "area_threshold": "0.5"},
    "deeplift": {"baseline": "blur"},
    "guided_backprop": {},
    "grad_cam": {"layer": "_blocks.14._project_conv"},
    "grad_cam_plus_plus": {"layer": "_blocks.14._project_conv"},
    "layer_cam": {"layer": "_blocks.13._project_conv"},
    "hires_cam": {"layer": "_blocks.14._project_conv"},
    "score_cam": {"layer": "_blocks.14._project_conv", "channels": "4"},
    "occlusion": {"window": "56", "stride": "28", "baseline": "blur"},
    "rise": {"masks": "6", "grid": "5", "keep": "0.3", "seed": "2"},
    "kernel_shap": {"samples": "8", "segments": "12", "seed": "4"},
    "lime": {"samples": "8", "superpixels": "slic", "segments": "12", "kernel_width": "0.5"},
    "attention_rollout": {"head_fusion": "max", "discard_ratio": "0.5"},
    "chefer_attention": {},
}
#: The methods the embedded CNN can run: the attention methods need a ViT, and a link to them says so (below).
EMBEDDED = [m for m in FAST_PARAMS if "attention_blocks" not in ATTRIBUTION_METHODS[m].needs]
RTOL, ATOL = 1e-4, 1e-6


def test_every_method_is_covered():
    assert set(FAST_PARAMS) == set(LINK_PARAMS) == set(ATTRIBUTION_METHODS)


@pytest.fixture(scope="module")
def engine(lite0):
    """``engine(image, target, method, **params)``: saliency_core.attribute's maps for both objectives (memoised)."""
    memo = {}

    def run(image, target: int, method: str, **params):
        key = (hashlib.sha256(np.asarray(image).tobytes()).hexdigest(), target, method,
               tuple(sorted(params.items())))
        if key not in memo:
            x = lite0.preprocess(image).x
            memo[key] = attribute(lite0, x, [target], method, ("score", "loss"), **params)
        return memo[key]

    return run


def assert_close(actual: np.ndarray, expected) -> None:
    expected = expected[0].detach().cpu().numpy() if not isinstance(expected, np.ndarray) else expected
    assert actual.shape == expected.shape == (224, 224)
    assert float(expected.max()) > 0
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * float(expected.max()))


def open_with(new_app, page: str, method: str, **query: str):
    params = {k: str(v) for k, v in FAST_PARAMS[method].items()}
    return new_app(PAGES[page], method=method, **params, **query).run()


# --------------------------------------------------------------------------- every method on Saliency and Compare


@pytest.mark.parametrize("method", EMBEDDED)
def test_every_method_renders_on_the_saliency_page_with_saliency_core_maps(new_app, engine, method):
    at = open_with(new_app, "saliency", method, objective="loss")
    assert_healthy(at)
    assert at.selectbox(key="method").value == method
    expected = engine(coffee(), 967, method, **FAST_PARAMS[method])
    assert_close(heatmap_z(at), expected.maps["loss"])
    title = ATTRIBUTION_METHODS[method].title
    assert title in main_markdown(at)
    for name, value in FAST_PARAMS[method].items():
        assert f"{name}={value}" in main_markdown(at)
    notes = texts(at.main.caption)
    if ATTRIBUTION_METHODS[method].loss_objective == "-L":
        assert "−L: positive = evidence for the target" in notes
    if method == "integrated_gradients":
        gap = abs(float(expected.convergence["loss"][0])) * 100
        assert "Completeness gap" in notes and f"loss {gap:.1f} %" in notes and "more steps" in notes, notes
    if method == "expected_gradients":
        gap = abs(float(expected.convergence["loss"][0])) * 100
        assert "over 3 samples" in notes and f"loss {gap:.1f} %" in notes and "more samples" in notes, notes


@pytest.mark.parametrize("method", EMBEDDED)
def test_every_method_renders_on_the_compare_page(new_app, engine, method):
    at = open_with(new_app, "compare", method, sample="chelsea")
    assert_healthy(at)
    expected = engine(chelsea(), 281, method, **FAST_PARAMS[method])
    traces = {t["name"]: decode_plotly_array(t["z"]) for t in heatmaps(charts(at)["side_by_side"])}
    for objective in ("score", "loss"):
        assert_close(traces[objective], expected.maps[objective])
    infos = texts(at.info)
    if method == "gradient":
        assert {"term_target", "term_others"} <= set(charts(at)) and not infos
    else:
        assert "applies to the plain gradient only" in infos, infos
        assert not {"term_target", "term_others"} & set(charts(at))


def test_hover_names_attributions_and_grad_cam_has_no_channels(new_app):
    at = open_with(new_app, "saliency", "gradient_x_input")
    (trace,) = heatmaps(charts(at)["heatmap"])
    assert "attr R" in trace["hovertemplate"] and "∂/∂R" not in trace["hovertemplate"]
    at = open_with(new_app, "saliency", "grad_cam")
    (trace,) = heatmaps(charts(at)["heatmap"])
    assert "customdata" not in trace or trace["customdata"] is None
    assert "one channel" in texts(at.main.caption)


# --------------------------------------------------------------------------- the sidebar drives every page


# The methods whose loss map is of −L = log p_y (README, glossary): their sign matters.
MINUS_L = {"gradient_x_input", "integrated_gradients", "blur_ig", "guided_ig", "expected_gradients", "xrai",
           "deeplift", "guided_backprop", "grad_cam", "grad_cam_plus_plus", "layer_cam", "hires_cam", "score_cam",
           "occlusion", "rise", "kernel_shap", "lime", "chefer_attention"}


@pytest.mark.parametrize("method", EMBEDDED)
def test_the_sidebar_names_the_loss_objective_as_the_method_uses_it(new_app, method):
    """The Objective picker's labels are the registry's map titles: "−L" for a method that explains −L, never
    a plain "L" there (a deliberate bug that called every loss "L" passed the other tests)."""
    from saliency_core.methods.registry import map_title

    assert (ATTRIBUTION_METHODS[method].loss_objective == "-L") == (method in MINUS_L)
    at = new_app(PAGES["home"], method=method).run()
    assert_healthy(at)
    score, loss = at.radio(key="objective").options
    assert ("−L" in loss) == (method in MINUS_L), loss
    assert "−L" not in score, score
    if method != "gradient":  # the plain gradient keeps its cs231n labels, "Loss gradient ∂L/∂x"
        assert (score, loss) == (map_title(method, "score"), map_title(method, "loss"))



def test_the_sidebar_method_drives_statistics_and_gallery(new_app, engine):
    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="method").set_value("gradient_x_input").run()
    assert_healthy(at)
    expected = engine(coffee(), 967, "gradient_x_input")
    assert_close(heatmap_z(at), expected.maps["score"])
    assert at.query_params.get("method") in ("gradient_x_input", ["gradient_x_input"])

    at.switch_page(PAGES["statistics"]).run()
    assert_healthy(at)
    assert "Gradient × input" in main_markdown(at)
    summary = at.dataframe[0].value.set_index("statistic")
    from saliency_core.evaluation.stats import summary_table

    reference = summary_table({m: expected.maps[m][0].numpy() for m in ("score", "loss")}).T
    np.testing.assert_allclose(summary.loc["gini", "score"], reference.loc["gini", "score"], rtol=1e-4)

    at.switch_page(PAGES["gallery"]).run()
    assert_healthy(at)
    assert "Gradient × input" in main_markdown(at)
    first = heatmaps(charts(at)["gallery_0"])
    # The gallery's first image is the first sample with its true label.
    from saliency_core.inputs.samples import sample_images

    s = sample_images()[0]
    ref = engine(s.image, s.label, "gradient_x_input")
    assert_close(decode_plotly_array(first[0]["z"]), ref.maps["score"])


def test_statistics_download_names_the_method_and_its_parameters(new_app, monkeypatch):
    import json

    data = spy_downloads(monkeypatch)
    at = open_with(new_app, "statistics", "smoothgrad")
    assert_healthy(at)
    record = json.loads(data["Everything with provenance (JSON)"])
    attribution = record["saliency"]["attribution"]
    assert attribution["name"] == "smoothgrad" and attribution["params"] == FAST_PARAMS["smoothgrad"]
    assert "SmoothGrad" in record["saliency"]["definition"]["score"]
    assert "samples=3" in record["saliency"]["definition"]["loss"]
    # "objective" says score or loss, "method" the attribution method, in the record and the top pixels.
    assert (record["saliency"]["objective"], record["saliency"]["method"]) == ("score", "smoothgrad")
    assert (record["top_pixels"]["objective"], record["top_pixels"]["method"]) == ("score", "smoothgrad")


def test_saliency_csv_carries_provenance_and_attributions(new_app, monkeypatch, engine):
    data = spy_downloads(monkeypatch)
    at = open_with(new_app, "saliency", "integrated_gradients")
    assert_healthy(at)
    raw = data["Download map and attributions (CSV)"]()
    header = read_csv_provenance(raw)
    # "method" names the attribution method, "objective" score or loss (it once held "score": issue 22).
    assert (header["saliency"]["method"], header["saliency"]["objective"]) == ("integrated_gradients", "score")
    assert header["saliency"]["attribution"]["params"]["steps"] == 4
    assert "completeness_gap" in header["saliency"]["attribution"]
    frame = pd.read_csv(io.BytesIO(raw), comment="#")
    assert list(frame.columns) == ["x", "y", "value", "attr_r", "attr_g", "attr_b"]
    expected = engine(coffee(), 967, "integrated_gradients", **FAST_PARAMS["integrated_gradients"])
    np.testing.assert_allclose(frame["attr_g"].to_numpy(), expected.attributions["score"][0, 1].numpy().ravel(),
                               rtol=1e-4, atol=1e-7)


def spy_downloads(monkeypatch) -> dict:
    """label -> data of every download button drawn from now on (in columns too)."""
    from streamlit.delta_generator import DeltaGenerator

    data = {}
    original = DeltaGenerator.download_button

    def spy(self, label, payload, *args, **kwargs):
        data[label] = payload
        return original(self, label, payload, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)
    return data


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("method", EMBEDDED)
def test_a_link_reproduces_every_parameter_of_every_method(new_app, engine, method):
    at = new_app(PAGES["saliency"], method=method, **LINK_PARAMS[method]).run()
    assert_healthy(at)
    assert not at.warning, [w.value for w in at.warning]
    for name, text in LINK_PARAMS[method].items():
        widget = at.sidebar.get("selectbox") + at.sidebar.get("number_input")
        (control,) = [w for w in widget if w.key == f"param.{method}.{name}"]
        assert str(control.value) == text
    # Written back exactly: the link the page shows is the link it was opened with.
    written = {k: at.query_params[k] for k in at.query_params}
    written = {k: v[0] if isinstance(v, list) else v for k, v in written.items()}
    assert written == {"method": method, **LINK_PARAMS[method]} if method != "gradient" else written == {}
    spec = ATTRIBUTION_METHODS[method]
    # The declared kind, not the default's type: a default may be None (Integrated Gradients' steps, a layer).
    params = {p.name: p.kind(LINK_PARAMS[method][p.name]) for p in spec.params if p.name in LINK_PARAMS[method]}
    if method in ("smoothgrad", "integrated_gradients", "vargrad", "deeplift"):
        # Opened in a fresh session, the same map.
        expected = engine(coffee(), 967, method, **params)
        assert_close(heatmap_z(at), expected.maps["score"])


@pytest.mark.parametrize("method", sorted(set(FAST_PARAMS) - set(EMBEDDED)))
def test_a_link_to_an_attention_method_on_the_embedded_cnn_says_why_and_shows_the_gradient(new_app, method):
    at = new_app(PAGES["saliency"], method=method, **LINK_PARAMS[method]).run()
    assert_healthy(at)
    notice = texts(at.warning)
    assert f"method={method} can't run on" in notice and "ViT/DeiT-style global self-attention" in notice, notice
    assert at.selectbox(key="method").value == "gradient"


def test_changing_a_parameter_writes_it_to_the_link(new_app):
    at = new_app(PAGES["saliency"], method="smoothgrad", samples="2").run()
    (seed,) = [w for w in at.sidebar.get("number_input") if w.key == "param.smoothgrad.seed"]
    seed.set_value(11).run()
    assert_healthy(at)
    assert at.query_params.get("seed") in ("11", ["11"]) and at.query_params.get("samples") in ("2", ["2"])
    again = new_app(PAGES["saliency"], **{k: at.query_params[k] for k in at.query_params}).run()
    np.testing.assert_array_equal(heatmap_z(again), heatmap_z(at))


@pytest.mark.parametrize(("query", "says"), [
    ({"method": "smoothgrad", "samples": "-3"}, "samples=-3"),
    ({"method": "smoothgrad", "samples": "1000000000"}, "256"),
    ({"method": "integrated_gradients", "steps": "1000000000"}, "steps=1000000000"),
    ({"method": "integrated_gradients", "steps": "1"}, "an integer from 2 to 256"),  # the trapezoid needs 2 points
    ({"method": "integrated_gradients", "rule": "simpson"}, "rule=simpson"),
    ({"method": "smoothgrad", "noise": "nan"}, "noise=nan"),
    ({"method": "grad_cam", "layer": "no.such.layer"}, "layer=no.such.layer"),
    ({"method": "no_such_method"}, "method=no_such_method"),
    ({"method": "gradient", "steps": "8"}, "not a parameter of Gradient"),
])
def test_an_invalid_parameter_in_a_link_says_so_and_shows_the_default(new_app, query, says):
    at = new_app(PAGES["saliency"], **query).run()
    assert_healthy(at)
    notices = [shown(w.value) for w in at.warning]
    assert len(notices) == 1 and says in notices[0], notices
    assert "heatmap" in charts(at)
    if query["method"] != "gradient" and ("steps" in query or "samples" in query):
        assert "256" in notices[0], notices  # the dashboard's limit is said


def test_an_older_baseline_name_in_a_link_is_read_as_the_image_it_meant(new_app):
    """baseline=zeros, from before the baselines were named by their image: 0 after normalisation for attribution."""
    at = new_app(PAGES["saliency"], method="integrated_gradients", steps="4", baseline="zeros").run()
    assert_healthy(at)
    notices = [shown(w.value) for w in at.warning]
    assert len(notices) == 1 and "baseline=zeros" in notices[0] and "read as baseline = dataset_mean" in notices[0]
    (control,) = [w for w in at.sidebar.get("selectbox") if w.key == "param.integrated_gradients.baseline"]
    assert control.value == "dataset_mean" and at.query_params.get("baseline") in ("dataset_mean", ["dataset_mean"])


def test_integrated_gradients_steps_input_starts_at_two(new_app):
    at = new_app(PAGES["saliency"], method="integrated_gradients", steps="8").run()
    assert_healthy(at)
    (steps,) = [w for w in at.sidebar.get("number_input") if w.key == "param.integrated_gradients.steps"]
    assert steps.min == 2 and steps.value == 8  # one point is no path: the trapezoid rule needs two


# --------------------------------------------------------------------------- faithfulness


@pytest.mark.slow
def test_faithfulness_uses_the_chosen_method_for_both_checks(new_app, engine, lite0, monkeypatch):
    from pages.ui import caches
    from saliency_core.evaluation import faithfulness, sanity

    calls = []
    original = sanity.cascading_randomization

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attribution"), kwargs.get("params")))
        return original(*args, **kwargs)

    monkeypatch.setattr(sanity, "cascading_randomization", spy)
    caches.progress_results().clear()
    at = new_app(PAGES["faithfulness"], method="grad_cam").run()
    at.slider(key="faith_stages").set_value(2).run()
    assert_healthy(at)
    assert "Grad-CAM" in main_markdown(at)
    expected = engine(coffee(), 967, "grad_cam")
    x = lite0.preprocess(coffee()).x
    curves = faithfulness.deletion_insertion_orders(
        lite0, x, [967], {m: expected.maps[m].numpy() for m in ("score", "loss")}, 20, "blur", random="random order",
        batch_size=8, seed=0)
    drawn = {t["name"]: decode_plotly_array(t["y"]) for t in charts(at)["deletion"]["data"]}
    for name in ("score", "loss", "random order"):
        np.testing.assert_allclose(drawn[name], curves[name].deletion[0], rtol=1e-4, atol=1e-6)
    assert calls[-1] == ("grad_cam", {"layer": None})
    strip = heatmaps(charts(at)["strip"])
    assert len(strip) == 2 * 3  # score/loss x the trained model and 2 stages
    # Warm: a second visit computes nothing.
    calls.clear()
    at.run()
    assert not calls


def test_a_slow_method_shows_progress_once_and_a_second_visit_is_instant(new_app, monkeypatch):
    from pages.ui import caches
    from saliency_core.evaluation import analysis

    calls = []
    original = analysis.attribute

    def counting(*args, **kwargs):
        calls.append(kwargs.get("progress"))
        return original(*args, **kwargs)

    monkeypatch.setattr(analysis, "attribute", counting)
    caches.analyses().clear()
    at = new_app(PAGES["saliency"], method="smoothgrad", samples="2", seed="5").run()
    assert_healthy(at)
    assert len(calls) == 1 and calls[0] is not None  # reported progress to the page's bar
    again = new_app(PAGES["compare"], method="smoothgrad", samples="2", seed="5").run()  # another session
    assert_healthy(again)
    assert len(calls) == 1
    at.selectbox(key="colorscale").set_value("viridis").run()  # a display option
    assert len(calls) == 1
    (seed,) = [w for w in at.sidebar.get("number_input") if w.key == "param.smoothgrad.seed"]
    seed.set_value(6).run()  # a parameter: new maps
    assert len(calls) == 2
