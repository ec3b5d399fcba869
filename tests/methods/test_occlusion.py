"""Occlusion (Zeiler & Fergus 2014) equals Captum's ``Occlusion`` for the score and the loss (−L), on a small CNN and
on the embedded model, runs on the team's own compiled models, and counts the rows it runs."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion

from saliency_core import attribute
from saliency_core.errors import InvalidInputError
from saliency_core.methods.occlusion import positions
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.methods.perturbation_cases import (
    OBJECTIVES,
    assert_matches,
    check_on_own_models,
    check_progress,
    oracle_function,
    own_models,  # noqa: F401 -- fixture
    small_cnn,
    small_coffee,
    smooth_images,
)


def captum_occlusion(model, x, y, objective, window, stride, baselines=0.0):
    return Occlusion(oracle_function(model, objective)).attribute(
        x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), target=y, baselines=baselines,
        perturbations_per_eval=16)


@pytest.mark.parametrize(("window", "stride"), [(8, 4), (7, 3), (5, 5), (32, 1)])
def test_equals_captum_on_a_small_cnn(window, stride):
    net, x, y = small_cnn(), smooth_images(2, 30), torch.tensor([1, 3])
    r = attribute(net, x, y, "occlusion", OBJECTIVES, window=window, stride=stride, max_batch=7)
    for obj in OBJECTIVES:
        assert_matches(r.attributions[obj], captum_occlusion(net, x, y, obj, min(window, 30), stride))
    assert r.params["window"] == window and ("window_cut_to" in r.params) == (window > 30)


def test_equals_captum_on_the_embedded_model(lite0):
    x = small_coffee(lite0, 64)
    r = attribute(lite0, x, [967], "occlusion", OBJECTIVES, window=16, stride=8)
    for obj in OBJECTIVES:
        assert_matches(r.attributions[obj], captum_occlusion(lite0.model, x, torch.tensor([967]), obj, 16, 8))
    # One value per pixel in the three channels: max and mean |a| are |a|.
    assert torch.equal(r.attributions["score"][:, 0], r.attributions["score"][:, 2])
    torch.testing.assert_close(r.maps["score"], r.attributions["score"][:, 0].abs())


def test_a_blur_baseline_occludes_with_the_blurred_image(lite0):
    from saliency_core.core.baselines import make_baseline

    x = small_coffee(lite0, 48)
    r = attribute(lite0, x, [967], "occlusion", ("loss",), window=12, stride=12, baseline="blur")
    blurred = make_baseline(x, "blur")
    assert r.params["baseline"] == "blur" and "blur_sigma" in r.params
    assert_matches(r.attributions["loss"], captum_occlusion(lite0.model, x, torch.tensor([967]), "loss", 12, 12,
                                                            baselines=blurred))


def test_runs_on_torchscript_and_export_models(own_models):  # noqa: F811 -- the fixture
    check_on_own_models(own_models, "occlusion", {"window": 8, "stride": 4})


def test_its_cost_is_the_rows_it_runs():
    assert positions(224, 32, 16) == 13 and positions(224, 15, 8) == 28 and positions(30, 64, 4) == 1
    spec = ATTRIBUTION_METHODS["occlusion"]
    assert spec.cost().forward == 13 * 13 + 1 and spec.cost().gradient == 0  # the defaults at 224 px
    assert spec.cost({"window": 8, "stride": 4}, (32, 24)).forward == 7 * 5 + 1
    check_progress("occlusion", {"window": 8, "stride": 4})


def test_a_stride_wider_than_the_window_is_refused():
    with pytest.raises(InvalidInputError, match="stride must be at most the window"):
        attribute(small_cnn(), smooth_images(1, 32), [0], "occlusion", window=4, stride=5)
