"""DeepLIFT, Rescale rule (Shrikumar et al. 2017): closed forms, completeness, Captum's DeepLift, and refusals.

Captum as the oracle: ``DeepLift`` (multiply_by_inputs=True, Rescale) on the same model, inputs and baseline.
Two adaptations, both on the test's own copy of the model: Captum has no rule for ``nn.ReLU6`` (it would take
its plain gradient), so the tests register Captum's own ``nonlinear`` rule for it; and Captum keeps one input
per module, so a module called twice in a forward pass (EfficientNet-Lite's ``_swish``) is split into one copy
per call. The loss objective: Captum's DeepLift of ``log_softmax(model(x))[y]`` takes the gradient of
log_softmax at x for the last step, which is not complete (``test_captum_through_log_softmax_is_not_complete``);
ours averages that step's gradient along the line from the baseline's logits to the image's. So the loss oracle
is Captum's DeepLift of the logits weighted by those multipliers, computed here with SciPy: Captum checks
the network, completeness checks the last step.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliency_core import attribute
from saliency_core.core.gradients import compute_saliency
from saliency_core.core.model_access import freeze
from saliency_core.errors import InvalidInputError
from saliency_core.methods.deeplift import mean_softmax
from tests.methods.oracles import LogSoftmax, Weighted, captum_ready
from tests.methods.small_nets import batch, fingerprint, relu_net

RTOL = 1e-5


# --------------------------------------------------------------------------- oracles

def exact_mean_softmax(s: torch.Tensor, s_ref: torch.Tensor) -> torch.Tensor:
    """∫₀¹ softmax(s′ + α (s − s′)) dα per row, by SciPy's adaptive quadrature in float64."""
    from scipy.integrate import quad_vec
    from scipy.special import softmax

    rows = []
    for a, b in zip(s.double().numpy(), s_ref.double().numpy(), strict=True):
        value, _ = quad_vec(lambda t, a=a, b=b: softmax(b + t * (a - b)), 0.0, 1.0, epsabs=1e-14, epsrel=1e-12)
        rows.append(value)
    return torch.tensor(np.stack(rows))


def captum_deeplift(model: nn.Module, X: torch.Tensor, baseline: torch.Tensor, targets: torch.Tensor,
                    objective: str, monkeypatch) -> torch.Tensor:
    from captum.attr import DeepLift
    from captum.attr._core import deep_lift

    monkeypatch.setitem(deep_lift.SUPPORTED_NON_LINEAR, nn.ReLU6, deep_lift.nonlinear)
    net = captum_ready(model, X)
    if objective == "score":
        forward, target = net, targets
    else:  # −L = log p_y: multipliers e_y − ∫ softmax along the line, from the model's own logits
        with torch.no_grad():
            s, s_ref = model(X), model(baseline)
        w = F.one_hot(targets, s.shape[1]).double() - exact_mean_softmax(s, s_ref)
        forward, target = Weighted(net, w.float()), torch.zeros_like(targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        return DeepLift(forward).attribute(X.clone(), baselines=baseline, target=target)


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    """Elementwise to ``rtol``, elements far below the largest to ``rtol`` of the largest."""
    expected = expected.detach()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))


# --------------------------------------------------------------------------- small nets

class SmallCNN(nn.Module):
    """Every activation Captum's DeepLift has a rule for, batch norm, a residual sum, average pooling."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ELU(), nn.Conv2d(8, 8, 1), nn.LeakyReLU(0.1))
        self.down = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.Softplus(), nn.AvgPool2d(2),
                                  nn.Conv2d(12, 12, 3, padding=1), nn.Tanh())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 16), nn.Sigmoid(),
                                  nn.Linear(16, 10))
        self.train()
        with torch.no_grad():
            self(torch.randn(8, 3, 16, 16))  # non-trivial batch-norm statistics
        self.eval()

    def forward(self, x):
        h = self.stem(x)
        return self.head(self.down(h + self.branch(h)))


def test_deeplift_score_and_loss_equal_captum_on_a_small_cnn(monkeypatch):
    model = SmallCNN()
    X, y = batch(n=3)
    baseline = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * 0.5
    r = attribute(model, X, y, "deeplift", baseline=baseline)
    for obj in ("score", "loss"):
        assert_relative(r.attributions[obj], captum_deeplift(model, X, baseline, r.targets, obj, monkeypatch))
    assert not torch.allclose(r.attributions["score"], compute_saliency(model, X, r.targets).gradients["score"]
                              * (X - baseline), rtol=1e-2)  # not gradient × input


def test_deeplift_equals_captum_on_the_embedded_model(lite0, monkeypatch):
    """EfficientNet-Lite0 (ReLU6, its activation modules called twice per block), two photos, black baseline."""
    from saliency_core import sample_by_name

    photos = [sample_by_name(n) for n in ("coffee", "chelsea")]
    X = lite0.preprocess([p.image for p in photos]).x
    r = attribute(lite0, X, [p.label for p in photos], "deeplift")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (lite0.preprocessing.mean, lite0.preprocessing.std))
    black = ((0 - mean) / std).expand_as(X).contiguous()
    assert r.params == {"baseline": "black"}
    for obj in ("score", "loss"):
        ref = captum_deeplift(lite0.model, X, black, r.targets, obj, monkeypatch)
        assert_relative(r.attributions[obj], ref)
        assert float(r.convergence[obj].abs().max()) < 1e-5, r.convergence
    # Why the loss oracle is not Captum on log_softmax: its last step is the gradient at x, nearly zero for a
    # confident prediction, so its attributions miss log p_y(x) − log p_y(x′) by far; ours add up to it.
    from captum.attr import DeepLift

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = DeepLift(LogSoftmax(captum_ready(lite0.model, X))).attribute(X.clone(), baselines=black,
                                                                              target=r.targets)
    with torch.no_grad():
        change = (F.log_softmax(lite0.model(X), 1) - F.log_softmax(lite0.model(black), 1)).gather(
            1, r.targets[:, None])[:, 0]
    their_gap = ((theirs.detach().sum(dim=(1, 2, 3)) - change) / change.abs()).abs()
    assert float(their_gap.min()) > 0.5, their_gap


def test_attributions_add_up_to_the_change_of_the_objective_exactly():
    """In float64 the completeness gap is rounding only (measured 1e-13); in float32 it is relative to
    |f(x) − f(x′)|, which can be small (9e-5 here for one image): then 1e-4 of it."""
    model = SmallCNN().double()
    X, y = batch(n=3)
    baseline = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    r = attribute(model, X.double(), y, "deeplift", baseline=baseline)
    for obj in ("score", "loss"):
        assert float(r.convergence[obj].abs().max()) < 1e-10, r.convergence


# --------------------------------------------------------------------------- the rules, in closed form

ACTIVATIONS = {
    "relu": nn.ReLU(), "relu6": nn.ReLU6(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "silu": nn.SiLU(),
    "gelu": nn.GELU(), "gelu_tanh": nn.GELU("tanh"), "elu": nn.ELU(0.7), "leaky_relu": nn.LeakyReLU(0.2),
    "softplus": nn.Softplus(2.0), "hardswish": nn.Hardswish(), "hardsigmoid": nn.Hardsigmoid(), "mish": nn.Mish(),
    "selu": nn.SELU(), "celu": nn.CELU(0.5), "hardtanh": nn.Hardtanh(-0.5, 2.0),
}


class Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


FUNCTIONAL = {  # the same activations called as functions and tensor methods
    "F.relu": Lambda(F.relu), "torch.relu": Lambda(torch.relu), "Tensor.relu": Lambda(lambda t: t.relu()),
    "Tensor.relu_": Lambda(lambda t: t.clone().relu_()), "F.relu_inplace": Lambda(lambda t: F.relu(t.clone(), True)),
    "F.relu6": Lambda(F.relu6), "clamp": Lambda(lambda t: t.clamp(0, 6)), "torch.clamp_min": Lambda(
        lambda t: torch.clamp(t, min=-1.0)), "torch.sigmoid": Lambda(torch.sigmoid),
    "Tensor.tanh": Lambda(lambda t: t.tanh()), "F.silu": Lambda(F.silu), "F.gelu": Lambda(F.gelu),
    "F.hardtanh": Lambda(lambda t: F.hardtanh(t, -1.0, 0.5)),
}


class MLP(nn.Module):
    """x -> W1 x + b1 -> φ -> W2 · + b2: DeepLIFT's attributions are (x − x′) ⊙ W1ᵀ (m ⊙ W2[y]),
    m = (φ(z) − φ(z′)) / (z − z′)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc1, self.act, self.fc2 = nn.Linear(3 * 4 * 4, 20), act, nn.Linear(20, 5)
        with torch.no_grad():
            self.fc1.weight.mul_(4.0)  # pre-activations over [-6, 6]: every piece of each φ is used

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("name", [*ACTIVATIONS, *FUNCTIONAL])
def test_rescale_rule_in_closed_form(name):
    act = ACTIVATIONS.get(name) or FUNCTIONAL[name]
    model = MLP(act).eval()
    g = torch.Generator().manual_seed(3)
    X, base = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    y = torch.tensor([0, 1, 4, 2])
    r = attribute(model, X, y, "deeplift", ("score",), baseline=base)
    with torch.no_grad():
        z, z0 = model.fc1(X.flatten(1)).double(), model.fc1(base.flatten(1)).double()
        phi = model.act
        m = (phi(z) - phi(z0)) / (z - z0)
        w2, w1 = model.fc2.weight.double(), model.fc1.weight.double()
        expected = ((X - base).flatten(1).double() * ((m * w2[y]) @ w1)).view_as(X)
    torch.testing.assert_close(r.attributions["score"].double(), expected, rtol=1e-4, atol=1e-6)
    assert float(r.convergence["score"].abs().max()) < 1e-4


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu6", "hardtanh", "leaky_relu", "silu", "F.relu", "clamp",
                                  "torch.clamp_min"])
def test_where_input_and_baseline_agree_the_multiplier_is_the_derivative(name):
    """Δz = 0 (here: pixels equal in x and x′ feed every unit) gives φ'(z), as Captum's eps: autograd's own
    (a closed form where φ has one, autograd on those units otherwise)."""
    model = MLP(ACTIVATIONS.get(name) or FUNCTIONAL[name]).eval()
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.weight[:, :5] = torch.randn(20, 5)  # units see only the first five pixels
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 3, 4, 4, generator=g)
    base = X.clone()
    base.view(2, -1)[:, 5:] += 1.0  # the first five pixels agree: every Δz is 0
    r = attribute(model, X, [1, 3], "deeplift", ("score",), baseline=base)
    plain = compute_saliency(model, X, torch.tensor([1, 3]), ("score",)).gradients["score"]
    torch.testing.assert_close(r.attributions["score"], plain * (X - base), rtol=1e-5, atol=1e-7)


def test_the_last_step_of_the_loss_is_complete_even_for_large_changes():
    g = torch.Generator().manual_seed(0)
    s, s_ref = 30 * torch.randn(3, 1000, generator=g, dtype=torch.float64), torch.zeros(3, 1000, dtype=torch.float64)
    s[0, 7] += 80  # a very confident image against a flat baseline
    p = mean_softmax(s, s_ref)
    torch.testing.assert_close(p, exact_mean_softmax(s, s_ref), rtol=1e-9, atol=1e-12)
    lse = torch.logsumexp(s, 1) - torch.logsumexp(s_ref, 1)
    torch.testing.assert_close((p * (s - s_ref)).sum(1), lse, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- the shared model

class ReusedReLU(nn.Module):
    """One nn.ReLU(inplace=True) module called three times, as EfficientNet's blocks call their ``_swish``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.act, self.fc = nn.ReLU(inplace=True), nn.Linear(6, 4)

    def forward(self, x):
        per_image = self.act(x - 0.1).mean(dim=(1, 2, 3))[:, None]  # per image: a batch mean would mix them
        return self.fc(self.act(self.c2(self.act(self.c1(x)))).mean(dim=(2, 3))) + per_image


def test_reused_and_in_place_activations_are_paired_by_call(monkeypatch):
    model = ReusedReLU().eval()
    X, _ = batch(n=2)
    base = torch.zeros_like(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete: no completeness warning
        r = attribute(model, X, [1, 2], "deeplift", baseline=base)
    for obj in ("score", "loss"):
        assert_relative(r.attributions[obj], captum_deeplift(model, X, base, r.targets, obj, monkeypatch))
        assert float(r.convergence[obj].abs().max()) < 1e-4


class Gated(nn.Module):
    """A squeeze-and-excitation gate: the activations times a sigmoid of their mean, a product of two."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv, self.act, self.squeeze = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 1)
        self.gate, self.fc = nn.Sigmoid(), nn.Linear(6, 4)

    def forward(self, x):
        h = self.act(self.conv(x))
        return self.fc((h * self.gate(self.squeeze(h.mean(dim=(2, 3), keepdim=True)))).mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore:DeepLIFT")
def test_products_of_activations_take_the_gradient_as_in_captum_and_the_gap_shows_it(monkeypatch):
    model = Gated().eval()
    X, _ = batch(n=2)
    base = torch.zeros_like(X)
    r = attribute(model, X, [1, 2], "deeplift", baseline=base)
    for obj in ("score", "loss"):
        assert_relative(r.attributions[obj], captum_deeplift(model, X, base, r.targets, obj, monkeypatch))
        assert float(r.convergence[obj].abs().max()) > 1e-3  # not complete, and said so


def test_deeplift_leaves_the_model_alone_and_other_threads_unaffected():
    """No hooks, no copies, no mode change; the function mode is the calling thread's only: gradients computed
    in other threads meanwhile are the plain ones, bit for bit."""
    model = relu_net()
    X, y = batch(n=2, size=24)
    before = fingerprint(model)
    X_before = X.clone()
    expected = compute_saliency(model, X, y)
    deeplift = attribute(model, X, y, "deeplift", baseline="dataset_mean")
    barrier = threading.Barrier(4)
    results: dict = {}

    def work(i):
        barrier.wait()
        for _ in range(3):
            if i % 2:
                results[i] = compute_saliency(model, X, y)
            else:
                results[i] = attribute(model, X, y, "deeplift", baseline="dataset_mean")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, res in results.items():
        for obj in ("score", "loss"):
            if i % 2:
                assert torch.equal(res.gradients[obj], expected.gradients[obj])
            else:
                assert torch.equal(res.attributions[obj], deeplift.attributions[obj])
    assert fingerprint(model) == before and torch.equal(X, X_before)


def test_deeplift_is_batch_invariant_and_the_same_in_chunks():
    model = SmallCNN()
    X, y = batch(n=3)
    a = attribute(model, X, y, "deeplift", baseline="mean")
    chunked = attribute(model, X, y, "deeplift", baseline="mean", max_batch=2)
    alone = attribute(model, X[2:], y[2:], "deeplift", baseline="mean")
    for obj in ("score", "loss"):
        torch.testing.assert_close(chunked.attributions[obj], a.attributions[obj], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(alone.attributions[obj], a.attributions[obj][2:], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(chunked.convergence[obj], a.convergence[obj], rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- what it refuses

class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attn, self.fc = nn.Conv2d(3, 8, 4, stride=4), nn.MultiheadAttention(8, 2), nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).permute(2, 0, 1)
        return self.fc(self.attn(t, t, t, need_weights=False)[0].mean(0))


class _Swish(torch.autograd.Function):  # EfficientNet's MemoryEfficientSwish: invisible to a function mode
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * s * (1 + x * (1 - s))


class Branchy(nn.Module):
    """Control flow that depends on the input: a different activation for bright images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        h = torch.tanh(h) if float(x.mean()) > 0 else torch.relu(h)
        return self.fc(h.mean(dim=(2, 3)))


def _seq(*layers) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*layers).eval()


REFUSED = {
    "max-pooling": (lambda: _seq(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(3)),
                    r"max_pool2d.*layer '2' \(MaxPool2d\).*max-pooling needs a rule"),
    "attention": (lambda: Attention().eval(), r"attn.*MultiheadAttention.*attention"),
    "layer norm": (lambda: _seq(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LayerNorm(4 * 14 * 14), nn.LazyLinear(3)),
                   r"layer_norm.*layer '2' \(LayerNorm\).*normalising"),
    "batch statistics": (lambda: _seq(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                                      nn.Flatten(), nn.LazyLinear(3)),
                         r"batch_norm on the batch's own statistics in layer '1' \(BatchNorm2d\)"),
    "custom autograd function": (lambda: _seq(nn.Conv2d(3, 4, 3), Lambda(_Swish.apply), nn.Flatten(),
                                              nn.LazyLinear(3)),
                                 r"_SwishBackward.*neither a linear layer"),
    "softmax": (lambda: _seq(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3), nn.Softmax(dim=1)),
                r"softmax.*layer '3' \(Softmax\)"),
    "division by an activation": (lambda: _seq(nn.Conv2d(3, 4, 3), Lambda(lambda t: t / (1 + t.abs())),
                                               nn.Flatten(), nn.LazyLinear(3)), r"div|abs"),
    "input-dependent control flow": (lambda: Branchy().eval(), r"same activations on the image and on the baseline"),
}


@pytest.mark.filterwarnings("ignore:Converting a tensor")  # Branchy's own float(x.mean())
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_layer_without_a_rule_is_refused_by_name(case):
    make, match = REFUSED[case]
    model = make()
    X, _ = batch(n=2)
    with torch.no_grad():
        model(X)  # materialise lazy layers
    base = -X if case == "input-dependent control flow" else torch.zeros_like(X)
    with pytest.raises(InvalidInputError, match=match):
        attribute(model, X, [0, 1], "deeplift", baseline=base)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_compiled_models_are_refused():
    model = relu_net()
    X, y = batch(n=1)
    with pytest.raises(InvalidInputError, match="compiled TorchScript"):
        attribute(torch.jit.script(model), X, y[:1], "deeplift", baseline="dataset_mean")
    exported = torch.export.unflatten(torch.export.export(model, (X,)))
    freeze(exported)  # as the models folder loads one
    with pytest.raises(InvalidInputError, match="could not see"):
        attribute(exported, X, y[:1], "deeplift", baseline="dataset_mean")


def test_max_pooling_in_a_torchvision_model_is_refused(nets):
    with pytest.raises(InvalidInputError, match=r"max_pool2d.*layer 'maxpool' \(MaxPool2d\)"):
        attribute(nets["resnet18"], torch.randn(1, 3, 32, 32), [3], "deeplift", baseline="dataset_mean")
