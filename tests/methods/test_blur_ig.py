"""Blur IG against PAIR's ``saliency.core.BlurIG`` (saliency==0.2.1), its cost, its parameters, its completeness.

PAIR works on one HWC image and one objective at a time: ``call_model_function`` below runs our PyTorch model
and returns the input gradient of s_y or of log p_y = −L (the sign our loss map explains). Like with like:

- a bare module (a small CNN in float64) has no normalisation, so both blur its input as given, padded with 0;
- the embedded model blurs in pixel space in PAIR (its zero padding is black) and in the normalised space
  padded with black here: PAIR gets the pixel image x · std + mean and the call normalises it back before the
  model. Attributions are invariant to that change of variables ((dx/dσ) ⊙ ∇f is the same in both spaces).

max_sigma and grad_step are in pixels at 224 px and scale with the side: PAIR is given the pixels used.
PAIR with ``sqrt=True`` and ``batch_size`` > 1 weights a whole batch by its last point's σ difference, so the
square-root spacing is compared at ``batch_size=1``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_core import attribute
from saliency_core.core.baselines import gaussian_blur
from saliency_core.errors import InvalidInputError
from saliency_core.methods.blur_ig import GRAD_STEP, MAX_SIGMA, STEPS
from saliency_core.methods.declaration import Passes
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.methods.small_nets import RowCounter, batch, relu_net, smooth_net

pair = pytest.importorskip("saliency.core")

SPEC = ATTRIBUTION_METHODS["blur_ig"]


def pair_blur_ig(model, x: torch.Tensor, y: int, objective: str, *, steps: int, max_sigma: float, grad_step: float,
                 sqrt: bool = False, batch_size: int = 1, mean=None, std=None) -> torch.Tensor:
    """PAIR's Blur IG of one (3, H, W) image, (3, H, W) float64. With ``mean``/``std``, PAIR sees the pixel image
    and the model its normalisation, as a LoadedModel's would."""
    dtype = next(model.parameters()).dtype
    m = None if mean is None else torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = None if std is None else torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)

    def call(x_batch, call_model_args=None, expected_keys=None):
        pixels = torch.tensor(np.asarray(x_batch), dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_(True)
        inputs = pixels if m is None else (pixels - m) / s
        logits = model(inputs.to(dtype))
        f = logits[:, y] if objective == "score" else torch.log_softmax(logits, dim=1)[:, y]
        (grad,) = torch.autograd.grad(f.sum(), pixels)
        return {pair.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

    image = x.double() if m is None else x.double() * s[0] + m[0]
    mask = pair.BlurIG().GetMask(image.permute(1, 2, 0).numpy(), call, None, max_sigma=max_sigma,
                                               steps=steps, grad_step=grad_step, sqrt=sqrt, batch_size=batch_size)
    return torch.from_numpy(mask).permute(2, 0, 1)


def relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a − ref| / max |ref|."""
    return float((a.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("sigma", [0.004, 0.3, 1.0, 7.3, 50.0, 50.01, 300.0])
def test_the_zero_padded_blur_is_scipys(sigma):
    """gaussian_blur(padding="zeros") is PAIR's scipy blur, kernel radius beyond the image included."""
    from scipy import ndimage

    X = torch.randn(2, 3, 40, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got = gaussian_blur(X, sigma, padding="zeros")
    for i in range(2):
        ref = ndimage.gaussian_filter(X[i].permute(1, 2, 0).numpy(), sigma=[sigma, sigma, 0], mode="constant")
        np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), ref, rtol=0, atol=1e-14)
    with pytest.raises(InvalidInputError, match="padding"):
        gaussian_blur(X, 1.0, padding="constant")


@pytest.mark.parametrize("spacing", ["linear", "sqrt"])
@pytest.mark.parametrize("make", [smooth_net, relu_net])
def test_equals_pair_on_a_small_net_for_the_score_and_the_loss(make, spacing):
    model = make().double()
    X, _ = batch(n=2, size=16)
    y = [1, 4]
    steps = 12
    r = attribute(model, X.double(), y, "blur_ig", ("score", "loss"), steps=steps, spacing=spacing, max_batch=5)
    scale = 16 / 224
    assert r.params == {"steps": steps, "max_sigma": MAX_SIGMA, "grad_step": GRAD_STEP, "spacing": spacing,
                        "max_sigma_px": MAX_SIGMA * scale}
    for obj in ("score", "loss"):
        for i in range(2):
            ref = pair_blur_ig(model, X[i], y[i], obj, steps=steps, max_sigma=MAX_SIGMA * scale,
                               grad_step=GRAD_STEP * scale, sqrt=spacing == "sqrt",
                               batch_size=1 if spacing == "sqrt" else 5)
            assert relative(r.attributions[obj][i], ref) < 1e-5, (obj, i)
            torch.testing.assert_close(r.attributions[obj][i], ref, rtol=1e-5, atol=1e-9 * float(ref.abs().max()))


def test_at_224_px_the_sigmas_are_pairs_own():
    """No scaling at 224 px: PAIR's max_sigma and grad_step as given; a linear net keeps it fast."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AvgPool2d(16), torch.nn.Flatten(), torch.nn.Linear(3 * 14 * 14, 5),
                                torch.nn.Tanh()).double().eval()
    X = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r = attribute(model, X, [3], "blur_ig", ("score", "loss"), steps=6, max_sigma=20.0, grad_step=0.05)
    assert r.params["max_sigma_px"] == 20.0
    for obj in ("score", "loss"):
        ref = pair_blur_ig(model, X[0], 3, obj, steps=6, max_sigma=20.0, grad_step=0.05, batch_size=4)
        assert relative(r.attributions[obj][0], ref) < 1e-10


def test_the_loss_map_explains_minus_l_and_sums_to_its_change():
    """Sign matters: the loss map is of −L = log p_y (PAIR's of log p_y), and with many steps Σ attributions is
    within 2 % of f(x) − f(x blurred) for both objectives."""
    model = smooth_net().double()
    X, y = batch(n=2, size=16)
    r = attribute(model, X.double(), y, "blur_ig", ("score", "loss"), steps=128)
    for obj in ("score", "loss"):
        assert float(r.convergence[obj].abs().max()) < 0.02, obj
    ref = pair_blur_ig(model, X[0].double(), int(r.targets[0]), "loss", steps=128, max_sigma=MAX_SIGMA * 16 / 224,
                       grad_step=GRAD_STEP * 16 / 224, batch_size=32)
    assert relative(r.attributions["loss"][0], ref) < 1e-5


def test_more_steps_shrink_the_completeness_gap():
    """A left Riemann sum: past a few steps the gap halves when the steps double (measured 1.5, 1.2, 0.064,
    0.019, 0.0096 here)."""
    model = smooth_net()
    X, y = batch(n=2, size=16)
    gaps = []
    for steps in (4, 8, 16, 64, 128):
        r = attribute(model, X, y, "blur_ig", steps=steps)
        gaps.append(max(float(c.abs().max()) for c in r.convergence.values()))
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 1 and gaps[-1] < 0.015, gaps
    assert 0.4 < gaps[-1] / gaps[-2] < 0.6, gaps


def test_the_declared_cost_is_the_rows_run_and_progress_counts_them():
    """steps gradient rows per image, in passes of at most max_batch across images, and 2 forward rows (the image
    and its fully blurred copy)."""
    counting = RowCounter(smooth_net()).eval()
    rows = counting.rows

    X, y = batch(n=3, size=16)
    calls = []
    attribute(counting, X, y, "blur_ig", ("score", "loss"), steps=7, max_batch=4,
              progress=lambda d, t: calls.append((d, t)))
    cost = SPEC.cost({"steps": 7})
    assert cost == Passes(gradient=7, forward=2)
    assert rows == {"grad": 3 * cost.gradient, "forward": 3 * cost.forward}
    assert calls == [(4, 21), (8, 21), (12, 21), (16, 21), (20, 21), (21, 21)]
    assert SPEC.cost() == Passes(gradient=STEPS, forward=2)
    assert SPEC.trial_params()["steps"] == 1 and SPEC.default_view is False and SPEC.loss_objective == "-L"


@pytest.mark.parametrize("params, match", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"max_sigma": 0.0}, "max_sigma must be a number > 0"),
    ({"max_sigma": -3.0}, "max_sigma must be a finite number >= 0"),
    ({"max_sigma": float("nan")}, "max_sigma must be a finite number"),
    ({"grad_step": 0.0}, "grad_step must be a number > 0"),
    ({"grad_step": "small"}, "grad_step must be a finite number"),
    ({"spacing": "log"}, "spacing must be one of 'linear', 'sqrt'"),
    ({"sigma": 3.0}, "unknown sigma"),
])
def test_bad_parameters_are_refused_by_name(params, match):
    X, y = batch(n=1, size=16)
    with pytest.raises(InvalidInputError, match=match):
        attribute(smooth_net(), X, y, "blur_ig", **params)


@pytest.mark.slow
def test_equals_pair_on_the_embedded_model_blurring_in_pixel_space(lite0):
    """The embedded model, float32: PAIR blurs the pixel image (zeros: black), ours the normalised one padded with
    black. PAIR gets float64 pixels, so both round each path point once to float32."""
    from saliency_core.inputs.samples import sample_by_name

    coffee = sample_by_name("coffee")
    x = lite0.preprocess([coffee.image]).x
    steps = 6
    r = attribute(lite0, x, [coffee.label], "blur_ig", ("score", "loss"), steps=steps)
    prep = lite0.preprocessing
    worst = {}
    for obj in ("score", "loss"):
        ref = pair_blur_ig(lite0.model, x[0], coffee.label, obj, steps=steps, max_sigma=MAX_SIGMA,
                           grad_step=GRAD_STEP, batch_size=4, mean=prep.mean, std=prep.std)
        worst[obj] = relative(r.attributions[obj][0], ref)
        torch.testing.assert_close(r.attributions[obj][0].double(), ref, rtol=1e-5,
                                   atol=1e-5 * float(ref.abs().max()))
    assert max(worst.values()) < 1e-5, worst
