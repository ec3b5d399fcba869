"""The Faithfulness page's table of every metric: its values are the engine's for the same maps.

The deletion/insertion and randomisation checks run at their lightest (5 steps, 2 stages) to keep these quick.
"""

from __future__ import annotations

import numpy as np
import pytest

from pages.ui.method_params import map_title
from saliency_core.evaluation import metric_table
from saliency_core.evaluation.analysis import analyse
from saliency_core.evaluation.metrics import get_metric
from saliency_core.inputs.object_mask import box_mask
from saliency_core.inputs.preprocessing import normalize
from saliency_core.inputs.samples import sample_by_name
from tests.app.apptest import PAGES, assert_healthy, png_bytes, texts

LIGHT = {"deletion_steps": "5", "stages": "2"}
BOX = (60, 40, 180, 200)


@pytest.fixture(scope="module")
def chelsea_maps(lite0):
    """The engine's own score and loss maps of the Chelsea sample, as the page computes them."""
    sample = sample_by_name("chelsea")
    a = analyse(lite0, lite0.crop_array(sample.image)[None], [None], [sample.label])[0]
    judged = {map_title(a.method, m): metric_table.JudgedMap(a.method, m, a.maps[m], a.params, a.reduction)
              for m in ("score", "loss")}
    return a, judged, normalize(a.display[None], lite0.preprocessing)


def metrics_frame(at):
    frames = [d.value for d in at.dataframe if "metric" in d.value.columns]
    assert len(frames) == 1, [list(d.value.columns) for d in at.dataframe]
    return frames[0].set_index("metric")


def assert_rows_equal(frame, scores, judged):
    for name, by_map in scores.items():
        row = frame.loc[get_metric(name).title]
        assert row["paper"] == get_metric(name).citation and row["better"] == get_metric(name).better
        for label in judged:
            np.testing.assert_allclose(row[label], by_map[label], rtol=1e-9, equal_nan=True, err_msg=name)


def test_map_only_metrics_at_once_equal_the_engine(new_app, chelsea_maps):
    _a, judged, _ = chelsea_maps
    at = new_app(PAGES["faithfulness"], sample="chelsea", **LIGHT).run()
    assert_healthy(at)
    frame = metrics_frame(at)
    assert set(frame.index) == {get_metric(n).title for n in metric_table.MAP_ONLY}
    assert_rows_equal(frame, metric_table.evaluate(None, None, None, judged, metric_table.MAP_ONLY), judged)
    assert "Draw a box on the image" in texts(at.caption)


def test_a_box_in_the_link_adds_the_localisation_scores(new_app, chelsea_maps):
    a, judged, _ = chelsea_maps
    at = new_app(PAGES["faithfulness"], sample="chelsea", box=",".join(map(str, BOX)), **LIGHT).run()
    assert_healthy(at)
    frame = metrics_frame(at)
    mask = box_mask(BOX, a.maps["score"].shape)
    expected = metric_table.evaluate(None, None, None, judged, metric_table.LOCALISATION, mask=mask)
    assert_rows_equal(frame, expected, judged)
    assert "Localisation against the box x 60–179, y 40–199" in texts(at.caption)
    assert at.query_params["box"] in ("60,40,180,200", ["60,40,180,200"])
    at.button(key="faith_box_clear").click().run()  # clearing the box drops the rows and the link's box
    assert set(metrics_frame(at).index) == {get_metric(n).title for n in metric_table.MAP_ONLY}
    assert "box" not in at.query_params


def test_a_box_outside_the_crop_is_refused_with_a_message(new_app):
    at = new_app(PAGES["faithfulness"], sample="chelsea", box="0,0,500,10", **LIGHT).run()
    assert "The link's box can't be used on this image" in texts(at.error)
    assert "box" not in at.query_params


@pytest.mark.parametrize(("data", "message"), [
    (png_bytes(np.zeros((10, 10), np.uint8)), "it must be the crop's size, 224 × 224"),
    (b"not an image at all", "not a readable PNG image"),
    (png_bytes(np.zeros((224, 224), np.uint8)), "The mask is empty"),
])
def test_a_bad_mask_says_what_is_wrong(new_app, data, message):
    at = new_app(PAGES["faithfulness"], sample="chelsea", **LIGHT).run()
    at.file_uploader(key="faith_mask").upload("mask.png", data, "image/png").run()
    assert message in texts(at.error)
    assert set(metrics_frame(at).index) == {get_metric(n).title for n in metric_table.MAP_ONLY}


def test_an_uploaded_mask_gives_the_localisation_scores(new_app, chelsea_maps):
    _a, judged, _ = chelsea_maps
    mask = np.zeros((224, 224), np.uint8)
    mask[100:150, 30:90] = 255
    at = new_app(PAGES["faithfulness"], sample="chelsea", **LIGHT).run()
    at.file_uploader(key="faith_mask").upload("mask.png", png_bytes(mask), "image/png").run()
    assert_healthy(at)
    expected = metric_table.evaluate(None, None, None, judged, metric_table.LOCALISATION, mask=mask > 0)
    assert_rows_equal(metrics_frame(at), expected, judged)
    assert "the uploaded mask (3,000 pixels)" in texts(at.caption)


@pytest.mark.slow
def test_a_picked_slow_metric_runs_the_model_and_equals_the_engine(new_app, chelsea_maps, lite0):
    a, judged, x = chelsea_maps
    at = new_app(PAGES["faithfulness"], sample="chelsea", slow_metrics="random_logit", **LIGHT).run()
    assert_healthy(at)
    expected = metric_table.evaluate(lite0, x, a.target, judged, ["random_logit"])
    assert_rows_equal(metrics_frame(at), expected, judged)


def test_a_metric_that_runs_the_model_is_listed_with_its_cost_in_words():
    from pages.ui.labels import metric_label
    from saliency_core.evaluation.metric_table import metric_cost
    from saliency_core.evaluation.metrics import get_metric

    assert metric_cost(["random_logit"]).forward == 1 and metric_cost(["random_logit"]).attributions == 1
    assert metric_label("random_logit") == f"{get_metric('random_logit').title} (1 forward pass, 1 map recomputed)"
    road = metric_cost(["road_morf"]).forward
    assert road > 1 and metric_label("road_morf") == f"{get_metric('road_morf').title} ({road} forward passes)"
