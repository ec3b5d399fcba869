"""Known-answer tests for saliency_core.evaluation.stats."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import agreement, stats


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def one_hot(shape: tuple[int, int], y: int, x: int, value: float = 1.0) -> np.ndarray:
    m = np.zeros(shape)
    m[y, x] = value
    return m


# --- gini / entropy / top_share -------------------------------------------------


def test_gini_known_values():
    assert stats.gini(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-12)
    assert stats.gini(one_hot((4, 5), 1, 2)) == pytest.approx(19 / 20)
    assert stats.gini(np.zeros((3, 3))) == 0.0
    # Two of four values share everything equally: G = 1/2.
    assert stats.gini(np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.5)
    # Scale-invariant.
    assert stats.gini(np.array([1.0, 2.0, 3.0])) == pytest.approx(stats.gini(np.array([10.0, 20.0, 30.0])))


def test_entropy_known_values():
    assert stats.entropy(np.full((4, 4), 0.3)) == pytest.approx(4.0)
    assert stats.entropy(one_hot((4, 4), 0, 0)) == 0.0
    assert stats.entropy(np.zeros((4, 4))) == 0.0
    m = np.zeros((2, 2))
    m[0] = 1.0  # two equal pixels -> 1 bit
    assert stats.entropy(m) == pytest.approx(1.0)


def test_top_share_one_pixel_holds_half():
    m = np.ones((10, 10))
    m[3, 7] = 99.0  # total 198, this pixel is half of it
    assert stats.top_share(m, 0.01) == pytest.approx(0.5)
    assert stats.top_share(m, 0.02) == pytest.approx(100 / 198)
    assert stats.top_share(m, 1.0) == pytest.approx(1.0)
    assert stats.top_share(np.zeros((10, 10)), 0.1) == 0.0
    # A fraction smaller than one pixel still counts one pixel.
    assert stats.top_share(m, 1e-6) == pytest.approx(0.5)


def test_top_share_uniform_equals_fraction():
    assert stats.top_share(np.ones((10, 10)), 0.07) == pytest.approx(0.07)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_top_share_rejects_bad_fraction(fraction):
    with pytest.raises(InvalidInputError, match="fraction"):
        stats.top_share(np.ones((4, 4)), fraction)


# --- concentration curve ----------------------------------------------------------


def test_concentration_curve_shape(rng):
    x, y = stats.concentration_curve(rng.random((16, 16)) ** 3, points=51)
    assert x.shape == y.shape == (51,)
    assert (x[0], y[0]) == (0.0, 0.0)
    assert (x[-1], y[-1]) == (1.0, 1.0)
    assert np.all(np.diff(y) >= 0)
    # Concave: slopes never increase.
    assert np.all(np.diff(y, 2) <= 1e-12)
    assert np.all(y >= x - 1e-12)


def test_concentration_curve_uniform_and_one_hot():
    x, y = stats.concentration_curve(np.ones((8, 8)))
    np.testing.assert_allclose(y, x, atol=1e-12)
    x, y = stats.concentration_curve(np.zeros((8, 8)))
    np.testing.assert_allclose(y, x)
    x, y = stats.concentration_curve(one_hot((10, 10), 2, 2), points=11)
    np.testing.assert_allclose(y[1:], 1.0)


# --- summary --------------------------------------------------------------------------


def test_summary_table_columns_and_index(rng):
    table = stats.summary_table({"score": rng.random((8, 8)), "loss": rng.random((8, 8))})
    assert list(table.columns) == [
        "min", "max", "mean", "std", "median", "p90", "p99", "gini", "entropy_bits", "entropy_norm",
        "top1_share", "top5_share", "top10_share", "centroid_x", "centroid_y",
    ]  # fmt: skip
    assert table.index.name == "map"
    assert list(table.index) == ["score", "loss"]
    assert all(dtype == np.float64 for dtype in table.dtypes)


def test_summarize_values():
    m = one_hot((4, 8), 2, 5, value=3.0)
    s = stats.summarize(m)
    assert s["centroid_x"] == 5.0 and s["centroid_y"] == 2.0
    assert s["max"] == 3.0 and s["min"] == 0.0 and s["mean"] == pytest.approx(3 / 32)
    assert s["gini"] == pytest.approx(31 / 32)
    assert s["entropy_bits"] == 0.0 and s["entropy_norm"] == 0.0
    assert s["top1_share"] == s["top5_share"] == s["top10_share"] == pytest.approx(1.0)

    u = stats.summarize(np.ones((4, 4)))
    assert u["entropy_bits"] == pytest.approx(4.0)
    assert u["entropy_norm"] == pytest.approx(1.0)
    assert u["centroid_x"] == pytest.approx(1.5) and u["centroid_y"] == pytest.approx(1.5)


def test_summarize_all_zero_centroid_is_centre():
    s = stats.summarize(np.zeros((5, 9)))
    assert (s["centroid_x"], s["centroid_y"]) == (4.0, 2.0)
    assert s["gini"] == s["entropy_bits"] == s["top1_share"] == 0.0


def test_summary_table_names_bad_map():
    with pytest.raises(InvalidInputError, match="loss"):
        stats.summary_table({"score": np.ones((4, 4)), "loss": np.ones((2, 2, 2))})


# --- top pixels -------------------------------------------------------------------------


def test_top_pixels_order_and_ties():
    m = np.zeros((3, 4))
    m[2, 0] = 5.0
    m[0, 3] = 2.0
    m[1, 1] = 2.0  # tie with (x=3, y=0): y=0 comes first
    m[0, 1] = 1.0
    table = stats.top_pixels(m, n=4)
    assert list(table.columns) == ["rank", "x", "y", "value"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert list(zip(table["x"], table["y"], strict=True)) == [(0, 2), (3, 0), (1, 1), (1, 0)]
    assert table["value"].tolist() == [5.0, 2.0, 2.0, 1.0]


def test_top_pixels_ties_at_cut_are_deterministic():
    # All equal: the cut must take the first pixels in (y, x) order.
    table = stats.top_pixels(np.ones((5, 5)), n=3)
    assert list(zip(table["y"], table["x"], strict=True)) == [(0, 0), (0, 1), (0, 2)]


def test_top_pixels_matches_full_sort(rng):
    m = np.round(rng.random((224, 224)), 2)  # many ties
    table = stats.top_pixels(m, n=50)
    flat = m.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:50]
    np.testing.assert_array_equal(table["y"] * 224 + table["x"], order)


def test_top_pixels_colours_gradients_and_clipping(rng):
    m = rng.random((3, 2))
    image = rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)
    grads = rng.normal(size=(3, 3, 2))
    table = stats.top_pixels(m, n=100, image=image, gradients=grads)
    assert len(table) == 6
    assert list(table.columns) == ["rank", "x", "y", "value", "r", "g", "b", "grad_r", "grad_g", "grad_b"]
    for row in table.itertuples():
        assert row.value == m[row.y, row.x]
        assert (row.r, row.g, row.b) == tuple(image[row.y, row.x])
        assert (row.grad_r, row.grad_g, row.grad_b) == tuple(grads[:, row.y, row.x])
    assert table["r"].dtype == np.uint8


def test_top_pixels_rejects_mismatched_extras():
    with pytest.raises(InvalidInputError, match="image"):
        stats.top_pixels(np.ones((3, 3)), image=np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="gradients"):
        stats.top_pixels(np.ones((3, 3)), gradients=np.zeros((3, 3, 3, 1)))
    with pytest.raises(InvalidInputError, match=r"^n: expected an integer >= 1, got 0$"):
        stats.top_pixels(np.ones((3, 3)), n=0)


# --- agreement ---------------------------------------------------------------------------


def test_agreement_with_itself_is_perfect(rng):
    m = rng.random((16, 16))
    result = agreement.agreement(m, m)
    assert list(result) == ["pearson", "spearman", "cosine", "ssim", "iou_top1", "iou_top5", "iou_top10"]
    for key, value in result.items():
        assert value == pytest.approx(1.0), key


def test_agreement_with_inverse_is_negative(rng):
    m = rng.random((16, 16))
    result = agreement.agreement(m, m.max() - m)
    assert result["pearson"] == pytest.approx(-1.0)
    assert result["spearman"] == pytest.approx(-1.0)
    assert result["iou_top10"] == 0.0


def test_agreement_scale_invariance_and_known_iou():
    a = np.arange(100, dtype=float).reshape(10, 10)
    b = a.copy()
    b.flat[[99, 98]] = 0.0  # the top 2 of a are gone from b's top set
    result = agreement.agreement(a, 10 * b, fractions=(0.05,))
    # top 5 of a: 95..99; of b: 93..97 -> 3 shared out of 7.
    assert result["iou_top5"] == pytest.approx(3 / 7)
    assert agreement.agreement(a, 3 * a)["ssim"] == pytest.approx(1.0)


def test_constant_maps_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = agreement.agreement(np.ones((8, 8)), np.arange(64.0).reshape(8, 8))
        zero = agreement.agreement(np.zeros((8, 8)), np.arange(64.0).reshape(8, 8))
    assert math.isnan(result["pearson"]) and math.isnan(result["spearman"])
    assert math.isfinite(result["cosine"])
    assert math.isnan(zero["cosine"])


def test_ssim_small_maps():
    m = np.arange(25.0).reshape(5, 5)
    assert agreement.agreement(m, m)["ssim"] == pytest.approx(1.0)  # window shrinks to 5
    assert math.isnan(agreement.agreement(np.ones((2, 9)), np.ones((2, 9)))["ssim"])


def test_agreement_table_pairs(rng):
    maps = {"a": rng.random((8, 8)), "b": rng.random((8, 8)), "c": rng.random((8, 8))}
    table = agreement.agreement_table(maps)
    assert list(table.columns) == [
        "map_a", "map_b", "pearson", "spearman", "cosine", "ssim", "iou_top1", "iou_top5", "iou_top10",
    ]  # fmt: skip
    assert list(zip(table["map_a"], table["map_b"], strict=True)) == [("a", "b"), ("a", "c"), ("b", "c")]
    empty = agreement.agreement_table({"a": maps["a"]})
    assert empty.empty and list(empty.columns) == list(table.columns)


# --- histogram / normalize ---------------------------------------------------------------


def test_histogram():
    m = np.array([[0.0, 0.1, 0.2, 0.9]])
    table = stats.histogram(m, bins=2)
    assert list(table.columns) == ["bin_start", "bin_end", "count"]
    assert table["count"].tolist() == [3, 1]
    assert table["bin_start"].iloc[0] == 0.0 and table["bin_end"].iloc[-1] == 0.9
    shared = stats.histogram(m, bins=4, value_range=(0.0, 2.0))
    assert shared["count"].tolist() == [3, 1, 0, 0]  # 0.9 is in [0.5, 1.0)
    assert stats.histogram(np.full((3, 3), 2.0), bins=3)["count"].sum() == 9


def test_normalize_max():
    m = np.array([[0.0, 2.0], [4.0, 1.0]])
    np.testing.assert_allclose(stats.normalize_max(m), m / 4)
    assert not np.shares_memory(stats.normalize_max(m), m)
    np.testing.assert_array_equal(stats.normalize_max(np.zeros((2, 2))), 0.0)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.ones((2, 3, 3)), "2-D"),
        (np.ones(5), "2-D"),
        (np.array([[1.0, np.nan]]), "finite"),
        (np.array([[1.0, np.inf]]), "finite"),
        (np.array([[1.0, -1.0]]), "non-negative"),
        (np.zeros((0, 3)), "non-empty"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_invalid_maps_raise(bad, match):
    for func in (stats.entropy, stats.summarize, stats.concentration_curve, stats.top_pixels):
        with pytest.raises(InvalidInputError, match=match):
            func(bad)


def test_agreement_validation():
    with pytest.raises(InvalidInputError, match="shape"):
        agreement.agreement(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(InvalidInputError, match="a:"):
        agreement.agreement(np.ones((4, 4, 1)), np.ones((4, 4)))
    with pytest.raises(InvalidInputError, match="b:"):
        agreement.agreement(np.ones((4, 4)), np.full((4, 4), np.nan))
    with pytest.raises(InvalidInputError, match="'x'"):
        agreement.agreement_table({"x": np.ones((4, 4)), "y": np.ones((3, 3))})
    assert issubclass(InvalidInputError, ValueError)


def test_results_are_plain_floats(rng):
    m = rng.random((6, 6))
    assert all(type(v) is float for v in stats.summarize(m).values())
    assert all(type(v) is float for v in agreement.agreement(m, m).values())
    assert isinstance(stats.summary_table({}), pd.DataFrame)
