"""XRAI against PAIR's ``saliency.core.XRAI`` (saliency==0.2.1): its segments, its ranking, its cost, its parameters.

The oracle is PAIR's XRAI given the same attributions and segments (``base_attribution``, ``segments``): the
Integrated Gradients maps from black and white averaged, computed here through ``attribute(...,
"integrated_gradients", rule="trapezoid")`` with each baseline as a tensor, and our Felzenszwalb masks (which
are checked separately against PAIR's ``_get_segments_felzenszwalb`` of the same pixel image). PAIR gets float64
attributions, so both rank in float64; its ``attribution_mask`` is (H, W), ours (N, 1, H, W) in the model's dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_core import attribute
from saliency_core.errors import InvalidInputError
from saliency_core.methods import xrai
from saliency_core.methods.declaration import Passes
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.methods.small_nets import RowCounter, WithPreprocessing, batch, smooth_net

pair = pytest.importorskip("saliency.core")
pair_xrai = pytest.importorskip("saliency.core.xrai")

SPEC = ATTRIBUTION_METHODS["xrai"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def no_model(*_args, **_kwargs):
    raise AssertionError("PAIR was given the attributions: it must not run the model")


def base_ig(model, X: torch.Tensor, y, objective: str, steps: int, norm=None) -> torch.Tensor:
    """(N, 3, H, W) float64: IG (trapezoid, ``steps`` points) from black and from white, averaged, through
    ``attribute`` with each baseline as a tensor. Without a normalisation, PAIR's default baselines: each image's
    min and max."""
    x = X.double()
    if norm is None:
        lo = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
        hi = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
    else:
        m, s = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in norm)
        lo, hi = ((0 - m) / s).expand_as(x), ((1 - m) / s).expand_as(x)
    maps = [attribute(model, X, y, "integrated_gradients", (objective,), rule="trapezoid", steps=steps,
                      baseline=b.to(X.dtype).contiguous()).attributions[objective].double() for b in (lo, hi)]
    return (maps[0] + maps[1]) / 2


def pixels(x: torch.Tensor, norm=None) -> np.ndarray:
    """(H, W, 3) float64: the image as PAIR segments it (unnormalised when the model has a normalisation)."""
    p = x.double()
    if norm is not None:
        m, s = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in norm)
        p = p * s + m
    return p.permute(1, 2, 0).numpy()


def pair_map(attr: torch.Tensor, image: np.ndarray, mode: str, area_threshold: float = 1.0) -> np.ndarray:
    """PAIR's XRAI attribution_mask of one image given (3, H, W) attributions and our segments of ``image``."""
    params = pair.XRAIParameters(algorithm=mode, area_threshold=area_threshold)
    masks = list(xrai.segments(image))
    return pair.XRAI().GetMask(image, no_model, base_attribution=attr.permute(1, 2, 0).numpy(), segments=masks,
                               extra_parameters=params)


def relative(a: torch.Tensor, ref: np.ndarray) -> float:
    """max |a − ref| / max |ref|."""
    ref = torch.from_numpy(np.asarray(ref, dtype=np.float64))
    return float((a.double() - ref).abs().max() / ref.abs().max())


def test_the_segments_are_pairs():
    """Mask for mask (empty ones included), PAIR's _get_segments_felzenszwalb of the same image, at a size it
    resizes (48 x 40) and at its own 224."""
    g = np.random.default_rng(0)
    for image in (g.random((48, 40, 3)), np.kron(g.random((14, 14, 3)), np.ones((16, 16, 1))) + 0.05 * g.random(
            (224, 224, 3))):
        ours = xrai.segments(image)
        ref = pair_xrai._get_segments_felzenszwalb(image)
        assert ours.shape == (len(ref), *image.shape[:2]) and ours.dtype == bool
        assert all(np.array_equal(o, r) for o, r in zip(ours, ref, strict=True))


@pytest.mark.parametrize("area_threshold", [1.0, 0.4])
def test_the_ranking_is_pairs_with_ties_and_duplicates(area_threshold):
    """The greedy ranking alone, against PAIR's _xrai and _xrai_fast: duplicated regions (equal gains: the first
    wins), an empty region, attributions constant on blocks (many equal gains)."""
    g = np.random.default_rng(3)
    masks = xrai.segments(g.random((40, 36, 3)))
    masks = np.concatenate([masks, masks[:5], np.zeros((1, 40, 36), dtype=bool)])
    for attr in (g.standard_normal((40, 36)), np.kron(g.integers(-2, 3, (8, 6)), np.ones((5, 6))).astype(float)):
        full = pair_xrai.XRAI._xrai(attr, list(masks), area_perc_th=area_threshold)[0]
        np.testing.assert_array_equal(xrai.rank_full(attr, masks, area_threshold), full)
        fast = pair_xrai.XRAI._xrai_fast(attr, list(masks))[0]
        np.testing.assert_array_equal(xrai.rank_fast(attr, masks), fast)


def test_of_equal_gains_the_first_region_wins():
    """Columns 0-4: 0, 5-9: 2, 10-14: 0, 15-19: 0.5. A = columns 0-9 and B = columns 5-14 both have gain 1; the
    one listed first wins (PAIR's strict ">", its stable sort) and the other keeps only its half, worth less."""
    attr = np.repeat(np.array([0.0, 2.0, 0.0, 0.5]), 5)[None].repeat(20, axis=0)
    cols = np.arange(20)[None].repeat(20, axis=0)
    a, b, c = (cols < 10), (cols >= 5) & (cols < 15), np.ones((20, 20), dtype=bool)
    for masks, first in (([a, b, c], a), ([b, a, c], b)):
        stack = np.stack(masks)
        for ours, theirs in ((xrai.rank_full(attr, stack), pair_xrai.XRAI._xrai(attr, masks)[0]),
                             (xrai.rank_fast(attr, stack), pair_xrai.XRAI._xrai_fast(attr, masks)[0])):
            np.testing.assert_array_equal(ours, theirs)
            assert (ours[first] == 1.0).all() and (ours[(a | b) & ~first] < 1.0).all()


@pytest.mark.parametrize("mode", xrai.MODES)
@pytest.mark.parametrize("normalised", [False, True])
def test_equals_pair_on_a_small_net_for_the_score_and_the_loss(mode, normalised):
    """A tanh net in float64, bare (baselines: each image's min and max, PAIR's default) or with a normalisation
    (black and white through it; segments of the unnormalised image)."""
    net = smooth_net().double()
    norm = (MEAN, STD) if normalised else None
    model = WithPreprocessing(net, *norm) if normalised else net
    X, _ = batch(n=2, size=48)
    X = X.double()
    y = [1, 4]
    steps = 5
    r = attribute(model, X, y, "xrai", ("score", "loss"), steps=steps, mode=mode, max_batch=4)
    assert r.attributions["score"].shape == (2, 1, 48, 48) and r.reduction == "none"
    assert r.params == {"mode": mode, "steps": steps, "area_threshold": 1.0}
    for obj in ("score", "loss"):
        attr = base_ig(model, X, y, obj, steps, norm)
        for i in range(2):
            ref = pair_map(attr[i], pixels(X[i], norm), mode)
            assert relative(r.attributions[obj][i, 0], ref) < 1e-12, (obj, i)
            gains = r.attributions[obj][i, 0]
            torch.testing.assert_close(r.maps[obj][i], gains - gains.min(), rtol=0, atol=0)
            assert float(r.maps[obj][i].min()) == 0  # the gains are signed, the maps >= 0


def test_the_area_threshold_leaves_one_region_as_pairs():
    net = smooth_net().double()
    X, _ = batch(n=1, size=48)
    r = attribute(net, X.double(), [2], "xrai", ("loss",), steps=4, area_threshold=0.3)
    attr = base_ig(net, X.double(), [2], "loss", 4)
    ref = pair_map(attr[0], pixels(X[0].double()), "full", area_threshold=0.3)
    assert relative(r.attributions["loss"][0, 0], ref) < 1e-12
    full = attribute(net, X.double(), [2], "xrai", ("loss",), steps=4).attributions["loss"][0, 0]
    assert not torch.equal(r.attributions["loss"][0, 0], full)  # the threshold changed something


def test_the_loss_map_is_of_minus_l():
    """−L = log p_y: the loss map's IG is the negated +L gradient's; a map of +L would rank the regions the
    other way round."""
    net = smooth_net().double()
    X, _ = batch(n=1, size=48)
    r = attribute(net, X.double(), [3], "xrai", ("loss",), steps=4, mode="fast")
    minus_l = base_ig(net, X.double(), [3], "loss", 4)  # attribute's IG loss is −L too
    plus_l = pair_map(-minus_l[0], pixels(X[0].double()), "fast")
    assert relative(r.attributions["loss"][0, 0], pair_map(minus_l[0], pixels(X[0].double()), "fast")) < 1e-12
    assert relative(r.attributions["loss"][0, 0], plus_l) > 0.1


def test_a_batch_equals_each_image_alone():
    net = smooth_net().double()
    X, y = batch(n=3, size=40)
    X = X.double()
    for mode in xrai.MODES:
        together = attribute(net, X, y, "xrai", ("score", "loss"), steps=3, mode=mode, max_batch=5)
        for i in range(3):
            alone = attribute(net, X[i:i + 1], [int(together.targets[i])], "xrai", ("score", "loss"), steps=3,
                              mode=mode)
            for obj in ("score", "loss"):
                torch.testing.assert_close(together.attributions[obj][i], alone.attributions[obj][0], rtol=1e-12,
                                           atol=1e-14)


def test_the_declared_cost_is_the_rows_run_and_progress_counts_them():
    """2 x steps gradient rows per image (black and white), in passes of at most max_batch across images, and one
    forward row (the image)."""
    counting = RowCounter(smooth_net()).eval()
    rows = counting.rows

    X, y = batch(n=3, size=24)
    calls = []
    attribute(counting, X, y, "xrai", ("score", "loss"), steps=3, max_batch=4, mode="fast",
              progress=lambda d, t: calls.append((d, t)))
    cost = SPEC.cost({"steps": 3})
    assert cost == Passes(gradient=6, forward=1)
    assert rows == {"grad": 3 * cost.gradient, "forward": 3 * cost.forward}
    assert calls == [(4, 18), (8, 18), (12, 18), (16, 18), (18, 18)]
    assert SPEC.cost() == Passes(gradient=2 * xrai.STEPS, forward=1)
    assert SPEC.trial_params()["steps"] == 2 and SPEC.default_view is False and SPEC.loss_objective == "-L"
    assert SPEC.family == "region" and SPEC.output == "layer"


@pytest.mark.parametrize("params, match", [
    ({"steps": 1}, "steps must be an integer >= 2"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"mode": "slow"}, "mode must be one of 'full', 'fast'"),
    ({"area_threshold": 1.5}, "area_threshold must be a number from 0 to 1"),
    ({"area_threshold": -0.1}, "area_threshold must be a finite number >= 0"),
    ({"area_threshold": float("nan")}, "area_threshold must be a finite number"),
    ({"baseline": "black"}, "unknown baseline"),
])
def test_bad_parameters_are_refused_by_name(params, match):
    X, y = batch(n=1, size=16)
    with pytest.raises(InvalidInputError, match=match):
        attribute(smooth_net(), X, y, "xrai", **params)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # the oracle's IG at 3 steps: a large gap, on purpose
@pytest.mark.parametrize("mode", xrai.MODES)
def test_equals_pair_on_the_embedded_model(lite0, mode):
    """The embedded model, float32, 3 IG steps per baseline: black and white through its normalisation, segments
    of the pixel image. PAIR ranks our float32 IG in float64; ours is rounded to float32 at the end."""
    from saliency_core.inputs.samples import sample_by_name

    coffee = sample_by_name("coffee")
    x = lite0.preprocess([coffee.image]).x
    prep = lite0.preprocessing
    norm = (tuple(prep.mean), tuple(prep.std))
    r = attribute(lite0, x, [coffee.label], "xrai", ("score", "loss"), steps=3, mode=mode)
    worst = {}
    for obj in ("score", "loss"):
        attr = base_ig(lite0, x, [coffee.label], obj, 3, norm)
        ref = pair_map(attr[0], pixels(x[0], norm), mode)
        worst[obj] = relative(r.attributions[obj][0, 0], ref)
    assert max(worst.values()) < 1e-6, worst
