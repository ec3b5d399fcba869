"""Gradients: analytic cases, finite differences, Captum, and no side effects."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saliency_core.core.gradients import (
    compute_saliency,
    compute_saliency_maps,
    loss_decomposition,
    reduce_channels,
)
from saliency_core.errors import InvalidInputError


class Linear(torch.nn.Module):
    """logits = W @ flatten(x) + b, so d s_k / dx = W[k] exactly."""

    def __init__(self, n_classes: int = 5, shape=(3, 4, 6)) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(int(torch.tensor(shape).prod()), n_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def tiny_convnet(dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.Tanh(),  # smooth, so finite differences are accurate
        torch.nn.Conv2d(4, 6, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(24, 7),
    )
    # Non-trivial running statistics, then eval mode once.
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, 8, 8))
    return net.eval().to(dtype)


def test_linear_model_score_gradient_is_the_weight_row():
    torch.manual_seed(1)
    model = Linear().eval()
    X = torch.randn(4, 3, 4, 6)
    y = torch.tensor([0, 3, 3, 4])
    result = compute_saliency(model, X, y, ("score",))
    W = model.fc.weight.detach().view(5, 3, 4, 6)
    torch.testing.assert_close(result.gradients["score"], W[y], rtol=0, atol=0)
    torch.testing.assert_close(compute_saliency_maps(X, y, model), W[y].abs().amax(dim=1), rtol=0, atol=0)


def test_linear_model_loss_gradient_is_closed_form():
    torch.manual_seed(2)
    model = Linear().eval()
    X = torch.randn(3, 3, 4, 6)
    y = torch.tensor([1, 2, 0])
    W = model.fc.weight.detach().view(5, 3, 4, 6)
    p = model(X).softmax(1).detach()
    onehot = F.one_hot(y, 5).float()
    expected = torch.einsum("nk,kchw->nchw", p - onehot, W)
    result = compute_saliency(model, X, y, ("loss",))
    torch.testing.assert_close(result.gradients["loss"], expected, rtol=1e-5, atol=1e-6)


def central_differences(f, X: torch.Tensor, eps: float) -> torch.Tensor:
    """(f(X + eps e_i) - f(X - eps e_i)) / (2 eps) for every coordinate i of X.

    All 2 * X.numel() perturbed copies go through ``f`` in one batch:
    ``f`` maps (B, *X.shape) to (B,).
    """
    steps = eps * torch.eye(X.numel(), dtype=X.dtype).view(X.numel(), *X.shape)
    with torch.no_grad():
        return ((f(X + steps) - f(X - steps)) / (2 * eps)).view_as(X)


@pytest.mark.parametrize("method", ["score", "loss"])
def test_float64_finite_differences_on_a_tiny_convnet(method):
    model = tiny_convnet(torch.float64)
    torch.manual_seed(3)
    X = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([2, 5])

    def objective(copies):
        """(B, N, 3, H, W) copies of the batch -> (B,) objective of each copy, summed over its N images."""
        b, n = copies.shape[:2]
        logits = model(copies.flatten(0, 1))  # eval mode: each image's logits are independent of the others
        targets = y.repeat(b)
        if method == "score":
            per_image = logits.gather(1, targets[:, None]).squeeze(1)
        else:
            per_image = F.cross_entropy(logits, targets, reduction="none")
        return per_image.view(b, n).sum(1)

    # A float64 model gets a float64 copy of X, so the whole pass runs in float64.
    grads = compute_saliency(model, X, y, (method,)).gradients[method]
    assert grads.dtype == torch.float64
    fd = central_differences(objective, X, eps=1e-6)
    torch.testing.assert_close(grads, fd, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def random_torchvision_models():
    import torchvision

    torch.manual_seed(0)
    return {
        "resnet18": torchvision.models.resnet18(weights=None).eval(),
        "squeezenet1_1": torchvision.models.squeezenet1_1(weights=None).eval(),
    }


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_matches_captum_saliency(random_torchvision_models, name):
    from captum.attr import Saliency

    model = random_torchvision_models[name]
    torch.manual_seed(4)
    X = torch.randn(4, 3, 96, 96)
    y = torch.tensor([1, 250, 999, 1])
    result = compute_saliency(model, X, y)

    ref_score = Saliency(model).attribute(X.clone(), target=y, abs=True).amax(dim=1)

    def per_example_ce(x):
        return -F.log_softmax(model(x), dim=1)

    ref_loss = Saliency(per_example_ce).attribute(X.clone(), target=y, abs=True).amax(dim=1)
    torch.testing.assert_close(result.maps["score"], ref_score, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(result.maps["loss"], ref_loss, rtol=1e-5, atol=1e-8)


def test_loss_map_does_not_depend_on_the_rest_of_the_batch():
    model = tiny_convnet()
    torch.manual_seed(5)
    X = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    batch = compute_saliency(model, X, y)
    for i in (0, 3, 5):
        alone = compute_saliency(model, X[i:i + 1], y[i:i + 1])
        for m in ("score", "loss"):
            torch.testing.assert_close(batch.maps[m][i:i + 1], alone.maps[m], rtol=1e-5, atol=1e-7)


def test_both_maps_from_exactly_one_forward_pass():
    model = tiny_convnet()
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        compute_saliency(model, torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2]))
    finally:
        handle.remove()
    assert len(calls) == 1


def test_no_side_effects_on_model_or_input():
    model = tiny_convnet()
    for p in model.parameters():
        p.requires_grad_(True)  # a model as a student would pass it: weights trainable
    state = {k: v.clone() for k, v in model.state_dict().items()}
    X = torch.randn(2, 3, 8, 8)
    X_before = X.clone()
    compute_saliency(model, X, torch.tensor([1, 2]))
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert X.grad is None and not X.requires_grad
    torch.testing.assert_close(X, X_before, rtol=0, atol=0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_works_under_no_grad_and_inference_mode():
    model = tiny_convnet()
    X = torch.randn(2, 3, 8, 8)
    y = torch.tensor([3, 4])
    expected = compute_saliency(model, X, y)
    with torch.no_grad():
        under_no_grad = compute_saliency(model, X, y)
    with torch.inference_mode():
        X_inf = X.clone()
        under_inference = compute_saliency(model, X_inf, y)
    for m in ("score", "loss"):
        torch.testing.assert_close(under_no_grad.maps[m], expected.maps[m], rtol=0, atol=0)
        torch.testing.assert_close(under_inference.maps[m], expected.maps[m], rtol=0, atol=0)


def test_eight_threads_on_one_model_equal_sequential(lite0):
    torch.manual_seed(6)
    inputs = [torch.randn(1, 3, 224, 224) for _ in range(8)]
    targets = [torch.tensor([t]) for t in (967, 281, 1, 2, 3, 500, 657, 999)]
    sequential = [compute_saliency(lite0, x, t) for x, t in zip(inputs, targets, strict=True)]
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        results[i] = compute_saliency(lite0, inputs[i], targets[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seq, par in zip(sequential, results, strict=True):
        for m in ("score", "loss"):
            torch.testing.assert_close(par.maps[m], seq.maps[m], rtol=0, atol=0)
    assert all(p.grad is None for p in lite0.model.parameters())


def test_channel_reductions():
    g = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # (1, 3, 1, 1)
    assert reduce_channels(g, "max").item() == 3.0
    assert reduce_channels(g, "mean_abs").item() == pytest.approx(2.0)
    assert reduce_channels(g, "l2").item() == pytest.approx(14 ** 0.5)
    model = tiny_convnet()
    X = torch.randn(2, 3, 8, 8)
    r = compute_saliency(model, X, torch.tensor([0, 1]), reduction="l2")
    torch.testing.assert_close(r.maps["score"], r.gradients["score"].norm(dim=1))
    with pytest.raises(InvalidInputError):
        reduce_channels(g, "median")


def test_loss_decomposition_sums_to_the_loss_gradient_and_matches_direct_vjp():
    model = tiny_convnet()
    torch.manual_seed(7)
    X = torch.randn(3, 3, 8, 8)
    y = torch.tensor([0, 3, 6])
    r = compute_saliency(model, X, y)
    target, others = loss_decomposition(r)
    torch.testing.assert_close(target + others, r.gradients["loss"])
    # The "others" term computed directly: sum_{k != y} p_k ds_k/dx.
    x = X.clone().requires_grad_(True)
    logits = model(x)
    p = logits.softmax(1).detach()
    p[torch.arange(3), y] = 0
    (direct,) = torch.autograd.grad(logits, x, grad_outputs=p)
    torch.testing.assert_close(others, direct, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r.target_probs, logits.softmax(1).detach()[torch.arange(3), y])


def test_out_of_memory_halves_the_chunk_and_the_next_call_succeeds():
    model = tiny_convnet()
    X = torch.randn(8, 3, 8, 8)
    y = torch.arange(8) % 7
    expected = compute_saliency(model, X, y)
    sizes = []

    class Flaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            sizes.append(x.shape[0])
            if x.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
            return self.m(x)

    got = compute_saliency(Flaky(), X, y)
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}
    for m in ("score", "loss"):
        torch.testing.assert_close(got.maps[m], expected.maps[m], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "X, y, kwargs",
    [
        (torch.randn(3, 8, 8), [0], {}),
        (torch.randn(1, 1, 8, 8), [0], {}),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [0], {}),
        (torch.randn(2, 3, 8, 8), [0], {}),
        (torch.randn(1, 3, 8, 8), [7], {}),
        (torch.randn(1, 3, 8, 8), [0], {"objectives": ("gradcam",)}),
        (torch.randn(1, 3, 8, 8), [0], {"reduction": "sum"}),
        (torch.randn(1, 3, 8, 8), [0], {"precision": "half"}),
    ],
)
def test_bad_arguments_raise_invalid_input(X, y, kwargs):
    with pytest.raises(InvalidInputError):
        compute_saliency(tiny_convnet(), X, torch.tensor(y), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_exact_matches_cpu_and_fast_agrees():
    from scipy.stats import spearmanr

    model = tiny_convnet()
    X = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    cpu = compute_saliency(model, X, y)
    gpu_model = tiny_convnet().cuda()
    exact = compute_saliency(gpu_model, X, y, precision="exact")
    assert exact.maps["score"].device.type == "cuda"
    for m in ("score", "loss"):
        torch.testing.assert_close(exact.maps[m].cpu(), cpu.maps[m], rtol=1e-4, atol=1e-6)
    fast = compute_saliency(gpu_model, X, y, precision="fast")
    for i in range(4):
        rho = spearmanr(fast.maps["score"][i].flatten().cpu(), exact.maps["score"][i].flatten().cpu())[0]
        assert rho > 0.99


def test_target_minus_one_means_top1_from_the_same_forward_pass():
    model = tiny_convnet()
    X = torch.randn(3, 3, 8, 8)
    top1 = model(X).argmax(1)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        r = compute_saliency(model, X, torch.tensor([-1, 2, -1]))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert r.targets.tolist() == [top1[0].item(), 2, top1[2].item()]
    explicit = compute_saliency(model, X, r.targets)
    torch.testing.assert_close(r.maps["loss"], explicit.maps["loss"], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fast_mode_agrees_with_exact_on_the_samples_with_real_weights():
    from scipy.stats import spearmanr

    from saliency_core.inputs.samples import sample_images
    from saliency_core.models.loading import load_model

    model = load_model(None, device="cuda")
    samples = sample_images()
    batch = model.preprocess([s.image for s in samples])
    y = [s.label for s in samples]
    exact = compute_saliency(model, batch.x, y, precision="exact")
    fast = compute_saliency(model, batch.x, y, precision="fast")
    cpu = compute_saliency(load_model(None, device="cpu"), batch.x, y)
    for m in ("score", "loss"):
        scale = cpu.maps[m].max()
        torch.testing.assert_close(exact.maps[m].cpu(), cpu.maps[m], rtol=1e-3, atol=1e-4 * scale)
        for i in range(len(samples)):
            rho = spearmanr(fast.maps[m][i].flatten().cpu(), exact.maps[m][i].flatten().cpu())[0]
            assert rho >= 0.99, (m, samples[i].name, rho)


def test_precision_context_is_a_no_op_on_cpu_and_rejects_unknown_modes():
    from saliency_core.core.precision import precision_context

    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for precision in ("exact", "fast"):
        with precision_context(torch.device("cpu"), precision):
            assert not torch.is_autocast_enabled("cuda") and not torch.is_autocast_enabled("cpu")
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == flags
    with pytest.raises(InvalidInputError, match="precision"), precision_context(torch.device("cpu"), "half"):
        pass


def test_precision_context_sets_and_restores_tf32_for_a_cuda_device():
    # Only the flags: they are plain process-wide settings, readable without a GPU.
    from saliency_core.core.precision import tf32_context

    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with tf32_context(torch.device("cuda"), "exact"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        with tf32_context(torch.device("cuda"), "fast"):
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_precision_context_on_cuda_enters_float16_autocast_only_when_fast():
    from saliency_core.core.precision import precision_context

    device = torch.device("cuda")
    with precision_context(device, "exact"):
        assert not torch.is_autocast_enabled("cuda") and not torch.backends.cudnn.allow_tf32
    with precision_context(device, "fast"):
        assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.float16
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert not torch.is_autocast_enabled("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_faithfulness_fast_agrees_with_exact():
    from saliency_core.evaluation.faithfulness import deletion_insertion

    model = tiny_convnet().cuda()
    X = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8)
    exact = deletion_insertion(model, X, [0, 1], maps, 4, "mean", precision="exact")
    fast = deletion_insertion(model, X, [0, 1], maps, 4, "mean", precision="fast")
    np.testing.assert_allclose(fast.deletion, exact.deletion, atol=5e-3)


def test_float64_model_computes_in_float64():
    # model.double(): the engine hands the model a float64 copy of the input,
    # so the whole pass runs in float64 and the gradients keep its precision.
    model = tiny_convnet(torch.float64)
    X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([2, 5])
    result = compute_saliency(model, X, y)
    x = X.double().requires_grad_(True)
    logits = model(x)
    (score,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x, retain_graph=True)
    (loss,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    assert result.gradients["score"].dtype == result.maps["score"].dtype == result.logits.dtype == torch.float64
    torch.testing.assert_close(result.gradients["score"], score, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.gradients["loss"], loss, rtol=1e-12, atol=1e-15)
    assert X.dtype == torch.float32  # the caller's tensor is untouched


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_is_refused_with_a_clear_message(dtype):
    with pytest.raises(InvalidInputError, match="float32 or float64"):
        compute_saliency(tiny_convnet(dtype), torch.randn(1, 3, 8, 8), [0])
