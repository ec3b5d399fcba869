"""Guided IG against PAIR's ``saliency.core.GuidedIG`` (saliency==0.2.1), its cost, its parameters, its completeness.

PAIR works on one HWC image and one objective at a time: ``call_model_function`` below runs our PyTorch model
and returns the input gradient of s_y or of log p_y = −L (the sign our loss map explains), computed as the core
computes it (−cross_entropy). Both sides get the same input and baseline in the model's (normalised) space: the
guided path is not invariant to a change of scale per channel (its L1 distances and its ranking of |g| are not).

PAIR 0.2.1 calls ``np.quantile(..., interpolation="lower")``, a keyword numpy 2.4 no longer takes (renamed
``method`` in numpy 1.22); the test hands PAIR's module a numpy whose quantile takes the old name.

The path picks features by their rank in |g|, a discontinuous choice: a gradient that differs in its last bit can
pick another feature, and the paths then part. On the embedded model in float32 that happens: a convolution's
rounding of a row depends on where the row sits in its batch, and ours runs the score's and the loss's rows in one
batch of 2, PAIR one row at a time: the loss map (the second row) differed by 22 % (L1) after 6 steps, while it
agreed to 3e-8 when PAIR's call ran its row in the same place of a batch of the same size. So the embedded test
gives PAIR's call the same batch layout (copies of the row before it); the float64 nets need nothing of the kind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saliency_core import attribute
from saliency_core.errors import InvalidInputError
from saliency_core.methods.declaration import Passes
from saliency_core.methods.guided_ig import FRACTION, MAX_DIST, STEPS
from saliency_core.methods.integrated_gradients import completeness_gap
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.methods.oracles import OldQuantileNumpy
from tests.methods.small_nets import Linear, RowCounter, batch, relu_net, smooth_net

pair = pytest.importorskip("saliency.core")
pair_guided_ig = pytest.importorskip("saliency.core.guided_ig")

SPEC = ATTRIBUTION_METHODS["guided_ig"]


@pytest.fixture(autouse=True)
def _pair_on_this_numpy(monkeypatch):
    monkeypatch.setattr(pair_guided_ig, "np", OldQuantileNumpy("numpy"))


def pair_guided(model, x: torch.Tensor, baseline: torch.Tensor, y: int, objective: str, *, steps: int,
                fraction: float = FRACTION, max_dist: float = MAX_DIST, position: int = 0, chw: bool = False
                ) -> torch.Tensor:
    """PAIR's Guided IG of one (3, H, W) image from ``baseline``, (3, H, W) float64. ``position``: the row runs
    behind that many copies of itself in each pass (the place its path has in our batch). ``chw``: PAIR gets the
    image as (3, H, W), our layout, rather than HWC: its L1 sums then add in our order."""
    dtype = next(model.parameters()).dtype

    def call(x_batch, call_model_args=None, expected_keys=None):
        rows = torch.tensor(np.asarray(x_batch), dtype=torch.float64)
        rows = (rows if chw else rows.permute(0, 3, 1, 2)).to(dtype)
        rows = rows.repeat(position + 1, 1, 1, 1).requires_grad_(True)
        logits = model(rows)
        target = torch.full((rows.shape[0],), y)
        f = logits[:, y] if objective == "score" else -F.cross_entropy(logits, target, reduction="none")
        (grad,) = torch.autograd.grad(f.sum(), rows)
        grad = grad[-1:] if chw else grad[-1:].permute(0, 2, 3, 1)
        return {pair.INPUT_OUTPUT_GRADIENTS: grad.double().numpy()}

    def layout(t: torch.Tensor) -> np.ndarray:
        return (t if chw else t.permute(1, 2, 0)).double().contiguous().numpy()

    mask = pair.GuidedIG().GetMask(layout(x), call, None, x_baseline=layout(baseline), x_steps=steps,
                                   fraction=fraction, max_dist=max_dist)
    mask = torch.from_numpy(mask)
    return mask if chw else mask.permute(2, 0, 1)


def relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a − ref| / max |ref|."""
    return float((a.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("params", [{}, {"fraction": 0.1, "max_dist": 0.1}, {"fraction": 1.0, "max_dist": 1.0},
                                    {"max_dist": 0.0}])
@pytest.mark.parametrize("make", [smooth_net, relu_net])
def test_equals_pair_on_a_small_net_for_the_score_and_the_loss(make, params):
    """Float64: the same paths, so the same sums, to the last bits (1e-16 relative measured)."""
    model = make().double()
    X, _ = batch(n=2, size=16)
    X = X.double()
    base = 0.3 * torch.randn(X.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = [1, 4]
    steps = 9
    r = attribute(model, X, y, "guided_ig", ("score", "loss"), steps=steps, baseline=base, max_batch=3, **params)
    assert r.params == {"steps": steps, "fraction": FRACTION, "max_dist": MAX_DIST, "baseline": "tensor", **params}
    for obj in ("score", "loss"):
        for i in range(2):
            ref = pair_guided(model, X[i], base[i], y[i], obj, steps=steps, **params)
            assert relative(r.attributions[obj][i], ref) < 1e-10, (obj, i)


def test_ties_at_the_threshold_are_all_selected_as_pairs():
    """A linear model whose weights take three values: |g| ties everywhere, the fraction quantile falls inside a
    tie, and PAIR moves the whole tie; so must we. Features equal to the baseline never move (PAIR's NaN alpha).

    With so many ties a last bit decides which features are at the window's top: PAIR gets the image in our
    layout, so that its L1 sums add in our order (given HWC, its loss map here was 1e-3 from ours, both right)."""
    torch.manual_seed(0)
    model = Linear((3, 6, 5), n_classes=3).double().eval()
    with torch.no_grad():
        model.fc.weight.copy_(torch.randint(-1, 2, model.fc.weight.shape).double() * 0.5)
    X = torch.randn(1, 3, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    base = torch.zeros_like(X)
    X[0, 0, 0, :2] = 0.0  # on the baseline
    r = attribute(model, X, [2], "guided_ig", ("score", "loss"), steps=7, fraction=0.3, baseline=base)
    for j, obj in enumerate(("score", "loss")):
        ref = pair_guided(model, X[0], base[0], 2, obj, steps=7, fraction=0.3, position=j, chw=True)
        assert relative(r.attributions[obj][0], ref) < 1e-12, obj
    assert float(r.attributions["score"][0, 0, 0, :2].abs().max()) == 0.0


def test_a_batch_is_each_image_alone():
    model = smooth_net().double()
    X, y = batch(n=3, size=16)
    X = X.double()
    together = attribute(model, X, y, "guided_ig", ("score", "loss"), steps=6, baseline="dataset_mean", max_batch=4)
    for i in range(3):
        alone = attribute(model, X[i:i + 1], y[i:i + 1], "guided_ig", ("score", "loss"), steps=6,
                          baseline="dataset_mean")
        for obj in ("score", "loss"):
            torch.testing.assert_close(together.attributions[obj][i:i + 1], alone.attributions[obj], rtol=1e-12,
                                       atol=1e-14)
            torch.testing.assert_close(together.convergence[obj][i:i + 1], alone.convergence[obj])


def test_completeness_the_path_ends_at_the_image():
    """Σ attributions → f(x) − f(x′): the gap reported is that of the sums, and shrinks with the steps; the loss map
    explains −L = log p_y."""
    model = smooth_net().double()
    X, y = batch(n=2, size=16)
    X = X.double()
    gaps = []
    for steps in (4, 32, 256):
        r = attribute(model, X, y, "guided_ig", ("score", "loss"), steps=steps, baseline="dataset_mean")
        logits = model(X).detach()
        ref_logits = model(torch.zeros_like(X)).detach()
        t = r.targets[:, None]
        f = {"score": (logits.gather(1, t), ref_logits.gather(1, t)),
             "loss": (torch.log_softmax(logits, 1).gather(1, t), torch.log_softmax(ref_logits, 1).gather(1, t))}
        for obj, (f_x, f_ref) in f.items():
            want = completeness_gap(r.attributions[obj].sum(dim=(1, 2, 3)), f_x[:, 0], f_ref[:, 0])
            torch.testing.assert_close(r.convergence[obj], want)
        gaps.append(max(float(c.abs().max()) for c in r.convergence.values()))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.02, gaps


def test_the_declared_cost_is_the_rows_run_and_progress_counts_them():
    """Per image and step, one row with gradients per objective (a forward and one VJP, declared as gradient rows);
    2 forward rows more (the image and its baseline)."""
    counting = RowCounter(smooth_net()).eval()
    rows = counting.rows

    X, y = batch(n=3, size=16)
    calls = []
    attribute(counting, X, y, "guided_ig", ("score", "loss"), steps=5, max_batch=4,
              baseline="dataset_mean", progress=lambda d, t: calls.append((d, t)))
    cost = SPEC.cost({"steps": 5})
    assert cost == Passes(gradient=2 * 5, forward=2)
    assert rows == {"grad": 3 * cost.gradient, "forward": 3 * cost.forward}
    assert calls == [(6, 30), (12, 30), (18, 30), (24, 30), (30, 30)]
    assert SPEC.cost() == Passes(gradient=2 * STEPS, forward=2)
    assert SPEC.trial_params()["steps"] == 1 and SPEC.default_view is False and SPEC.loss_objective == "-L"
    assert SPEC.family == "path" and SPEC.gap_note


@pytest.mark.parametrize("params, match", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"fraction": 0.0}, "fraction must be a number in"),
    ({"fraction": 1.5}, "fraction must be a number in"),
    ({"fraction": -0.5}, "fraction must be a finite number >= 0"),
    ({"max_dist": 1.5}, "max_dist must be a number in"),
    ({"max_dist": float("nan")}, "max_dist must be a finite number"),
    ({"baseline": "grey"}, "baseline must be one of"),
    ({"sigma": 3.0}, "unknown sigma"),
])
def test_bad_parameters_are_refused_by_name(params, match):
    X, y = batch(n=1, size=16)
    with pytest.raises(InvalidInputError, match=match):
        attribute(smooth_net(), X, y, "guided_ig", **{"baseline": "dataset_mean", **params})


@pytest.mark.slow
def test_equals_pair_on_the_embedded_model(lite0):
    """The embedded model, float32, from black: PAIR's row runs where ours does in a batch of 2 (see the module's
    note); 4e-8 relative measured at 6 steps. Each objective alone (a batch of 1) needs no such help."""
    from saliency_core.inputs.samples import sample_by_name

    coffee = sample_by_name("coffee")
    x = lite0.preprocess([coffee.image]).x
    prep = lite0.preprocessing
    mean, std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (prep.mean, prep.std))
    black = ((0 - mean) / std).expand(3, *x.shape[2:])
    steps = 4
    both = attribute(lite0, x, [coffee.label], "guided_ig", ("score", "loss"), steps=steps)
    worst = {}
    for j, obj in enumerate(("score", "loss")):
        ref = pair_guided(lite0.model, x[0], black, coffee.label, obj, steps=steps, position=j)
        worst[obj] = relative(both.attributions[obj][0], ref)
        alone = attribute(lite0, x, [coffee.label], "guided_ig", (obj,), steps=steps)
        ref_alone = pair_guided(lite0.model, x[0], black, coffee.label, obj, steps=steps)
        worst[obj + " alone"] = relative(alone.attributions[obj][0], ref_alone)
    assert max(worst.values()) < 1e-5, worst
