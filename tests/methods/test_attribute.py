"""attribute(): the registry, arguments, recorded parameters, progress, and what every method shares: grad modes,
no side effects on the model, threads, CUDA."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from saliency_core import ATTRIBUTION_METHODS, attribute
from saliency_core.core.model_access import TOP1_TARGET
from saliency_core.errors import InvalidInputError
from tests.methods.small_nets import SMALL, batch, fingerprint, relu_net, smooth_net


def test_registry_has_the_issues_methods_parameters_and_defaults():
    assert {name: m.defaults() for name, m in ATTRIBUTION_METHODS.items()} == {
        "gradient": {},
        "gradient_x_input": {"baseline": "dataset_mean"},
        "smoothgrad": {"samples": 25, "noise": 0.15, "seed": 0},
        "smoothgrad_sq": {"samples": 25, "noise": 0.15, "seed": 0},
        "vargrad": {"samples": 25, "noise": 0.15, "seed": 0},
        # steps None: the rule's own (32 for the fixed rules, at most 256 for the adaptive default: issue 22)
        "integrated_gradients": {"steps": None, "baseline": "black", "rule": "adaptive", "tolerance": 0.05},
        "blur_ig": {"steps": 64, "max_sigma": 50.0, "grad_step": 0.01, "spacing": "linear"},
        "guided_ig": {"steps": 48, "fraction": 0.25, "max_dist": 0.02, "baseline": "black"},
        "expected_gradients": {"samples": 32, "baselines": "blur", "stdevs": 0.0, "seed": 0},
        "xrai": {"mode": "full", "steps": 32, "area_threshold": 1.0},
        "deeplift": {"baseline": "black"},
        "guided_backprop": {},
        "grad_cam": {"layer": None},
        "grad_cam_plus_plus": {"layer": None},
        "layer_cam": {"layer": None},
        "hires_cam": {"layer": None},
        "score_cam": {"layer": None, "channels": 64},
        "occlusion": {"window": 32, "stride": 16, "baseline": "dataset_mean"},
        "rise": {"masks": 250, "grid": 7, "keep": 0.5, "seed": 0, "baseline": "dataset_mean"},
        "kernel_shap": {"samples": 200, "superpixels": "slic", "segments": 50, "compactness": 10.0,
                        "kernel_size": 4.0, "max_dist": 200.0, "seed": 0, "baseline": "dataset_mean"},
        "lime": {"samples": 200, "superpixels": "quickshift", "segments": 50, "compactness": 10.0, "kernel_size": 4.0,
                 "max_dist": 200.0, "seed": 0, "baseline": "dataset_mean", "kernel_width": 0.25},
        "attention_rollout": {"head_fusion": "mean", "discard_ratio": 0.0},
        "chefer_attention": {},
    }
    # The loss is -L wherever the sign matters, so positive means "evidence for the target"; squares and
    # variances (SmoothGrad², VarGrad) do not depend on it.
    assert {name: m.loss_objective for name, m in ATTRIBUTION_METHODS.items()} == {
        "gradient": "L", "smoothgrad": "L", "smoothgrad_sq": "L", "vargrad": "L", "gradient_x_input": "-L",
        "integrated_gradients": "-L", "blur_ig": "-L", "guided_ig": "-L",
        "expected_gradients": "-L", "xrai": "-L", "deeplift": "-L",
        "guided_backprop": "-L", "grad_cam": "-L",
        "grad_cam_plus_plus": "-L", "layer_cam": "-L", "hires_cam": "-L", "score_cam": "-L", "occlusion": "-L",
        "rise": "-L", "kernel_shap": "-L", "lime": "-L",
        "attention_rollout": "L",  # no target, no sign: the same map for both objectives
        "chefer_attention": "-L",
    }
    rule = {p.name: p for p in ATTRIBUTION_METHODS["integrated_gradients"].params}["rule"]
    assert rule.choices == ("adaptive", "trapezoid", "gauss_legendre")


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
    r = attribute(model, X, y, "integrated_gradients", steps=4, baseline="blur", tolerance=0.5)
    assert r.params == {"steps": 4, "baseline": "blur", "rule": "adaptive", "tolerance": 0.5,
                        "blur_sigma": 5.0 * 32 / 224}
    # A fixed rule records what it did before the adaptive rule: no tolerance, which it does not use.
    r = attribute(model, X, y, "integrated_gradients", steps=4, baseline="blur", rule="trapezoid")
    assert r.params == {"steps": 4, "baseline": "blur", "rule": "trapezoid", "blur_sigma": 5.0 * 32 / 224}
    r = attribute(model, X, y, "gradient_x_input", baseline=torch.zeros_like(X))
    assert r.params == {"baseline": "tensor"}
    r = attribute(model, X, y, "smoothgrad", samples=2)
    assert r.params == {"samples": 2, "noise": 0.15, "seed": 0}


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


#: The methods these CNNs can run: the attention methods need a ViT and are checked the same ways (inference mode,
#: the model untouched, threads) on tiny ViTs in tests/methods/test_attention_maps.py.
ON_CNNS = [name for name, m in ATTRIBUTION_METHODS.items() if "attention_blocks" not in m.needs]


def small_options(method: str) -> dict:
    """Parameters for relu_net: its Grad-CAM layer, a baseline a bare module can have, few samples/steps."""
    kw = dict(SMALL.get(method, {}))
    if ATTRIBUTION_METHODS[method].family == "CAM":  # relu_net's last conv
        kw["layer"] = "4"
    if "baseline" in ATTRIBUTION_METHODS[method].defaults():
        kw["baseline"] = "dataset_mean"
    return kw


@pytest.mark.filterwarnings("ignore:Integrated Gradients")
@pytest.mark.parametrize("method", ON_CNNS)
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
@pytest.mark.parametrize("method", ON_CNNS)
def test_every_method_and_objective_on_the_embedded_model_leaves_it_untouched(lite0, method):
    torch.manual_seed(11)
    X = torch.randn(1, 3, 224, 224)
    X_before = X.clone()
    before = fingerprint(lite0.model)
    r = attribute(lite0, X, [TOP1_TARGET], method, **SMALL.get(method, {}))
    assert fingerprint(lite0.model) == before
    assert torch.equal(X, X_before) and X.grad is None and not X.requires_grad
    cam = ATTRIBUTION_METHODS[method].family == "CAM"
    channels = 1 if ATTRIBUTION_METHODS[method].output == "layer" else 3  # the CAMs' and XRAI's one channel
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
@pytest.mark.parametrize("method", ON_CNNS)
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
