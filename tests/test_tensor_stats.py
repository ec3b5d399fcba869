"""saliency_core.evaluation.tensor_stats equals the numpy reference in saliency_core.evaluation.stats, map for map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import agreement, stats, tensor_stats
from saliency_core.evaluation.agreement import DEFAULT_FRACTIONS
from saliency_core.evaluation.tensor_stats import describe_batch

RTOL, ATOL = 1e-9, 1e-12


# describe_batch's two halves, from the same pieces, so each can be checked against the numpy reference on its
# own (agreement with any fractions). The package itself only needs describe_batch.


def summarize_batch(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`saliency_core.evaluation.stats.summarize` for a stack of maps at once.

    Parameters
    ----------
    maps : (N, H, W) tensor, >= 0, finite, any real dtype and device

    Returns
    -------
    dict
        One (N,) float64 tensor on ``maps``' device per key of
        ``stats.SUMMARY_COLUMNS``; entry i equals ``stats.summarize(maps[i])``.

    Raises
    ------
    InvalidInputError
        For a non-tensor, a shape other than (N, H, W) with H, W >= 1, a
        bool or complex dtype, or a map with NaN, inf or negative values.
    """
    raw = tensor_stats._validate(maps, "maps")
    values, _ = tensor_stats._sort(raw)
    return tensor_stats._summary(raw.to(torch.float64), values)


def agreement_batch(
    a: torch.Tensor,
    b: torch.Tensor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[str, torch.Tensor]:
    """:func:`saliency_core.evaluation.agreement.agreement` for stacks of map pairs at once.

    Parameters
    ----------
    a, b : (N, H, W) tensors, >= 0, finite, same shape and device (any real dtypes)
    fractions : top-k shares for the IoU entries, each in (0, 1]

    Returns
    -------
    dict
        (N,) float64 tensors on the maps' device keyed ``pearson``,
        ``spearman``, ``cosine``, ``ssim`` and ``iou_top{100 * f:g}`` per
        fraction; entry i equals ``agreement.agreement(a[i], b[i])``, NaNs
        included (constant maps, all-zero maps, maps under 3 px a side).

    Raises
    ------
    InvalidInputError
        For maps :func:`summarize_batch` would reject, ``a`` and ``b`` of
        different shapes or devices, or a fraction outside (0, 1].
    """
    raw_a, raw_b = tensor_stats._validate(a, "a"), tensor_stats._validate(b, "b")
    tensor_stats._check_pair(raw_a, raw_b)
    fractions = [stats.check_fraction(f, "fractions") for f in fractions]
    return tensor_stats._agreement(raw_a.to(torch.float64), raw_b.to(torch.float64), tensor_stats._sort(raw_a),
                                   tensor_stats._sort(raw_b), fractions)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def real_maps(lite0) -> tuple[np.ndarray, np.ndarray]:
    """Score and loss maps, (5, 224, 224) float32 each, of the bundled sample images."""
    from saliency_core import sample_images
    from saliency_core.evaluation.analysis import analyse

    samples = sample_images()
    out = analyse(lite0, [s.image for s in samples], [None] * len(samples), [s.label for s in samples])
    return np.stack([r.maps["score"] for r in out]), np.stack([r.maps["loss"] for r in out])


def assert_matches_reference(a: np.ndarray, b: np.ndarray, *, dtype: torch.dtype = torch.float64) -> None:
    """Both batch functions on (N, H, W) stacks a, b equal stats.summarize / agreement.agreement per map."""
    ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
    summary, scores = summarize_batch(ta), agreement_batch(ta, tb)
    assert list(summary) == list(stats.SUMMARY_COLUMNS)
    expected_summary = [stats.summarize(m) for m in ta.double().numpy()]
    expected_scores = [agreement.agreement(x, y) for x, y in zip(ta.double().numpy(), tb.double().numpy(), strict=True)]
    assert list(scores) == list(expected_scores[0])
    for got, expected in ((summary, expected_summary), (scores, expected_scores)):
        for key, values in got.items():
            assert values.dtype == torch.float64 and values.shape == (a.shape[0],), key
            want = np.array([row[key] for row in expected])
            # assert_allclose treats NaN as equal to NaN only: NaN positions must match.
            np.testing.assert_allclose(values.numpy(), want, rtol=RTOL, atol=ATOL, err_msg=f"{key} {a.shape}")


SHAPES = [(224, 224), (7, 9), (3, 3), (2, 2), (1, 5), (1, 2), (1, 1), (6, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_random_maps(rng, shape):
    assert_matches_reference(rng.random((4, *shape)) ** 3, rng.random((4, *shape)) ** 3)


@pytest.mark.parametrize("shape", SHAPES)
def test_maps_with_ties_and_zeros(rng, shape):
    """Integers 0..3 with about half the pixels zero: many exact ties for ranks, percentiles and top-k."""
    a = rng.integers(0, 4, (6, *shape)) * (rng.random((6, *shape)) < 0.5)
    b = rng.integers(0, 4, (6, *shape)).astype(float)
    assert_matches_reference(a.astype(float), b)
    assert_matches_reference(b, b[::-1].copy())


def test_degenerate_maps():
    zero, const, one_hot = np.zeros((8, 9)), np.full((8, 9), 2.5), np.zeros((8, 9))
    one_hot[2, 3] = 1.0
    maps = np.stack([zero, const, one_hot, zero, one_hot])
    others = np.stack([const, one_hot, zero, zero, one_hot])
    assert_matches_reference(maps, others)
    summary = summarize_batch(torch.from_numpy(maps))
    assert summary["centroid_x"][0] == 4.0 and summary["centroid_y"][0] == 3.5  # all-zero: the centre
    assert summary["gini"][0] == summary["entropy_bits"][0] == summary["top1_share"][0] == 0.0
    scores = agreement_batch(torch.from_numpy(maps), torch.from_numpy(others))
    assert torch.isnan(scores["pearson"][:4]).all() and torch.isnan(scores["cosine"][[0, 2, 3]]).all()
    assert scores["pearson"][4].item() == pytest.approx(1.0) and scores["iou_top1"][4] == 1.0


def test_one_hot_top_sets_break_ties_by_index():
    """One hot pixel per map, the rest tied at zero: the top-k sets fill up with the lowest flat indices."""
    a, b = np.zeros((2, 10, 10)), np.zeros((2, 10, 10))
    a[0, 9, 9], b[0, 0, 0] = 1.0, 1.0  # a's top 5 is {99, 0, 1, 2, 3}, b's is {0, 1, 2, 3, 4}
    a[1, 5, 5], b[1, 5, 5] = 1.0, 3.0
    assert_matches_reference(a, b)
    scores = agreement_batch(torch.from_numpy(a), torch.from_numpy(b))
    assert scores["iou_top5"].tolist() == [4 / 6, 1.0]


def test_float32_input(rng):
    a = (rng.random((3, 20, 30)) ** 2).astype(np.float32)
    b = rng.random((3, 20, 30)).astype(np.float32)
    assert_matches_reference(a, b, dtype=torch.float32)


def test_integer_input(rng):
    a = rng.integers(0, 5, (3, 9, 9))
    assert_matches_reference(a, a[::-1].copy(), dtype=torch.int64)


def test_real_saliency_maps(real_maps):
    score, loss = real_maps
    assert score.dtype == np.float32 and score.shape[1:] == (224, 224)
    assert_matches_reference(score, loss, dtype=torch.float32)


def test_custom_fractions(rng):
    a, b = rng.random((3, 10, 10)), rng.random((3, 10, 10))
    scores = agreement_batch(torch.from_numpy(a), torch.from_numpy(b), fractions=(0.07, 0.5, 1.0))
    for i in range(3):
        expected = agreement.agreement(a[i], b[i], fractions=(0.07, 0.5, 1.0))
        assert list(scores) == list(expected)
        for key in ("iou_top7", "iou_top50", "iou_top100"):
            assert scores[key][i].item() == pytest.approx(expected[key], rel=RTOL)


def test_empty_batch():
    summary = summarize_batch(torch.zeros(0, 4, 4))
    scores = agreement_batch(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4))
    assert all(v.shape == (0,) and v.dtype == torch.float64 for v in (*summary.values(), *scores.values()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(rng):
    a = rng.random((16, 224, 224)) ** 3
    b = rng.integers(0, 4, (16, 224, 224)) * (rng.random((16, 224, 224)) < 0.5)
    b[0] = 0.0
    for x, y in ((a, b.astype(float)), (a[:, :7, :9], a[::-1, :7, :9]), (a[:, :2, :2], b[:, :2, :2].astype(float))):
        cpu_a, cpu_b = torch.from_numpy(x).float(), torch.from_numpy(np.ascontiguousarray(y)).float()
        expected = {**summarize_batch(cpu_a), **agreement_batch(cpu_a, cpu_b)}
        got = {**summarize_batch(cpu_a.cuda()), **agreement_batch(cpu_a.cuda(), cpu_b.cuda())}
        for key, value in got.items():
            assert value.device.type == "cuda" and value.dtype == torch.float64, key
            np.testing.assert_allclose(value.cpu().numpy(), expected[key].numpy(), rtol=RTOL, atol=ATOL, err_msg=key)


# --- validation ---------------------------------------------------------------------


def with_value(i: int, value: float) -> torch.Tensor:
    """Three 4x4 maps of ones, map ``i`` with one pixel set to ``value``."""
    maps = torch.ones(3, 4, 4)
    maps[i, 1, 2] = value
    return maps


@pytest.mark.parametrize(
    ("maps", "match"),
    [
        (np.ones((4, 4)), r"maps: expected a.* torch.Tensor"),
        (torch.ones(4, 4), r"maps: expected an \(N, H, W\) tensor, got shape \(4, 4\)"),
        (torch.ones(2, 3, 4, 4), r"got shape \(2, 3, 4, 4\)"),
        (torch.ones(2, 0, 4), "non-empty"),
        (torch.ones(2, 4, 4, dtype=torch.bool), "dtype torch.bool"),
        (torch.ones(2, 4, 4, dtype=torch.complex64), "dtype torch.complex64"),
        (with_value(2, -0.5), r"non-negative values, map 2 has minimum -0\.5"),
        (with_value(1, float("nan")), "finite values, map 1 has NaN or inf"),
        (with_value(0, float("inf")), "finite values, map 0 has NaN or inf"),
    ],
)
def test_invalid_maps_are_rejected(maps, match):
    with pytest.raises(InvalidInputError, match=match):
        summarize_batch(maps)
    with pytest.raises(InvalidInputError, match=match.replace("maps:", "a:")):
        agreement_batch(maps, torch.ones(3, 4, 4))
    with pytest.raises(InvalidInputError, match=match.replace("maps:", "b:")):
        agreement_batch(torch.ones(3, 4, 4), maps)


def test_agreement_rejects_mismatched_shapes_and_bad_fractions():
    with pytest.raises(InvalidInputError, match=r"b: expected the same shape as a \(2, 4, 4\), got \(2, 4, 5\)"):
        agreement_batch(torch.ones(2, 4, 4), torch.ones(2, 4, 5))
    with pytest.raises(InvalidInputError, match=r"same shape as a \(2, 4, 4\), got \(3, 4, 4\)"):
        agreement_batch(torch.ones(2, 4, 4), torch.ones(3, 4, 4))
    for bad in (0.0, 1.5, float("nan"), "0.1"):
        with pytest.raises(InvalidInputError, match="fractions"):
            agreement_batch(torch.ones(2, 4, 4), torch.ones(2, 4, 4), fractions=(0.1, bad))


def test_describe_batch_equals_summarize_and_agreement_batch():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.random((4, 12, 10), dtype=np.float32))
    b = torch.from_numpy(rng.integers(0, 3, size=(4, 12, 10)).astype(np.float32))  # many ties
    both = describe_batch({"score": a, "loss": b})
    expected = {f"score_{k}": v for k, v in summarize_batch(a).items()}
    expected |= {f"loss_{k}": v for k, v in summarize_batch(b).items()}
    expected |= {f"agree_{k}": v for k, v in agreement_batch(a, b).items()}
    assert list(both) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(both[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    assert list(describe_batch({"loss": b})) == [f"loss_{k}" for k in stats.SUMMARY_COLUMNS]
    with pytest.raises(InvalidInputError, match="at least one map"):
        describe_batch({})


def test_describe_batch_gives_every_requested_pair_its_own_prefix():
    rng = np.random.default_rng(4)
    maps = {n: torch.from_numpy(rng.random((3, 9, 11), dtype=np.float32)) for n in ("a", "b", "c")}
    pairs = [("a", "b", "agree_a_vs_b"), ("a", "c", "agree_a_vs_c"), ("b", "c", "agree_b_vs_c")]
    out = describe_batch(maps, pairs)
    for first, second, prefix in pairs:
        for key, value in agreement_batch(maps[first], maps[second]).items():
            torch.testing.assert_close(out[f"{prefix}_{key}"], value, rtol=0, atol=0, equal_nan=True)
    assert not any(k.startswith("agree_") for k in describe_batch(maps))  # three maps, no pairs asked
    with pytest.raises(InvalidInputError, match="no map named 'd'"):
        describe_batch(maps, [("a", "d", "agree")])
