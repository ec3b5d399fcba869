"""The page-level analysis: both maps, probabilities and the loss decomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_core.core.gradients import compute_saliency
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.analysis import analyse, signed_channel_max
from saliency_core.inputs.samples import sample_by_name


def test_analysis_matches_the_engine_and_resolves_targets(lite0):
    coffee, chelsea = sample_by_name("coffee"), sample_by_name("chelsea")
    out = analyse(lite0, [coffee.image, chelsea.image, coffee.image], [None, None, 500],
                  labels=[coffee.label, None, coffee.label])
    assert [a.target for a in out[:1]] == [967]  # auto with a label: the label
    assert out[1].target == out[1].prediction and out[1].target_auto  # auto without: top-1
    assert out[2].target == 500 and not out[2].target_auto
    batch = lite0.preprocess([chelsea.image])
    ref = compute_saliency(lite0, batch.x, torch.tensor([out[1].target]))
    expected = ref.maps["loss"][0].numpy()
    # Batch of 3 vs batch of 1: CPU kernels may sum in another order, so a
    # few near-zero pixels differ in the last bits; compare against the scale.
    np.testing.assert_allclose(out[1].maps["loss"], expected, rtol=1e-4, atol=1e-5 * expected.max())
    np.testing.assert_array_equal(out[1].display, batch.display[0])
    a = out[0]
    assert abs(a.probs.sum() - 1) < 1e-5 and a.top_k(5)[0][1] == "espresso"
    np.testing.assert_allclose(a.terms["target"] + a.terms["others"], a.gradients["loss"], rtol=1e-5, atol=1e-8)


def test_signed_channel_max_keeps_the_sign_of_the_largest_magnitude():
    v = np.array([[[1.0, -1.0]], [[-3.0, 0.5]], [[2.0, 0.2]]])  # (3, 1, 2)
    np.testing.assert_array_equal(signed_channel_max(v), [[-3.0, -1.0]])


def _clock_spy(monkeypatch):
    """Record, in order, every CUDA synchronisation and every clock read of analysis.analyse."""
    import time
    from types import SimpleNamespace

    from saliency_core.evaluation import analysis

    events: list[str] = []
    real_sync = torch.cuda.synchronize

    def sync(device=None):
        events.append(f"sync:{torch.device(device).type if device is not None else 'current'}")
        if torch.cuda.is_available():
            real_sync(device)

    def clock():
        events.append("clock")
        return time.perf_counter()

    monkeypatch.setattr(torch.cuda, "synchronize", sync)
    monkeypatch.setattr(analysis, "time", SimpleNamespace(perf_counter=clock))
    return events


def test_timing_waits_for_the_cuda_device_before_each_clock_read(lite0, monkeypatch):
    # CUDA kernels run asynchronously: without a synchronisation the clock
    # would stop when the work is queued, not when it is done. A LoadedModel
    # that says it lives on CUDA (its module stays on the CPU) shows the calls.
    import dataclasses

    events = _clock_spy(monkeypatch)
    on_cuda = dataclasses.replace(lite0, device=torch.device("cuda"))
    out = analyse(on_cuda, [sample_by_name("coffee").image], [None])
    assert events == ["sync:cuda", "clock", "sync:cuda", "clock"]
    assert out[0].seconds > 0


def test_timing_on_cpu_does_not_touch_cuda(lite0, monkeypatch):
    events = _clock_spy(monkeypatch)
    analyse(lite0, [sample_by_name("coffee").image], [None])
    assert events == ["clock", "clock"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_timing_synchronises_the_model_device(monkeypatch):
    from saliency_core.models.loading import load_model

    events = _clock_spy(monkeypatch)
    out = analyse(load_model(None, device="cuda"), [sample_by_name("coffee").image], [None])
    assert events == ["sync:cuda", "clock", "sync:cuda", "clock"]
    assert out[0].seconds > 0


def test_auto_target_and_the_engines_top1_are_separate_names(lite0, monkeypatch):
    # AUTO_TARGET ("true label, else top-1") is the page's choice; the engine
    # only knows TOP1_TARGET ("the model's top-1"). analyse translates one
    # into the other instead of relying on both being -1.
    from saliency_core.core.model_access import TOP1_TARGET
    from saliency_core.evaluation import analysis

    assert TOP1_TARGET == -1
    monkeypatch.setattr(analysis, "AUTO_TARGET", -7)
    seen: list[list[int]] = []
    real = analysis.gradients.compute_saliency

    def spy(model, X, y, *args, **kwargs):
        seen.append(torch.as_tensor(y).tolist())
        return real(model, X, y, *args, **kwargs)

    monkeypatch.setattr(analysis.gradients, "compute_saliency", spy)
    coffee = sample_by_name("coffee")
    out = analyse(lite0, [coffee.image] * 3, [None, -7, 5], labels=[None, coffee.label, None])
    assert seen == [[TOP1_TARGET, coffee.label, 5]]
    assert out[0].target == out[0].prediction and out[0].target_auto
    assert out[1].target == coffee.label and out[1].target_auto and not out[2].target_auto


def test_crops_made_beforehand_give_the_same_analysis_as_the_images(lite0):
    images = [sample_by_name("coffee").image, sample_by_name("chelsea").image]
    crops = np.stack([lite0.crop_array(im) for im in images])
    from_images = analyse(lite0, images, [None, 281])
    from_crops = analyse(lite0, crops, [None, 281])
    for a, b in zip(from_images, from_crops, strict=True):
        np.testing.assert_array_equal(a.display, b.display)
        for m in ("score", "loss"):
            np.testing.assert_array_equal(a.maps[m], b.maps[m])
        assert a.target == b.target
    with pytest.raises(InvalidInputError, match="crops must be"):
        analyse(lite0, crops[:, :100], [None, None])


def test_analysis_by_another_method_is_saliency_core_attribute(lite0):
    from saliency_core import attribute

    coffee = sample_by_name("coffee")
    params = {"steps": 3, "rule": "gauss_legendre"}
    (a,) = analyse(lite0, [coffee.image], [None], [coffee.label], method="integrated_gradients", params=params)
    ref = attribute(lite0, lite0.preprocess([coffee.image]).x, [coffee.label], "integrated_gradients",
                    ("score", "loss"), **params)
    for objective in ("score", "loss"):
        np.testing.assert_allclose(a.maps[objective], ref.maps[objective][0].numpy(), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(a.gradients[objective], ref.attributions[objective][0].numpy(), rtol=1e-5,
                                   atol=1e-8)
        assert a.convergence[objective] == pytest.approx(float(ref.convergence[objective][0]), rel=1e-5)
    assert a.method == "integrated_gradients" and a.params == ref.params and a.terms == {}
    (cam,) = analyse(lite0, [coffee.image], [None], [coffee.label], method="grad_cam")
    assert cam.gradients["score"].shape == (1, 224, 224) and cam.channel_values("score") is None
    assert cam.params == {"layer": lite0.spec.cam_layer} and cam.convergence is None


@pytest.mark.parametrize(("method", "params"), [("no_such_method", {}), ("gradient", {"steps": 3}),
                                                ("smoothgrad", {"samples": -1})])
def test_analysis_refuses_an_unknown_method_or_parameter(lite0, method, params):
    with pytest.raises(InvalidInputError):
        analyse(lite0, [sample_by_name("coffee").image], [None], method=method, params=params)
