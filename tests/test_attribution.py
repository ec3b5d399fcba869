"""attribute() and its methods: registry, analytic cases, reproducibility, no side effects, threads.

The cross-checks against Captum are in test_attribution_captum.py.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import math
import threading
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F

from saliency_core import ATTRIBUTION_METHODS, attribute
from saliency_core.core.gradients import compute_saliency
from saliency_core.core.model_access import TOP1_TARGET
from saliency_core.errors import InvalidInputError
from saliency_core.inputs.preprocessing import Preprocessing
from saliency_core.methods.guided_backprop import guided_copy
from saliency_core.methods.integrated_gradients import path_rule
from saliency_core.methods.smoothgrad import noisy_copies

SMALL = {  # parameters that keep the embedded-model tests short
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 3},
    "score_cam": {"channels": 2},
}


def relu_net(seed: int = 0) -> torch.nn.Module:
    """Conv-BN-ReLU-Conv-ReLU6-pool-linear, eval mode with non-trivial BN statistics."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 7),
    )
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, 16, 16))
    return net.eval()


def smooth_net(seed: int = 0) -> torch.nn.Module:
    """A tanh net: smooth, so path integrals converge like the quadrature rules promise."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 7),
    ).eval()


class Linear(torch.nn.Module):
    def __init__(self, shape=(3, 4, 6), n_classes: int = 5) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(math.prod(shape), n_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class WithPreprocessing:
    """A LoadedModel-like wrapper: a module plus its normalisation (what "black" needs)."""

    def __init__(self, model: torch.nn.Module, mean, std) -> None:
        self.model = model
        self.preprocessing = Preprocessing(16, 16, mean, std)

    def module_for(self, precision: str) -> torch.nn.Module:
        return self.model


def batch(n: int = 3, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([0, 3, TOP1_TARGET, 6][:n])


def fingerprint(module: torch.nn.Module) -> dict:
    """Everything a call must leave alone: weights and buffers (sha256), grads, modes, hooks."""
    digest = hashlib.sha256()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    hooks = sum(len(v) for m in module.modules() for k, v in vars(m).items() if "hooks" in k and isinstance(v, dict))
    return {
        "sha256": digest.hexdigest(),
        "grads": [p.grad is None for p in module.parameters()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "training": [m.training for m in module.modules()],
        "types": [type(m).__name__ for m in module.modules()],
        "hooks": hooks,
    }


# ---------------------------------------------------------------- registry and API

def test_registry_has_the_issues_methods_parameters_and_defaults():
    assert {name: m.defaults() for name, m in ATTRIBUTION_METHODS.items()} == {
        "gradient": {},
        "gradient_x_input": {"baseline": "dataset_mean"},
        "smoothgrad": {"samples": 25, "noise": 0.15, "seed": 0},
        "integrated_gradients": {"steps": 32, "baseline": "black", "rule": "trapezoid"},
        "guided_backprop": {},
        "grad_cam": {"layer": None},
        "grad_cam_plus_plus": {"layer": None},
        "layer_cam": {"layer": None},
        "hires_cam": {"layer": None},
        "score_cam": {"layer": None, "channels": 64},
    }
    # The loss is -L wherever the sign matters, so positive means "evidence for the target".
    assert {name: m.loss_objective for name, m in ATTRIBUTION_METHODS.items()} == {
        "gradient": "L", "smoothgrad": "L", "gradient_x_input": "-L", "integrated_gradients": "-L",
        "guided_backprop": "-L", "grad_cam": "-L", "grad_cam_plus_plus": "-L", "layer_cam": "-L",
        "hires_cam": "-L", "score_cam": "-L",
    }
    rule = {p.name: p for p in ATTRIBUTION_METHODS["integrated_gradients"].params}["rule"]
    assert rule.choices == ("trapezoid", "gauss_legendre")


@pytest.mark.parametrize("reduction", ["max", "l2"])
def test_gradient_method_gives_exactly_compute_saliency(reduction):
    model = relu_net()
    X, y = batch()
    ref = compute_saliency(model, X, y, reduction=reduction, max_batch=2)
    r = attribute(model, X, y, "gradient", reduction=reduction, max_batch=2)
    for obj in ("score", "loss"):
        assert torch.equal(r.maps[obj], ref.maps[obj])
        assert torch.equal(r.attributions[obj], ref.gradients[obj])
    assert torch.equal(r.logits, ref.logits) and torch.equal(r.targets, ref.targets)
    assert r.params == {} and r.method == "gradient" and r.reduction == reduction and r.convergence is None


@pytest.mark.parametrize(
    "method, kwargs, match",
    [
        ("gradcam", {}, "Known methods: gradient, gradient_x_input"),
        ("smoothgrad", {"sample": 3}, "unknown sample"),
        ("gradient", {"steps": 3}, "gradient takes no parameters"),
        ("smoothgrad", {"samples": 0}, "samples must be an integer >= 1"),
        ("smoothgrad", {"samples": 2.5}, "samples"),
        ("smoothgrad", {"samples": True}, "samples"),
        ("smoothgrad", {"noise": -0.1}, "noise"),
        ("smoothgrad", {"noise": float("nan")}, "noise"),
        ("smoothgrad", {"seed": -1}, "seed"),
        ("integrated_gradients", {"steps": 0, "baseline": "dataset_mean"}, "steps"),
        ("integrated_gradients", {"steps": 1, "baseline": "dataset_mean"}, "steps must be an integer >= 2"),
        ("integrated_gradients", {"steps": 1, "rule": "gauss_legendre", "baseline": "dataset_mean"},
         "steps must be an integer >= 2"),
        ("integrated_gradients", {"rule": "simpson", "baseline": "dataset_mean"}, "rule must be one of"),
        ("integrated_gradients", {"baseline": "grey"}, "baseline must be one of"),
        ("gradient_x_input", {"baseline": torch.zeros(1, 3, 16, 16)}, "shaped like X"),
        ("gradient", {"objectives": ("gradcam",)}, "objectives must be"),
        ("gradient", {"reduction": "sum"}, "reduction"),
        ("gradient", {"max_batch": 0}, "max_batch"),
        ("gradient", {"precision": "half"}, "precision"),
    ],
)
def test_bad_arguments_raise_invalid_input_naming_the_argument(method, kwargs, match):
    X, y = batch()
    with pytest.raises(InvalidInputError, match=match):
        attribute(relu_net(), X, y, method, **kwargs)


def test_a_model_in_train_mode_is_refused_and_left_in_train_mode():
    model = relu_net().train()
    with pytest.raises(InvalidInputError, match="eval mode"):
        attribute(model, *batch(), "smoothgrad", samples=2)
    assert model.training


def test_params_record_every_value_used_defaults_included():
    model = smooth_net()
    X, y = batch(size=32)
    r = attribute(model, X, y, "integrated_gradients", steps=4, baseline="blur")
    assert r.params == {"steps": 4, "baseline": "blur", "rule": "trapezoid", "blur_sigma": 5.0 * 32 / 224}
    r = attribute(model, X, y, "gradient_x_input", baseline=torch.zeros_like(X))
    assert r.params == {"baseline": "tensor"}
    r = attribute(model, X, y, "smoothgrad", samples=2)
    assert r.params == {"samples": 2, "noise": 0.15, "seed": 0}


# ---------------------------------------------------------------- baselines and signs

def test_gradient_x_input_uses_minus_the_loss_and_the_black_baseline_of_the_models_normalisation():
    model = relu_net()
    X, y = batch()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    g = compute_saliency(model, X, y).gradients
    black = ((0 - torch.tensor(mean)) / torch.tensor(std)).view(1, 3, 1, 1)
    r = attribute(WithPreprocessing(model, mean, std), X, y, "gradient_x_input", baseline="black")
    torch.testing.assert_close(r.attributions["score"], g["score"] * (X - black), rtol=1e-6, atol=0)
    torch.testing.assert_close(r.attributions["loss"], -g["loss"] * (X - black), rtol=1e-6, atol=0)
    zeros = attribute(model, X, y, "gradient_x_input")
    assert torch.equal(zeros.attributions["loss"], -(g["loss"] * X))


def test_black_baseline_on_a_bare_module_says_it_needs_mean_and_std():
    with pytest.raises(InvalidInputError, match="mean and std"):
        attribute(relu_net(), *batch(), "integrated_gradients")


# ---------------------------------------------------------------- Integrated Gradients

def test_integrated_gradients_of_a_linear_score_is_input_times_weights_with_no_gap():
    torch.manual_seed(3)
    model = Linear().eval()
    X = torch.randn(4, 3, 4, 6)
    y = torch.tensor([0, 4, 2, 2])
    base = torch.randn_like(X)
    W = model.fc.weight.detach().view(5, 3, 4, 6)
    for rule, steps in (("trapezoid", 2), ("gauss_legendre", 2), ("gauss_legendre", 5)):
        r = attribute(model, X, y, "integrated_gradients", ("score",), steps=steps, rule=rule, baseline=base)
        torch.testing.assert_close(r.attributions["score"], (X - base) * W[y], rtol=1e-5, atol=1e-6)
        assert float(r.convergence["score"].abs().max()) < 1e-4


def test_quadrature_rules_weights_sum_to_one_and_the_trapezoid_is_true():
    alphas, weights = path_rule("trapezoid", 5)
    assert alphas.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert weights.tolist() == [0.125, 0.25, 0.25, 0.25, 0.125]
    alphas, weights = path_rule("gauss_legendre", 3)
    assert weights.sum() == pytest.approx(1)
    assert (weights * alphas**5).sum() == pytest.approx(1 / 6)  # exact up to degree 2n - 1


@pytest.mark.parametrize("rule", ["trapezoid", "gauss_legendre"])
def test_completeness_gap_shrinks_as_steps_grow_and_warns_when_large(rule):
    model = smooth_net()
    X, y = batch(n=2, size=16)
    X = 3 * X  # a long path, so few steps are visibly off
    gaps = []
    for steps in (2, 4, 16):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = attribute(model, X, y, "integrated_gradients", steps=steps, rule=rule, baseline="dataset_mean")
        worst = max(float(c.abs().max()) for c in r.convergence.values())
        warned = any("completeness gap" in str(w.message) for w in caught)
        assert warned == (worst > 0.1), (steps, worst)
        gaps.append(worst)
    assert gaps[0] > 0.1 and gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01, gaps


def test_integrated_gradients_loss_sums_to_the_drop_in_loss():
    model = smooth_net()
    X, y = batch(n=2)
    r = attribute(model, X, y, "integrated_gradients", steps=64, rule="gauss_legendre", baseline="dataset_mean")
    with torch.no_grad():
        minus_loss = -F.cross_entropy(model(X), r.targets, reduction="none")
        minus_loss0 = -F.cross_entropy(model(torch.zeros_like(X)), r.targets, reduction="none")
    torch.testing.assert_close(r.attributions["loss"].sum(dim=(1, 2, 3)), minus_loss - minus_loss0,
                               rtol=1e-4, atol=1e-5)


def test_progress_counts_path_points_for_integrated_gradients_and_images_otherwise():
    model = smooth_net()
    X, y = batch(n=2)
    calls = []
    attribute(model, X, y, "integrated_gradients", steps=4, baseline="dataset_mean", max_batch=3,
              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 8), (6, 8), (8, 8)]
    calls.clear()
    attribute(model, X, y, "gradient", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 2)]


# ---------------------------------------------------------------- SmoothGrad

def test_smoothgrad_without_noise_is_the_gradient():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "smoothgrad", samples=5, noise=0.0)
    ref = compute_saliency(model, X, y)
    for obj in ("score", "loss"):
        torch.testing.assert_close(r.attributions[obj], ref.gradients[obj], rtol=1e-5, atol=1e-7)


def test_smoothgrad_with_one_sample_is_the_gradient_at_one_reproducible_noisy_input():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "smoothgrad", samples=1, noise=0.2, seed=7)
    targets = compute_saliency(model, X, y).targets  # top-1 of the clean image, not of the noisy one
    ref = compute_saliency(model, noisy_copies(X, 0, noise=0.2, seed=7), targets)
    for obj in ("score", "loss"):
        torch.testing.assert_close(r.attributions[obj], ref.gradients[obj], rtol=1e-6, atol=1e-8)
    assert torch.equal(r.targets, targets)
    assert not torch.allclose(noisy_copies(X, 0, noise=0.2, seed=7), X)


def test_smoothgrad_is_reproducible_batch_invariant_and_leaves_the_global_generator_alone():
    model = relu_net()
    X, y = batch(n=3)
    state = torch.get_rng_state()
    a = attribute(model, X, y, "smoothgrad", samples=4)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = attribute(model, X, y, "smoothgrad", samples=4)
    assert torch.equal(a.attributions["score"], b.attributions["score"])
    other_seed = attribute(model, X, y, "smoothgrad", samples=4, seed=1)
    assert not torch.allclose(a.attributions["score"], other_seed.attributions["score"])
    chunked = attribute(model, X, y, "smoothgrad", samples=4, max_batch=3)
    alone = attribute(model, X[2:], y[2:], "smoothgrad", samples=4)
    for obj in ("score", "loss"):
        torch.testing.assert_close(chunked.attributions[obj], a.attributions[obj], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(alone.attributions[obj], a.attributions[obj][2:], rtol=1e-5, atol=1e-7)


def test_smoothgrad_gives_the_same_map_in_every_thread():
    model = relu_net()
    X, y = batch(n=2, size=24)
    expected = attribute(model, X, y, "smoothgrad", samples=6)
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        torch.manual_seed(i)  # each thread moves the global generator; the noise must not follow
        barrier.wait()
        torch.randn(100)
        results[i] = attribute(model, X, y, "smoothgrad", samples=6)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        for obj in ("score", "loss"):
            assert torch.equal(r.attributions[obj], expected.attributions[obj])


# ---------------------------------------------------------------- guided backprop

def test_guided_backprop_treats_relu6_like_relu_as_a_hooked_oracle_does():
    """Oracle: Captum's rule (grad_input -> relu(grad_input)) as full backward hooks on the test's own copy."""
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "guided_backprop")
    hooked = copy.deepcopy(model)
    for m in hooked.modules():
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)):
            m.inplace = False
            m.register_full_backward_hook(lambda mod, gin, gout: (F.relu(gin[0]),))
    for obj in ("score", "loss"):
        x = X.clone().requires_grad_(True)
        logits = hooked(x)
        f = logits if obj == "score" else F.log_softmax(logits, dim=1)  # -L = log p_y
        (g,) = torch.autograd.grad(f.gather(1, r.targets[:, None]).sum(), x)
        torch.testing.assert_close(r.attributions[obj], g, rtol=1e-5, atol=1e-8)


def test_guided_backprop_without_relus_says_why():
    with pytest.raises(InvalidInputError, match=r"ReLU.*Tanh"):
        attribute(smooth_net(), *batch(), "guided_backprop")


def test_guided_copy_is_cached_shares_the_weights_and_dies_with_the_model():
    model = relu_net()
    twin = guided_copy(model)
    assert guided_copy(model) is twin
    assert all(a is b for a, b in zip(model.parameters(), twin.parameters(), strict=True))
    assert any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in twin.modules())
    ref = weakref.ref(model)
    del model, twin
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------- Grad-CAM

def test_grad_cam_is_the_relu_of_the_gradient_weighted_activations():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "grad_cam", layer="4")
    a = model[:5](X).detach()  # the ReLU6 output, (N, 6, 8, 8)
    for obj in ("score", "loss"):
        x = X.clone()
        act = model[:5](x).detach().requires_grad_(True)
        logits = model[5:](act)
        f = logits if obj == "score" else F.log_softmax(logits, dim=1)
        (g,) = torch.autograd.grad(f.gather(1, r.targets[:, None]).sum(), act)
        coarse = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
        expected = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(r.attributions[obj], expected, rtol=1e-5, atol=1e-7)
        assert bool((r.maps[obj] >= 0).all())
    assert r.reduction == "none"


class Twice(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "make, layer, match",
    [
        (relu_net, None, "bare module needs layer="),
        (relu_net, "head", r"not a submodule.*'0', '1'"),
        (relu_net, "7", r"\(N, K, h, w\) output; '7' gives \(3, 7\)"),
        (lambda: Twice().eval(), "conv", "ran 2 times"),
    ],
)
def test_grad_cam_refuses_layers_it_cannot_use(make, layer, match):
    with pytest.raises(InvalidInputError, match=match):
        attribute(make(), *batch(), "grad_cam", layer=layer)


def test_registered_cam_layers_exist_and_give_feature_maps():
    from torchvision.models import get_model

    from saliency_core.models.registry import REGISTRY

    shapes: list[tuple[int, ...]] = []
    for spec in REGISTRY.values():
        if spec.source != "torchvision":
            continue
        shapes.clear()
        with torch.device("meta"):  # structure only: no weights allocated or initialised
            model = get_model(spec.name, weights=None).eval()
        if spec.name == "vit_b_16":
            assert spec.cam_layer == ""
            continue
        layer = model.get_submodule(spec.cam_layer)
        handle = layer.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out.shape)))
        with torch.no_grad():
            model(torch.empty(1, 3, 224, 224, device="meta"))
        handle.remove()
        assert len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][2] >= 7, (spec.name, shapes)


def test_a_registered_model_without_cam_layer_says_so(lite0):
    from saliency_core.models.registry import LoadedModel

    no_cam = LoadedModel(lite0.name, dataclasses.replace(lite0.spec, cam_layer=""), lite0.model,
                         lite0.categories, lite0.device)
    with pytest.raises(InvalidInputError, match="no convolutional feature map"):
        attribute(no_cam, torch.zeros(1, 3, 64, 64), [0], "grad_cam")


# ---------------------------------------------------------------- every method: modes, side effects, threads

def small_options(method: str) -> dict:
    """Parameters for relu_net: its Grad-CAM layer, a baseline a bare module can have, few samples/steps."""
    kw = dict(SMALL.get(method, {}))
    if ATTRIBUTION_METHODS[method].family == "CAM":
        kw["layer"] = "4"
    if "baseline" in ATTRIBUTION_METHODS[method].defaults():
        kw["baseline"] = "dataset_mean"
    return kw


@pytest.mark.filterwarnings("ignore:Integrated Gradients")
@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_every_method_works_under_no_grad_and_inference_mode(method):
    model = relu_net()
    X, y = batch()
    kw = small_options(method)
    expected = attribute(model, X, y, method, **kw)
    with torch.inference_mode():
        X_inf = X.clone()
        under_inference = attribute(model, X_inf, y, method, **kw)
    with torch.no_grad():
        under_no_grad = attribute(model, X, y, method, **kw)
    for r in (under_inference, under_no_grad):
        for obj in ("score", "loss"):
            assert torch.equal(r.attributions[obj], expected.attributions[obj])


@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # the gap at 3 steps
@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_every_method_and_objective_on_the_embedded_model_leaves_it_untouched(lite0, method):
    torch.manual_seed(11)
    X = torch.randn(1, 3, 224, 224)
    X_before = X.clone()
    before = fingerprint(lite0.model)
    r = attribute(lite0, X, [TOP1_TARGET], method, **SMALL.get(method, {}))
    assert fingerprint(lite0.model) == before
    assert torch.equal(X, X_before) and X.grad is None and not X.requires_grad
    cam = ATTRIBUTION_METHODS[method].family == "CAM"
    channels = 1 if cam else 3
    for obj in ("score", "loss"):
        assert r.attributions[obj].shape == (1, channels, 224, 224)
        assert r.maps[obj].shape == (1, 224, 224) and r.maps[obj].dtype == torch.float32
        assert bool(torch.isfinite(r.attributions[obj]).all()) and bool((r.maps[obj] >= 0).all())
        assert float(r.maps[obj].amax()) > 0
    assert r.logits.shape == (1, 1000) and r.targets.tolist() == [int(r.logits.argmax())]
    if cam:
        assert r.params == {"layer": "_blocks.15", **SMALL.get(method, {})}
    if method == "integrated_gradients":
        assert r.params["baseline"] == "black" and set(r.convergence) == {"score", "loss"}


def test_eight_threads_mixing_methods_on_one_model_equal_sequential(lite0):
    jobs = [("gradient", {}), ("guided_backprop", {}), ("grad_cam", {}), ("smoothgrad", {"samples": 2}),
            ("integrated_gradients", {"steps": 2}), ("gradient_x_input", {}), ("score_cam", {"channels": 3}),
            ("grad_cam_plus_plus", {})]
    g = torch.Generator().manual_seed(12)
    inputs = [torch.randn(1, 3, 96, 96, generator=g) for _ in jobs]
    targets = [[t] for t in (967, 281, 1, 2, 3, 500, 657, TOP1_TARGET)]

    def run(i):
        method, kw = jobs[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # IG's gap at 2 steps
            return attribute(lite0, inputs[i], targets[i], method, **kw)

    before = fingerprint(lite0.model)
    sequential = [run(i) for i in range(len(jobs))]
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(i):
        barrier.wait()
        results[i] = run(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (method, _), seq, par in zip(jobs, sequential, results, strict=True):
        for obj in ("score", "loss"):
            assert torch.equal(par.attributions[obj], seq.attributions[obj]), method
    assert fingerprint(lite0.model) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.filterwarnings("ignore:Integrated Gradients")
@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_cuda_exact_matches_cpu_and_fast_agrees(method):
    from scipy.stats import spearmanr

    X, y = batch(n=2, size=32)
    kw = small_options(method)
    cpu = attribute(relu_net(), X, y, method, **kw)
    gpu_model = relu_net().cuda()
    exact = attribute(gpu_model, X, y, method, precision="exact", **kw)
    fast = attribute(gpu_model, X, y, method, precision="fast", **kw)
    for obj in ("score", "loss"):
        assert exact.attributions[obj].device.type == "cuda"
        torch.testing.assert_close(exact.attributions[obj].cpu(), cpu.attributions[obj], rtol=1e-4, atol=1e-6)
        rho = spearmanr(fast.maps[obj].cpu().flatten(), exact.maps[obj].cpu().flatten()).statistic
        assert rho > 0.95, (obj, rho)
