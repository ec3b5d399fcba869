"""Deletion/insertion curves (Petsiuk et al., RISE, BMVC 2018) on a model whose true importance is known."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.ndimage import gaussian_filter

from saliency_core.core.baselines import gaussian_blur, make_baseline
from saliency_core.core.gradients import compute_saliency
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.faithfulness import FaithfulnessResult, deletion_insertion, deletion_insertion_orders
from saliency_core.evaluation.perturbations import MapsLike, pixel_ranks

SIDE = 16


# Deletion/insertion of several maps as one table: the tests' way to compare orders (nothing else uses it).
COMPARE_COLUMNS = ("order", "image", "deletion_auc", "insertion_auc")


def compare_orders(model, X: torch.Tensor, y, maps: Mapping[str, MapsLike], steps: int = 20, baseline: str = "blur",
                   *, random: bool = True, batch_size: int = 64, progress=None, seed: int = 0,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   blur_sigma: float | None = None, precision: str = "exact") -> pd.DataFrame:
    """Deletion/insertion AUCs of several maps, and of a random order, in one tidy table.

    Parameters
    ----------
    maps : order name -> (N, H, W) map (e.g. ``{"score": ..., "loss": ...}``).
    random : also run ``order="random"`` as order "random" (the reference
        a map has to beat: lower deletion AUC, higher insertion AUC).
    Everything else as in :func:`deletion_insertion`.

    Returns
    -------
    DataFrame with columns ``order, image, deletion_auc, insertion_auc``,
    one row per order per image (image = index into ``X``). The curves
    behind it come from :func:`deletion_insertion_orders` (one batched pass).
    """
    results = deletion_insertion_orders(model, X, y, maps, steps, baseline, random="random" if random else None,
                                        batch_size=batch_size, progress=progress, seed=seed, mean=mean, std=std,
                                        blur_sigma=blur_sigma, precision=precision)
    return auc_table(results)


def auc_table(results: Mapping[str, FaithfulnessResult]) -> pd.DataFrame:
    """The AUCs of several orders' results in one tidy table, as :func:`compare_orders` returns it.

    Returns
    -------
    DataFrame with columns ``order, image, deletion_auc, insertion_auc``,
    one row per order (in the mapping's order) per image.
    """
    frames = [pd.DataFrame({
        "order": name,
        "image": np.arange(r.deletion_auc.shape[0], dtype=np.int64),
        "deletion_auc": r.deletion_auc,
        "insertion_auc": r.insertion_auc,
    }) for name, r in results.items()]
    if not frames:
        raise InvalidInputError("no results to tabulate")
    return pd.concat(frames, ignore_index=True)[list(COMPARE_COLUMNS)]


class LeftHalf(torch.nn.Module):
    """Two classes: logit_0 = 0, logit_1 = scale * mean(channel 0, left half).

    The target class 1 depends on the left half only, so the true importance
    map is 1 on the left half and 0 on the right.
    """

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))  # requires_grad: must never get a .grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * x[:, 0, :, : x.shape[-1] // 2].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(s), s], dim=1)


@pytest.fixture
def toy():
    return LeftHalf().eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 3, SIDE, SIDE, generator=g)
    X[..., : SIDE // 2] = 0.5 + torch.rand(3, 3, SIDE, SIDE // 2, generator=g)  # left half positive
    y = torch.ones(3, dtype=torch.long)
    true_map = torch.zeros(3, SIDE, SIDE)
    true_map[..., : SIDE // 2] = 1.0
    return X, y, true_map


def p_target(model, X, y):
    with torch.no_grad():
        return model(X).softmax(1).gather(1, y[:, None]).squeeze(1).double().numpy()


def test_true_map_beats_inverse_and_random(data):
    X, y, true_map = data
    toy = LeftHalf(scale=3.0).eval()  # logit_1 about 3: far enough from saturation for every order to show
    kw = {"steps": 16, "baseline": "dataset_mean"}
    true = deletion_insertion(toy, X, y, true_map, **kw)
    inverse = deletion_insertion(toy, X, y, 1.0 - true_map, **kw)
    rand = deletion_insertion(toy, X, y, None, order="random", **kw)
    assert np.all(true.deletion_auc < rand.deletion_auc - 0.05)
    assert np.all(rand.deletion_auc < inverse.deletion_auc - 0.05)
    assert np.all(true.insertion_auc > rand.insertion_auc + 0.05)
    assert np.all(rand.insertion_auc > inverse.insertion_auc + 0.05)
    # Once the whole left half is gone the target is a coin flip (logit 0 vs 0).
    np.testing.assert_allclose(true.deletion[:, 8:], 0.5, atol=1e-6)
    np.testing.assert_allclose(inverse.insertion[:, :9], 0.5, atol=1e-6)
    assert (true.order, rand.order, true.baseline) == ("map", "random", "dataset_mean")


def test_shapes_endpoints_and_auc(toy, data):
    X, y, true_map = data
    steps = 7
    res = deletion_insertion(toy, X, y, true_map, steps, "mean")
    assert isinstance(res, FaithfulnessResult)
    assert res.deletion.shape == res.insertion.shape == (3, steps + 1)
    assert res.deletion_auc.shape == res.insertion_auc.shape == (3,)
    assert res.deletion.dtype == np.float64 and res.fractions.shape == (steps + 1,)
    expected = [round(k / steps * SIDE * SIDE) / (SIDE * SIDE) for k in range(steps + 1)]
    np.testing.assert_allclose(res.fractions, expected)
    assert res.fractions[0] == 0.0 and res.fractions[-1] == 1.0
    p0 = p_target(toy, X, y)
    np.testing.assert_array_equal(res.deletion[:, 0], res.insertion[:, -1])
    np.testing.assert_allclose(res.deletion[:, 0], p0, rtol=1e-6)
    np.testing.assert_array_equal(res.deletion[:, -1], res.insertion[:, 0])
    # scipy's trapezoid: numpy renamed trapz (numpy >= 1.26 is supported).
    np.testing.assert_allclose(res.deletion_auc, trapezoid(res.deletion, res.fractions, axis=1))
    np.testing.assert_allclose(res.insertion_auc, trapezoid(res.insertion, res.fractions, axis=1))
    assert np.all((res.deletion_auc >= 0) & (res.deletion_auc <= 1))
    np.testing.assert_array_equal(res.targets, [1, 1, 1])


def test_each_step_perturbs_exactly_the_top_pixels(data):
    """A model that reports how many pixels equal the baseline (0) sees k/steps of them deleted."""
    X, _, _ = data
    X = X.abs() + 1.0  # no pixel is 0 to begin with

    class CountZeros(torch.nn.Module):
        def forward(self, x):
            share = (x[:, 0] == 0).float().mean(dim=(1, 2))
            return torch.stack([torch.zeros_like(share), 50.0 * share], dim=1)  # p -> sigmoid(50 share)

    steps = 4
    res = deletion_insertion(CountZeros().eval(), X, [1, 1, 1], torch.rand(3, SIDE, SIDE), steps,
                             "dataset_mean")
    expected = 1 / (1 + np.exp(-50.0 * np.arange(steps + 1) / steps))
    np.testing.assert_allclose(res.deletion, np.broadcast_to(expected, (3, steps + 1)), rtol=1e-5)
    np.testing.assert_allclose(res.insertion, np.broadcast_to(expected[::-1], (3, steps + 1)), rtol=1e-5)


def test_pixel_ranks_break_ties_by_position():
    m = torch.tensor([[[0.0, 2.0, 1.0], [2.0, 0.0, 1.0]]])
    assert pixel_ranks(m).tolist() == [[[4, 0, 2], [1, 5, 3]]]
    np.testing.assert_array_equal(pixel_ranks(m.numpy()), pixel_ranks(m))


def test_random_order_is_seeded(toy, data):
    X, y, _ = data
    a = deletion_insertion(toy, X, y, None, 10, "dataset_mean", order="random", seed=3)
    b = deletion_insertion(toy, X, y, None, 10, "dataset_mean", order="random", seed=3)
    c = deletion_insertion(toy, X, y, None, 10, "dataset_mean", order="random", seed=4)
    np.testing.assert_array_equal(a.deletion, b.deletion)
    np.testing.assert_array_equal(a.insertion, b.insertion)
    assert not np.array_equal(a.deletion, c.deletion)
    before = torch.get_rng_state()
    deletion_insertion(toy, X, y, None, 4, "dataset_mean", order="random")
    assert torch.equal(before, torch.get_rng_state())


def test_an_images_random_order_does_not_depend_on_its_batch(toy, data):
    # A dataset job splits images into batches by --batch-size and ranks: the reference must not move.
    X, y, _ = data
    whole = deletion_insertion(toy, X, y, None, 10, "dataset_mean", order="random", seed=3)
    for i in range(len(y)):
        alone = deletion_insertion(toy, X[i:i + 1], y[i:i + 1], None, 10, "dataset_mean", order="random",
                                   seed=3)
        np.testing.assert_allclose(alone.deletion[0], whole.deletion[i], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(alone.insertion_auc[0], whole.insertion_auc[i], rtol=1e-6, atol=1e-7)


def test_chunking_and_progress(toy, data):
    X, y, true_map = data
    calls: list[tuple[int, int]] = []
    small = deletion_insertion(toy, X, y, true_map, 5, "blur", batch_size=3, progress=lambda d, t: calls.append((d, t)))
    big = deletion_insertion(toy, X, y, true_map, 5, "blur", batch_size=64)
    np.testing.assert_allclose(small.deletion, big.deletion, rtol=0, atol=1e-7)
    np.testing.assert_allclose(small.insertion, big.insertion, rtol=0, atol=1e-7)
    total = 3 * 2 * 5
    assert len(calls) == math.ceil(total / 3)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)


def test_model_and_inputs_untouched(toy, data):
    X, y, true_map = data
    X0, maps0 = X.clone(), true_map.clone()
    deletion_insertion(toy, X, y, true_map, 4, "blur")
    assert toy.scale.grad is None and toy.scale.requires_grad and not toy.training
    assert toy.scale.item() == 10.0
    assert torch.equal(X, X0) and torch.equal(true_map, maps0)


def test_numpy_maps_and_top1_targets(toy, data):
    X, y, true_map = data
    a = deletion_insertion(toy, X, y, true_map, 4, "mean")
    b = deletion_insertion(toy, X, torch.full((3,), -1), true_map.numpy(), 4, "mean")
    np.testing.assert_array_equal(b.targets, [1, 1, 1])  # left half positive: class 1 is the top-1
    np.testing.assert_array_equal(a.deletion, b.deletion)


def test_black_is_black_pixels_of_the_models_normalisation_and_dataset_mean_is_zero(toy, data):
    X, y, true_map = data
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # black normalises to -1
    base = make_baseline(X, "black", mean=mean, std=std)
    assert torch.equal(base, torch.full_like(X, -1.0))
    assert torch.equal(make_baseline(X, "dataset_mean"), torch.zeros_like(X))
    wrapped = SimpleNamespace(model=toy, preprocessing=SimpleNamespace(mean=mean, std=std),
                              module_for=lambda precision: toy)  # what model_access.LoadedModelLike asks
    res = deletion_insertion(wrapped, X, y, true_map, 4, "black")
    explicit = deletion_insertion(toy, X, y, true_map, 4, "black", mean=mean, std=std)
    np.testing.assert_array_equal(res.deletion, explicit.deletion)
    np.testing.assert_allclose(res.deletion[:, -1], 1 / (1 + math.exp(10.0)), rtol=1e-5)  # logit_1 = 10 * -1


def test_blur_and_mean_baselines():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 3, 20, 30, generator=g, dtype=torch.float64)
    # torch's "reflect" padding is scipy's "mirror"; radius ceil(2 sigma) = scipy truncate 2.0.
    expected = gaussian_filter(X.numpy(), sigma=(0, 0, 1.5, 1.5), mode="mirror", truncate=2.0)
    np.testing.assert_allclose(gaussian_blur(X, 1.5).numpy(), expected, atol=1e-12)
    flat = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 50.0), flat)  # kernel cut to the image, still constant
    blurred = make_baseline(torch.randn(1, 3, 224, 224, generator=g), "blur")
    assert blurred.shape == (1, 3, 224, 224)
    mean = make_baseline(X, "mean")
    torch.testing.assert_close(mean, X.mean(dim=(2, 3), keepdim=True).expand_as(X))


def test_invalid_arguments(toy, data):
    X, y, true_map = data
    with pytest.raises(InvalidInputError, match="baseline"):
        deletion_insertion(toy, X, y, true_map, baseline="noise")
    with pytest.raises(InvalidInputError, match="baseline"):
        make_baseline(X, "noise")
    with pytest.raises(InvalidInputError, match="order"):
        deletion_insertion(toy, X, y, true_map, order="sorted")
    with pytest.raises(InvalidInputError, match="steps"):
        deletion_insertion(toy, X, y, true_map, steps=0)
    with pytest.raises(InvalidInputError, match="batch_size"):
        deletion_insertion(toy, X, y, true_map, batch_size=0)
    with pytest.raises(InvalidInputError, match="maps"):
        deletion_insertion(toy, X, y, None)
    with pytest.raises(InvalidInputError, match="shape"):
        deletion_insertion(toy, X, y, true_map[:, :8])
    with pytest.raises(InvalidInputError, match="NaN"):
        deletion_insertion(toy, X, y, torch.full_like(true_map, math.nan))
    with pytest.raises(InvalidInputError, match="y must"):
        deletion_insertion(toy, X, [1, 1], true_map)
    with pytest.raises(InvalidInputError, match="out of range"):
        deletion_insertion(toy, X, [5, 1, 1], true_map)
    with pytest.raises(InvalidInputError, match="both mean and std"):
        deletion_insertion(toy, X, y, true_map, baseline="black", mean=(0.5, 0.5, 0.5))
    with pytest.raises(InvalidInputError, match="normalisation"):  # a bare module: black is unknown
        deletion_insertion(toy, X, y, true_map, baseline="black")
    with pytest.raises(InvalidInputError, match="eval mode"):
        deletion_insertion(LeftHalf(), X, y, true_map)  # a fresh module is in train mode


def test_compare_orders_table(toy, data):
    X, y, true_map = data
    calls = []
    table = compare_orders(toy, X, y, {"true": true_map, "inverse": 1 - true_map}, 8, "dataset_mean",
                           progress=lambda d, t: calls.append((d, t)))
    assert tuple(table.columns) == COMPARE_COLUMNS
    assert len(table) == 3 * 3
    assert table["order"].tolist() == ["true"] * 3 + ["inverse"] * 3 + ["random"] * 3
    assert table["image"].tolist() == [0, 1, 2] * 3
    means = table.groupby("order")[["deletion_auc", "insertion_auc"]].mean()
    deletion = means["deletion_auc"]
    assert deletion["true"] < deletion["random"] < deletion["inverse"]
    assert calls[-1] == (3 * 3 * 2 * 8, 3 * 3 * 2 * 8)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_real_model_smoke(lite0):
    from saliency_core.inputs.samples import sample_by_name

    sample = sample_by_name("coffee")
    batch = lite0.preprocess(sample.image)
    result = compute_saliency(lite0, batch.x, [sample.label], ("score",))
    res = deletion_insertion(lite0, batch.x, [sample.label], result.maps["score"], steps=20, baseline="blur")
    assert res.deletion.shape == res.insertion.shape == (1, 21)
    np.testing.assert_allclose(res.deletion[0, 0], float(result.target_probs[0]), rtol=1e-4)
    assert res.deletion[0, 0] > 0.9  # the model's "espresso" confidence on this photo
    assert np.all(np.isfinite(res.deletion)) and np.all(np.isfinite(res.insertion))
    assert 0.0 <= res.deletion_auc[0] <= 1.0 and 0.0 <= res.insertion_auc[0] <= 1.0
    # Nothing was written into the shared model.
    assert all(p.grad is None for p in lite0.model.parameters()) and not lite0.model.training


def _precision_spy(monkeypatch):
    """Replace perturbations.precision_context (every forward pass of deletion/insertion) by a spy; returns (entered,
    inside)."""
    import contextlib

    from saliency_core.evaluation import perturbations

    entered: list[tuple[str, str]] = []
    inside: list[bool] = []

    @contextlib.contextmanager
    def spy(device, precision):
        entered.append((torch.device(device).type, precision))
        inside.append(True)
        try:
            yield
        finally:
            inside.pop()

    monkeypatch.setattr(perturbations, "precision_context", spy)
    return entered, inside


def test_every_forward_pass_runs_under_the_precision_context(toy, data, monkeypatch):
    X, _, true_map = data
    entered, inside = _precision_spy(monkeypatch)
    seen: list[bool] = []
    handle = toy.register_forward_hook(lambda *args: seen.append(bool(inside)))
    try:
        res = deletion_insertion(toy, X, [-1, 1, -1], true_map, 4, "mean", batch_size=5, precision="fast")
        table = compare_orders(toy, X, [1, 1, 1], {"true": true_map}, 3, "mean", precision="fast")
    finally:
        handle.remove()
    assert seen and all(seen)  # top-1 resolution, every chunk, every order
    assert set(entered) == {("cpu", "fast")}
    assert res.precision == "fast" and len(table) == 2 * 3


def test_precision_is_validated_recorded_and_a_no_op_on_cpu(toy, data):
    X, y, true_map = data
    exact = deletion_insertion(toy, X, y, true_map, 4, "mean")
    fast = deletion_insertion(toy, X, y, true_map, 4, "mean", precision="fast")
    assert (exact.precision, fast.precision) == ("exact", "fast")
    np.testing.assert_array_equal(exact.deletion, fast.deletion)  # float32 on the CPU either way
    with pytest.raises(InvalidInputError, match="precision"):
        deletion_insertion(toy, X, y, true_map, precision="half")
    with pytest.raises(InvalidInputError, match="precision"):
        compare_orders(toy, X, y, {"true": true_map}, precision="bf16")


def test_float64_model_runs_in_float64(data):
    X, y, true_map = data
    toy64 = LeftHalf(scale=3.0).double().eval()
    res = deletion_insertion(toy64, X, y, true_map, 4, "dataset_mean")
    expected = p_target(toy64, X.double(), y)
    np.testing.assert_allclose(res.deletion[:, 0], expected, rtol=1e-14)


# --- several orders in one batched pass, and the ranking ------------------------------------------


def test_orders_in_one_pass_equal_each_order_alone(toy, data):
    from saliency_core.evaluation.faithfulness import deletion_insertion_orders

    X, y, true_map = data
    forwards: list[int] = []
    handle = toy.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    calls = []
    try:
        joint = deletion_insertion_orders(toy, X, y, {"true": true_map, "inverse": 1 - true_map}, 4, "blur",
                                          random="random order", batch_size=10, seed=3,
                                          progress=lambda d, t: calls.append((d, t)))
    finally:
        handle.remove()
    # 3 orders x 3 images x 2 * 4 steps = 72 images in chunks of 10 across orders: 8 forward passes
    # (each order alone would take 3 passes: 10, 10, 4).
    assert forwards == [10] * 7 + [2]
    assert calls[-1] == (72, 72) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert list(joint) == ["true", "inverse", "random order"]
    alone = {
        "true": deletion_insertion(toy, X, y, true_map, 4, "blur", seed=3),
        "inverse": deletion_insertion(toy, X, y, 1 - true_map, 4, "blur", seed=3),
        "random order": deletion_insertion(toy, X, y, None, 4, "blur", order="random", seed=3),
    }
    for name, expected in alone.items():
        got = joint[name]
        for field in ("deletion", "insertion", "deletion_auc", "insertion_auc", "fractions", "targets"):
            np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-12, atol=0,
                                       err_msg=f"{name}.{field}")
        assert (got.order, got.seed, got.baseline, got.blur_sigma, got.precision) == (
            expected.order, expected.seed, expected.baseline, expected.blur_sigma, expected.precision)


def test_orders_resolve_top1_once_and_validate(toy, data):
    from saliency_core.evaluation.faithfulness import deletion_insertion_orders

    X, _, true_map = data
    forwards: list[int] = []
    handle = toy.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    try:
        joint = deletion_insertion_orders(toy, X, [-1, 1, -1], {"true": true_map}, 2, "mean", batch_size=100)
    finally:
        handle.remove()
    assert forwards == [3, 2 * 3 * 2 * 2]  # the originals once, then every order's images together
    assert joint["true"].targets.tolist() == joint["random"].targets.tolist() == [1, 1, 1]
    assert deletion_insertion_orders(toy, X, [1, 1, 1], {"true": true_map}, 2, random=None).keys() == {"true"}
    with pytest.raises(InvalidInputError, match="reference order"):
        deletion_insertion_orders(toy, X, [1, 1, 1], {"random": true_map}, 2)
    with pytest.raises(InvalidInputError, match="no maps"):
        deletion_insertion_orders(toy, X, [1, 1, 1], {}, 2, random=None)
    with pytest.raises(InvalidInputError, match="precision"):
        deletion_insertion_orders(toy, X, [1, 1, 1], {"true": true_map}, 2, precision="half")


def test_ranking_table_ranks_by_insertion_minus_deletion(toy, data):
    from saliency_core.evaluation.faithfulness import RANKING_COLUMNS, deletion_insertion_orders, ranking_table

    X, y, true_map = data
    results = deletion_insertion_orders(toy, X, y, {"inverse": 1 - true_map, "true": true_map}, 8,
                                        "dataset_mean")
    for image in range(3):
        table = ranking_table(results, image)
        assert tuple(table.columns) == RANKING_COLUMNS
        assert table["rank"].tolist() == [1, 2, 3]
        assert table["order"].tolist() == ["true", "random", "inverse"]  # the true map first, its inverse last
        row = table.set_index("order").loc["inverse"]
        assert row["deletion_auc"] == results["inverse"].deletion_auc[image]
        assert row["insertion_minus_deletion"] == pytest.approx(row["insertion_auc"] - row["deletion_auc"])
    with pytest.raises(InvalidInputError, match="image"):
        ranking_table(results, 3)
    with pytest.raises(InvalidInputError, match="no results"):
        ranking_table({})


def test_ranking_table_keeps_the_given_order_on_ties():
    from saliency_core.evaluation.faithfulness import ranking_table

    def result(d: float, i: float) -> FaithfulnessResult:
        one = np.array([0.0])
        return FaithfulnessResult(one, one, np.array([d]), np.array([i]), one, np.array([0]), "blur", "map",
                                  "exact", 0, None)

    table = ranking_table({"b": result(0.25, 0.5), "a": result(0.0, 0.25), "c": result(0.0, 0.75)})
    assert table["order"].tolist() == ["c", "b", "a"]  # b and a tie at 0.25 (exactly): b was given first
