"""Cascading model randomisation (Adebayo et al., NeurIPS 2018): the maps must move, the shared model must not."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.randomized_model import _reinitialize, group_layers, randomizable_layers
from saliency_core.evaluation.sanity import SIMILARITY_COLUMNS, RandomizationResult, cascading_randomization


def state_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names and bytes)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_convnet() -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 5),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        net[1].running_mean.copy_(torch.randn(8, generator=g) * 0.1)
        net[1].running_var.copy_(torch.rand(8, generator=g) + 0.5)
    return net.eval()


@pytest.fixture
def net():
    return tiny_convnet()


@pytest.fixture
def X():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_tiny_net_one_stage_per_layer(net, X):
    before, rng = state_hash(net), torch.get_rng_state()
    calls = []
    res = cascading_randomization(net, X, [1, 3], max_stages=None, progress=lambda d, t: calls.append((d, t)))
    assert isinstance(res, RandomizationResult)
    assert res.stages == ["original", "7", "3", "1", "0"]  # top (output) first
    assert res.layers == [[], ["7"], ["3"], ["1"], ["0"]]
    assert set(res.maps) == {"score", "loss"}
    for maps in res.maps.values():
        assert maps.shape == (5, 2, 16, 16) and maps.dtype == np.float32
    assert calls == [(k, 5) for k in range(1, 6)]
    # The shared model, its mode, its grads and the global RNG are untouched.
    assert state_hash(net) == before
    assert torch.equal(torch.get_rng_state(), rng)
    assert not net.training and all(p.requires_grad and p.grad is None for p in net.parameters())
    np.testing.assert_array_equal(res.targets, [1, 3])


@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # 4 steps: a large completeness gap
def test_integrated_gradients_progress_total_counts_its_image_and_baseline_passes(net, X):
    """Each stage counts the rows Integrated Gradients declares: its 4 path points, and the forward passes of the
    image and of the baseline (6 per image); a total that left the last two out passed every other test."""
    calls = []
    cascading_randomization(net, X, [1, 3], max_stages=2, attribution="integrated_gradients",
                            params={"steps": 4, "baseline": "dataset_mean"}, progress=lambda d, t: calls.append((d, t)))
    assert {t for _, t in calls} == {3 * 6}
    assert calls[-1] == (18, 18) and [6, 12, 18] == [d for d, _ in calls if d % 6 == 0]


def test_a_slow_methods_stages_report_every_chunk_and_raising_there_stops_the_work(net, X):
    """SmoothGrad's stages take many rows: the caller hears after every chunk of them (in units of the method's
    rows per image: 4 samples + 1 clean pass), and what it raises there stops the check at once."""
    calls = []
    cascading_randomization(net, X, [1, 3], max_stages=2, attribution="smoothgrad", params={"samples": 4},
                            max_batch=2, progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {15} and done == sorted(done) and done[-1] == 15
    assert [5, 10, 15] == [d for d in done if d % 5 == 0]  # each stage's end, once
    assert len(done) > 3, "chunks within the stages are reported too"

    class Gone(BaseException):  # what the dashboard raises when the session has left
        pass

    seen = []

    def leave_in_the_second_stage(d: int, t: int) -> None:
        seen.append(d)
        if d > 5:
            raise Gone

    with pytest.raises(Gone):
        cascading_randomization(net, X, [1, 3], max_stages=2, attribution="smoothgrad", params={"samples": 4},
                                max_batch=2, progress=leave_in_the_second_stage)
    assert 5 < seen[-1] < 10, "it stopped inside the stage, at the chunk where the caller raised"


def test_similarity_table(net, X):
    res = cascading_randomization(net, X, [1, 3], max_stages=None)
    sim = res.similarity
    assert tuple(sim.columns) == SIMILARITY_COLUMNS
    assert len(sim) == 5 * 2 * 2  # stages x objectives x images
    assert set(sim.method) == {"gradient"}  # the attribution method, beside the objective
    first = sim[sim.stage_index == 0]
    assert (first.stage == "original").all()
    np.testing.assert_allclose(first[["spearman", "ssim"]].to_numpy(), 1.0, atol=1e-9)
    last = sim[sim.stage_index == 4]
    for objective in ("score", "loss"):
        rows = last[last.objective == objective]
        assert (rows.spearman < 0.9).all() and (rows.ssim < 0.9).all()
    # The maps themselves changed, stage by stage.
    for maps in res.maps.values():
        assert not np.array_equal(maps[0], maps[-1])


def test_grouping_and_stage_names(net, X):
    res = cascading_randomization(net, X, [0, 0], objectives=("score",), max_stages=2)
    assert res.stages == ["original", "7 → 3", "1 → 0"]
    assert res.layers == [[], ["7", "3"], ["1", "0"]]
    assert res.maps["score"].shape == (3, 2, 16, 16)
    assert set(res.similarity.objective) == {"score"}
    assert group_layers(list("abcdefg"), 3) == [["g", "f", "e"], ["d", "c"], ["b", "a"]]
    assert group_layers(list("ab"), 8) == [["b"], ["a"]]
    assert [name for name, _ in randomizable_layers(net)] == ["0", "1", "3", "7"]


def test_seeded_and_cumulative(net, X):
    a = cascading_randomization(net, X, [1, 3], max_stages=None, seed=5)
    b = cascading_randomization(net, X, [1, 3], max_stages=None, seed=5)
    c = cascading_randomization(net, X, [1, 3], max_stages=None, seed=6)
    for m in ("score", "loss"):
        np.testing.assert_array_equal(a.maps[m], b.maps[m])
        np.testing.assert_array_equal(a.maps[m][0], c.maps[m][0])  # stage 0 is the trained model
        assert not np.array_equal(a.maps[m][-1], c.maps[m][-1])


def test_top1_target_is_fixed_on_the_trained_model(net, X):
    with torch.no_grad():
        top1 = net(X).argmax(1)
    res = cascading_randomization(net, X, [-1, -1], max_stages=2)
    np.testing.assert_array_equal(res.targets, top1.numpy())


def test_reinitialize_resets_batchnorm_and_falls_back_to_normal_init():
    bn = tiny_convnet()[1]
    _reinitialize(bn, 0)
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))

    class Scale(torch.nn.Module):  # owns a parameter, has no reset_parameters
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((4, 3), 7.0))

    a, b = Scale(), Scale()
    rng = torch.get_rng_state()
    _reinitialize(a, 11)
    _reinitialize(b, 11)
    assert torch.equal(a.w, b.w) and not torch.equal(a.w, torch.full((4, 3), 7.0))
    assert torch.equal(torch.get_rng_state(), rng)


def test_invalid_arguments(net, X):
    with pytest.raises(InvalidInputError, match="max_stages"):
        cascading_randomization(net, X, [0, 0], max_stages=0)
    with pytest.raises(InvalidInputError, match="objectives"):
        cascading_randomization(net, X, [0, 0], objectives=("smooth",))
    with pytest.raises(InvalidInputError, match="eval mode"):
        cascading_randomization(tiny_convnet().train(), X, [0, 0])
    with pytest.raises(InvalidInputError, match="no layers"):
        cascading_randomization(torch.nn.Sequential(torch.nn.Flatten()).eval(), X, [0, 0])


def test_lite0_maps_decorrelate_and_model_is_untouched(lite0):
    from saliency_core.inputs.samples import sample_images

    samples = sample_images()[:2]
    batch = lite0.preprocess([s.image for s in samples])
    before, rng = state_hash(lite0.model), torch.get_rng_state()
    res = cascading_randomization(lite0, batch.x, [s.label for s in samples], max_stages=4)
    assert state_hash(lite0.model) == before
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in lite0.model.parameters()) and not lite0.model.training
    assert len(res.stages) == 5 and res.stages[0] == "original"
    assert res.stages[1].startswith("_fc → ") and res.stages[-1].endswith(" → _conv_stem")
    assert sum(len(g) for g in res.layers) == len(randomizable_layers(lite0.model))
    for maps in res.maps.values():
        assert maps.shape == (5, 2, 224, 224)
    mean = res.similarity.groupby(["objective", "stage_index"])["spearman"].mean()
    for objective in ("score", "loss"):
        assert mean[(objective, 0)] == pytest.approx(1.0)
        assert mean[(objective, 4)] < mean[(objective, 0)]
        assert mean[(objective, 4)] < 0.9


def wide_net() -> torch.nn.Module:
    """Layers big enough that each re-initialisation takes a while (so threads overlap)."""
    g = torch.Generator().manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1),
        torch.nn.BatchNorm2d(64),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(1024, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 5),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval()


def test_concurrent_randomisations_equal_their_sequential_results():
    # Two dashboard sessions randomising the one shared model at the same time:
    # each stage's weights must depend on its own seed only, and the global
    # RNG must be left as it was.
    import threading

    net = wide_net()
    X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    seeds = (1, 2)
    expected = {s: cascading_randomization(net, X, [1], objectives=("score",), max_stages=None, seed=s)
                for s in seeds}
    rng = torch.get_rng_state()
    rounds = 20
    barrier = threading.Barrier(len(seeds))
    results: dict[int, list] = {s: [] for s in seeds}
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()
                results[seed].append(cascading_randomization(net, X, [1], objectives=("score",), max_stages=None,
                                                             seed=seed))
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for s in seeds:
        assert len(results[s]) == rounds
        for res in results[s]:
            np.testing.assert_array_equal(res.maps["score"], expected[s].maps["score"])
    assert torch.equal(torch.get_rng_state(), rng)


def test_reinitialize_is_a_pure_function_of_the_seed_and_matches_torch_defaults():
    # The same draws as torch's own reset_parameters from a generator seeded
    # alike: kaiming_uniform_(a=sqrt(5)) for the weight, U(+-1/sqrt(fan_in)) for the bias.
    for layer in (torch.nn.Conv2d(3, 6, 3), torch.nn.Linear(7, 4), torch.nn.Conv2d(4, 4, 3, groups=2, bias=False)):
        ref = copy.deepcopy(layer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            ref.reset_parameters()
        torch.manual_seed(999)  # the global state must not matter
        rng = torch.get_rng_state()
        _reinitialize(layer, 123)
        assert torch.equal(torch.get_rng_state(), rng)
        for name, p in ref.named_parameters():
            assert torch.equal(getattr(layer, name), p), (type(layer).__name__, name)


def test_reinitialize_keeps_the_weights_layout_and_dtype():
    conv = torch.nn.Conv2d(3, 8, 3).double().to(memory_format=torch.channels_last)
    plain = torch.nn.Conv2d(3, 8, 3).double()
    _reinitialize(conv, 5)
    _reinitialize(plain, 5)
    assert conv.weight.dtype == torch.float64
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(conv.weight, plain.weight) and torch.equal(conv.bias, plain.bias)


def test_precision_reaches_every_stage_and_is_recorded(net, X, monkeypatch):
    from saliency_core.evaluation import sanity

    seen: list[str] = []
    real = sanity.compute_saliency

    def spy(*args, **kwargs):
        seen.append(kwargs["precision"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sanity, "compute_saliency", spy)
    res = cascading_randomization(net, X, [1, 3], objectives=("score",), max_stages=2, precision="fast")
    assert seen == ["fast"] * 3 and res.precision == "fast"
    assert cascading_randomization(net, X, [1, 3], objectives=("score",), max_stages=1).precision == "exact"
    with pytest.raises(InvalidInputError, match="precision"):
        cascading_randomization(net, X, [1, 3], precision="half")


def test_similarity_curves_and_stage_maps_for_display(net, X):
    from saliency_core.evaluation.sanity import similarity_curves, stage_maps

    res = cascading_randomization(net, X, [1, 3], objectives=("score", "loss"), max_stages=2)
    curves = similarity_curves(res, image=1)
    assert list(curves) == ["score · spearman", "score · ssim", "loss · spearman", "loss · ssim"]
    sim = res.similarity
    expected = sim[(sim.objective == "loss") & (sim.image == 1)].sort_values("stage_index")["ssim"].to_numpy()
    np.testing.assert_array_equal(curves["loss · ssim"], expected)
    assert curves["score · spearman"][0] == pytest.approx(1.0)

    full = stage_maps(res, image=1)
    np.testing.assert_array_equal(np.stack(full["loss"]), res.maps["loss"][:, 1])
    small = stage_maps(res, image=1, max_side=8)  # 16 px maps: means of 2 x 2 blocks
    assert len(small["score"]) == 3 and small["score"][0].shape == (8, 8)
    blocks = res.maps["score"][:, 1].reshape(3, 8, 2, 8, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(np.stack(small["score"]), blocks, rtol=1e-6)
    assert stage_maps(res, max_side=6)["score"][0].shape == (6, 6)  # f = 3: 16 px -> 6 px
    with pytest.raises(InvalidInputError, match="image"):
        stage_maps(res, image=2)
    with pytest.raises(InvalidInputError, match="max_side"):
        stage_maps(res, max_side=0)
    with pytest.raises(InvalidInputError, match="metrics"):
        similarity_curves(res, metrics=("pearson",))


def test_any_attribution_method_each_stage_equals_attribute_on_the_randomised_weights(net, X):
    # The same method and parameters at every stage; stage 0 is attribute() on the trained model,
    # the last stage attribute() on fully_randomized_model (the same weights for any grouping).
    from saliency_core import attribute
    from saliency_core.evaluation.randomized_model import fully_randomized_model

    before = state_hash(net)
    params = {"samples": 3, "noise": 0.1, "seed": 4}
    res = cascading_randomization(net, X, [1, 3], objectives=("score", "loss"), max_stages=3, seed=7,
                                  attribution="smoothgrad", params=params)
    assert res.attribution == "smoothgrad" and res.params == params
    trained = attribute(net, X, [1, 3], "smoothgrad", **params)
    randomised = attribute(fully_randomized_model(net, seed=7), X, [1, 3], "smoothgrad", **params)
    for obj in ("score", "loss"):
        np.testing.assert_array_equal(res.maps[obj][0], trained.maps[obj].numpy())
        np.testing.assert_array_equal(res.maps[obj][-1], randomised.maps[obj].numpy())
    one_stage = cascading_randomization(net, X, [1, 3], objectives=("score",), max_stages=1, seed=7,
                                        attribution="smoothgrad", params=params)
    np.testing.assert_array_equal(one_stage.maps["score"][-1], res.maps["score"][-1])
    assert state_hash(net) == before


def test_gradient_default_is_unchanged_and_grad_cam_layer_is_fixed_at_stage_zero(net, X):
    plain = cascading_randomization(net, X, [1, 3], max_stages=2)
    assert plain.attribution == "gradient" and plain.params == {}
    via_attribute = cascading_randomization(net, X, [1, 3], max_stages=2, attribution="guided_backprop")
    assert via_attribute.params == {}
    assert not np.array_equal(via_attribute.maps["score"], plain.maps["score"])  # really the guided gradient
    cam = cascading_randomization(net, X, [1, 3], max_stages=2, attribution="grad_cam", params={"layer": "3"})
    assert cam.params == {"layer": "3"} and cam.maps["score"].shape == (3, 2, 16, 16)
    with pytest.raises(InvalidInputError, match="samples"):
        cascading_randomization(net, X, [1, 3], attribution="smoothgrad", params={"samples": -1})


@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # 4 steps: a large completeness gap, on purpose
def test_randomised_black_baseline_keeps_the_models_normalisation(net, X):
    # "black" needs the mean and std: the randomised copy of a LoadedModel-like model keeps them.
    from saliency_core.evaluation.randomized_model import fully_randomized_model
    from saliency_core.inputs.preprocessing import Preprocessing

    class WithPreprocessing:
        def __init__(self, model):
            self.model = model
            self.preprocessing = Preprocessing(16, 16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))

        def module_for(self, precision):
            return self.model

    wrapped = WithPreprocessing(net)
    res = cascading_randomization(wrapped, X, [1, 3], objectives=("score",), max_stages=2,
                                  attribution="integrated_gradients", params={"steps": 4})
    assert res.params["baseline"] == "black"
    copy_ = fully_randomized_model(wrapped, seed=0)
    assert copy_.preprocessing is wrapped.preprocessing and copy_.model is not net
    assert isinstance(fully_randomized_model(net), torch.nn.Module)


@pytest.mark.slow
def test_randomisation_of_another_method_starts_from_its_maps_and_leaves_the_model_alone(lite0):
    from saliency_core import attribute
    from saliency_core.inputs.samples import sample_by_name

    coffee = sample_by_name("coffee")
    x = lite0.preprocess([coffee.image]).x
    before = {k: v.clone() for k, v in lite0.model.state_dict().items()}
    # Integrated Gradients' "black" baseline needs the model's normalisation on every randomised copy too.
    for method, params in (("grad_cam", {}), ("integrated_gradients", {"steps": 2})):
        r = cascading_randomization(lite0, x, [coffee.label], max_stages=2, attribution=method, params=params)
        ref = attribute(lite0, x, [coffee.label], method, ("score", "loss"), **params)
        assert r.attribution == method and r.maps["score"].shape == (3, 1, 224, 224)
        np.testing.assert_allclose(r.maps["loss"][0, 0], ref.maps["loss"][0].numpy(), rtol=1e-5, atol=1e-8)
        assert not np.allclose(r.maps["score"][2, 0], r.maps["score"][0, 0])  # the randomised model's map moved
    assert r.params == {"steps": 2, "baseline": "black", "rule": "adaptive", "tolerance": 0.05}
    assert all(torch.equal(before[k], v) for k, v in lite0.model.state_dict().items())


class _Uncopyable:
    def __deepcopy__(self, memo):
        raise RuntimeError("Cannot access data pointer of Tensor (e.g. FakeTensor)\nmore detail")


def test_a_model_that_cannot_be_copied_is_refused_with_a_message():
    model = tiny_convnet()
    model.handle = _Uncopyable()  # e.g. an exported graph still holding its traced fake tensors
    with pytest.raises(InvalidInputError, match=r"cannot be copied for the randomisation check.*FakeTensor\)$"):
        cascading_randomization(model, torch.randn(1, 3, 16, 16), [0], max_stages=2)
