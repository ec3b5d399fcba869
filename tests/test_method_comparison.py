"""compare_methods and agreement_matrix: the numbers are attribute()'s and stats' own, failures are reported."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from saliency_core import ATTRIBUTION_METHODS, attribute
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.agreement import agreement
from saliency_core.evaluation.method_comparison import (
    agreement_matrix,
    cluster_order,
    compare_methods,
)
from saliency_core.methods.registry import map_title, shown_by_default

SMALL = {
    "smoothgrad": {"samples": 3, "noise": 0.1, "seed": 2},
    "integrated_gradients": {"steps": 4},
    "blur_ig": {"steps": 3},
    "guided_ig": {"steps": 3},
    "expected_gradients": {"samples": 2},
    "xrai": {"steps": 2},
    "smoothgrad_sq": {"samples": 2},
    "vargrad": {"samples": 2},
    "occlusion": {"window": 16, "stride": 16},
    "rise": {"masks": 4},
    "kernel_shap": {"samples": 6, "segments": 8},
    "lime": {"samples": 6, "superpixels": "slic", "segments": 8},
    "score_cam": {"channels": 4},
}
FAST_METHODS = shown_by_default()
SLOW_METHODS = tuple(m for m in ATTRIBUTION_METHODS if m not in FAST_METHODS)
#: What the embedded CNN can run: the attention methods need a ViT (tests/methods/test_attention_maps.py).
ALL = tuple(m for m in FAST_METHODS + SLOW_METHODS if "attention_blocks" not in ATTRIBUTION_METHODS[m].needs)


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def comparison(lite0, image):
    calls = []
    with pytest.warns(RuntimeWarning, match="completeness gap"):  # 4 IG steps, on purpose
        result = compare_methods(lite0, image, -1, ALL, SMALL, progress=lambda d, t: calls.append((d, t)))
    result.calls = calls
    return result


def test_fast_and_slow_methods_cover_the_registry():
    """The methods shown by default are those that declare themselves fast: one pass per image, whatever their
    parameters; the others take many."""
    assert FAST_METHODS == ("gradient", "gradient_x_input", "guided_backprop", "grad_cam", "grad_cam_plus_plus",
                            "layer_cam", "hires_cam", "attention_rollout", "chefer_attention")
    assert set(FAST_METHODS) | set(SLOW_METHODS) == set(ATTRIBUTION_METHODS)
    assert not set(FAST_METHODS) & set(SLOW_METHODS)
    assert all(ATTRIBUTION_METHODS[m].cost().rows == 1 for m in FAST_METHODS)
    assert all(ATTRIBUTION_METHODS[m].cost().rows > 1 for m in SLOW_METHODS)


@pytest.mark.filterwarnings("ignore:Integrated Gradients")
def test_every_map_is_attributes_own(lite0, image, comparison):
    assert list(comparison.runs) == list(ALL) and not comparison.failed
    top1 = int(lite0.model(image).argmax())
    assert comparison.target == top1
    for method, run in comparison.runs.items():
        r = attribute(lite0, image, [-1], method, ("score", "loss"), **SMALL.get(method, {}))
        assert run.params == r.params and run.seconds > 0
        for obj in ("score", "loss"):
            np.testing.assert_array_equal(run.maps[obj], r.maps[obj][0].numpy())
            assert run.maps[obj].shape == (64, 64) and run.maps[obj].dtype == np.float32
        # few steps or samples: a gap
        if method in ("integrated_gradients", "blur_ig", "guided_ig", "expected_gradients"):
            assert run.completeness_gap == {o: pytest.approx(float(r.convergence[o][0])) for o in ("score", "loss")}
            said = [n for n in run.notes if "completeness gap" in n]
            ends = ("allow more steps or a larger tolerance" if run.converged is not None  # the adaptive rule
                    else ATTRIBUTION_METHODS[method].gap_note)  # what the method says of its gap
            assert said and all(n.endswith(ends) for n in said), run.notes
        elif method == "deeplift":  # complete: a gap of rounding only, and no note
            assert run.completeness_gap == {o: pytest.approx(float(r.convergence[o][0])) for o in ("score", "loss")}
            assert max(abs(g) for g in run.completeness_gap.values()) < 1e-4 and not run.notes
        else:
            assert run.completeness_gap is None
    assert comparison.target_prob == pytest.approx(float(r.probs[0, top1]))
    labels = list(comparison.maps())
    assert len(labels) == 2 * len(ALL) and labels[:2] == ["Gradient · score", "Gradient · loss"]
    assert map_title("grad_cam", "loss") == "Grad-CAM · loss −L" in labels
    assert list(comparison.by_method()) == list(ALL)


@pytest.mark.parametrize("target", [None, 3])
def test_the_gradient_run_from_an_analysis_is_compare_methods_own(lite0, target):
    from saliency_core.evaluation.analysis import analyse
    from saliency_core.evaluation.method_comparison import gradient_comparison

    crop = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    a = analyse(lite0, crop, [target], reduction="l2")[0]
    made = gradient_comparison(a)
    x = lite0.prepare_crops(crop).x
    expected = compare_methods(lite0, x, a.target, ("gradient",), reduction="l2")
    assert (made.target, made.target_prob, made.objectives, made.reduction, made.precision, made.shape) == (
        expected.target, expected.target_prob, expected.objectives, "l2", "exact", expected.shape)
    run, want = made.runs["gradient"], expected.runs["gradient"]
    assert list(made.runs) == ["gradient"] and run.ok and run.params == want.params == {} and run.given == {}
    for obj in ("score", "loss"):
        np.testing.assert_array_equal(run.maps[obj], want.maps[obj])
        np.testing.assert_array_equal(run.attributions[obj], want.attributions[obj])
    assert run.completeness_gap is None and run.notes == []


def test_only_a_gradient_analysis_makes_a_gradient_run(lite0):
    from saliency_core.evaluation.analysis import analyse
    from saliency_core.evaluation.method_comparison import gradient_comparison

    crop = np.zeros((1, 224, 224, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="gradient"):
        gradient_comparison(analyse(lite0, crop, [1], method="gradient_x_input")[0])


def test_progress_climbs_to_its_total(comparison):
    done = [d for d, _ in comparison.calls]
    totals = {t for _, t in comparison.calls}
    assert done == sorted(done) and len(totals) == 1 and done[-1] == totals.pop()


@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # 4 steps: a large completeness gap
def test_integrated_gradients_progress_total_counts_its_image_and_baseline_passes():
    """The bar's total is each method's declared rows: Integrated Gradients' 4 path points plus the forward
    passes of the image and of its baseline, 6, after the plain gradient's 1 (a total that left the last two out
    passed every other test)."""
    calls = []
    compare_methods(tanh_net(), torch.randn(1, 3, 8, 8), 2, ["gradient", "integrated_gradients"],
                    {"integrated_gradients": {"steps": 4, "baseline": "dataset_mean"}},
                    progress=lambda d, t: calls.append((d, t)))
    assert {t for _, t in calls} == {1 + 6}
    assert calls[0] == (1, 7) and calls[-1] == (7, 7)


def tanh_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 5)).eval()


def test_a_method_that_cannot_run_is_reported_not_raised():
    X = torch.randn(1, 3, 8, 8)
    result = compare_methods(tanh_net(), X, 2, ["gradient", "guided_backprop", "smoothgrad"],
                             {"smoothgrad": {"samples": -1}})
    assert result.runs["gradient"].ok and result.target == 2
    assert set(result.failed) == {"guided_backprop", "smoothgrad"}
    assert "ReLU" in result.failed["guided_backprop"] and "samples" in result.failed["smoothgrad"]
    assert list(result.maps()) == ["Gradient · score", "Gradient · loss"]
    timings = result.timings()
    assert list(timings["ok"]) == [True, False, False]


def test_callers_errors_raise():
    X = torch.randn(1, 3, 8, 8)
    with pytest.raises(InvalidInputError, match="Known methods"):
        compare_methods(tanh_net(), X, 0, ["gradient", "no_such_method"])
    with pytest.raises(InvalidInputError, match="one image"):
        compare_methods(tanh_net(), torch.randn(2, 3, 8, 8), 0)
    with pytest.raises(InvalidInputError, match="precision"):
        compare_methods(tanh_net(), X, 0, precision="half")
    with pytest.raises(InvalidInputError, match="each method once"):
        compare_methods(tanh_net(), X, 0, ["gradient", "gradient"])


# --------------------------------------------------------------------------- agreement


def random_maps(n: int, size: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"m{i}": rng.random((size, size)) for i in range(n)}


@pytest.mark.parametrize("metric", ["spearman", "iou_top5"])
def test_agreement_matrix_is_stats_agreement_symmetric_with_ones_on_the_diagonal(metric):
    maps = random_maps(4)
    maps["m3"] = maps["m0"] ** 2 + 0.1 * maps["m3"]  # something to agree with
    result = agreement_matrix(maps, metric)
    values = result.values
    assert list(values.index) == list(values.columns) == list(maps)
    np.testing.assert_array_equal(values.to_numpy(), values.to_numpy().T)
    np.testing.assert_array_equal(np.diag(values.to_numpy()), 1.0)
    for a, b in itertools.combinations(maps, 2):
        expected = agreement(maps[a], maps[b], fractions=(0.05,))[metric]
        assert values.loc[a, b] == pytest.approx(expected, abs=1e-12)
    assert sorted(result.order) == sorted(maps) and result.ordered().shape == (4, 4)


def test_clustering_puts_identical_maps_next_to_each_other():
    maps = random_maps(5, seed=3)
    maps["twin"] = maps["m1"].copy()  # far apart in the input order
    for metric in ("spearman", "iou_top5"):
        order = agreement_matrix(maps, metric).order
        assert abs(order.index("m1") - order.index("twin")) == 1, (metric, order)
        assert agreement_matrix(maps, metric).order == order  # deterministic


def test_one_and_two_maps_and_constant_maps():
    one = agreement_matrix({"a": np.eye(4)})
    assert one.order == ["a"] and one.values.loc["a", "a"] == 1.0
    two = agreement_matrix({"b": np.eye(4), "a": np.eye(4)[::-1]})
    assert two.order == ["b", "a"]
    maps = {"flat": np.zeros((6, 6)), **random_maps(3, size=6)}
    rho = agreement_matrix(maps)
    # A constant map has no ranking: its whole row and column are NaN, its diagonal included.
    assert rho.values.loc["flat"].isna().all() and rho.values["flat"].isna().all()
    assert not rho.values.loc[["m0", "m1", "m2"], ["m0", "m1", "m2"]].isna().any().any()
    assert sorted(rho.order) == sorted(maps)
    iou = agreement_matrix(maps, "iou_top5")  # top-k sets exist for a constant map (ties by position)
    assert iou.values.loc["flat", "flat"] == 1.0 and not iou.values.isna().any().any()
    assert cluster_order(np.array([[1.0, math.nan, 0.9], [math.nan, math.nan, math.nan], [0.9, math.nan, 1.0]])) \
        in ([0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1])


def test_agreement_matrix_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="metric"):
        agreement_matrix(random_maps(2), "pearson")
    with pytest.raises(InvalidInputError, match="at least one"):
        agreement_matrix({})
    with pytest.raises(InvalidInputError, match="shape"):
        agreement_matrix({"a": np.ones((3, 3)), "b": np.ones((4, 4))})
