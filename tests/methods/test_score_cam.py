"""Score-CAM against pytorch-grad-cam's ScoreCAM, score and −L; its channel cap, batching, progress, the batch job.

Where the definitions differ, the oracle is made to compute ours:

- pytorch-grad-cam upsamples the masks with ``UpsamplingBilinear2d``
  (``align_corners=True``); the paper's code (and ours) with
  ``align_corners=False``. The oracle's class is swapped for the latter.
- it normalises a mask by ``max − min + 1e-8``, ours by ``max − min`` (0 for a
  flat map, as it gives): a difference of 1e-8 / (max − min), below float32's.
- with a cap, ours uses the ``channels`` most varying feature maps only; the
  oracle gets exactly those through its ``reshape_transform``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pytorch_grad_cam import ScoreCAM

from saliency_core import attribute
from saliency_core.evaluation import stats
from saliency_core.inputs.preprocessing import normalize
from saliency_core.jobs.imagefolder import write_sample_folder
from saliency_core.jobs.results import load_results
from saliency_core.methods.declaration import Passes
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.app.apptest import chelsea, coffee
from tests.methods.cam_oracle import check_against_oracle, small_batch, small_cnn
from tests.test_batch import run_job
from tests.test_batch_methods import _crops


@pytest.fixture
def oracle_upsampling(monkeypatch):
    """pytorch-grad-cam's ScoreCAM with its masks upsampled as the paper's code does (align_corners=False)."""
    monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d",
                        lambda size: torch.nn.Upsample(size=size, mode="bilinear", align_corners=False))


def most_varying(module: torch.nn.Module, layer: str, X: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k): each image's k channels of ``layer`` with the largest spatial variance, largest first (numpy)."""
    acts = []
    handle = module.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        module(X)
    handle.remove()
    spread = acts[0].flatten(2).numpy().var(axis=2)
    return torch.from_numpy(np.argsort(-spread, axis=1, kind="stable")[:, :k].copy())


def test_every_channel_equals_pytorch_grad_cam_on_a_small_cnn(monkeypatch, oracle_upsampling):
    net = small_cnn()
    X, y = small_batch(n=3)
    calls = []
    r = check_against_oracle("score_cam", ScoreCAM, net, net, "2", X, y, monkeypatch, max_batch=5,
                             progress=lambda done, total: calls.append((done, total)))
    assert r.params == {"layer": "2", "channels": 8}  # 8 channels, all of them (the default cap is 64)
    # The images' own passes (one chunk of 3), then 24 masked copies in chunks of 5, across images.
    assert calls == [(3, 27)] + [(3 + min(s, 24), 27) for s in range(5, 30, 5)]


def test_every_channel_equals_pytorch_grad_cam_on_the_embedded_model(lite0, monkeypatch, oracle_upsampling):
    """An early block (24 channels at 32 × 32 for a 128 px image) keeps the paper's every-channel run short."""
    x = lite0.preprocess(coffee()).x[:, :, 48:176, 48:176]
    r = check_against_oracle("score_cam", ScoreCAM, lite0, lite0.model, "_blocks.2", x, [967], monkeypatch,
                             channels=2048)
    assert r.params["channels"] == 24


@pytest.mark.parametrize("objective", ["score", "loss"])
def test_a_cap_uses_the_most_varying_channels_as_pytorch_grad_cam_given_only_those(
        lite0, monkeypatch, oracle_upsampling, objective):
    from tests.methods.cam_oracle import assert_same_map, oracle_coarse, upsampled

    x = torch.cat([lite0.preprocess(image).x for image in (coffee(), chelsea())])[:, :, 48:176, 48:176]
    r = attribute(lite0, x, [967, -1], "score_cam", objective, channels=6)
    assert r.params == {"layer": "_blocks.15", "channels": 6}
    chosen = most_varying(lite0.model, "_blocks.15", x, 6)
    only_those = lambda a: torch.gather(a, 1, chosen[:, :, None, None].expand(-1, -1, *a.shape[2:]))  # noqa: E731
    ref = oracle_coarse(ScoreCAM, lite0.model, "_blocks.15", x, r.targets, objective, monkeypatch,
                        reshape_transform=only_those)
    assert_same_map(r.attributions[objective], upsampled(ref, (128, 128)))


def test_the_cost_is_declared_and_the_cap_is_the_dashboards_default():
    spec = ATTRIBUTION_METHODS["score_cam"]
    assert spec.cost() == Passes(gradient=0, forward=65)
    assert spec.cost({"channels": 320}) == Passes(gradient=0, forward=321)  # the paper on EfficientNet-Lite0
    assert not spec.default_view and spec.family == "CAM" and spec.loss_objective == "-L"
    assert spec.trial_params() == {"layer": None, "channels": 1}


def test_the_batch_job_computes_both_new_cams_with_their_options(tmp_path, lite0, capsys):
    images = write_sample_folder(tmp_path / "images", 2)
    out = tmp_path / "out"
    proc = run_job("--images", str(images), "--out", str(out), "--maps", "grad_cam_plus_plus:score,score_cam:loss",
                   "--grad-cam-plus-plus-layer", "_blocks.14", "--score-cam-channels", "4", "--workers", "0",
                   "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = load_results(out).results
    assert len(rows) == 2
    x = normalize(_crops(images, list(rows["key"]), lite0.preprocessing), lite0.preprocessing, lite0.device)
    targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
    maps = {"grad_cam_plus_plus_score": attribute(lite0, x, targets, "grad_cam_plus_plus", ("score",),
                                                  layer="_blocks.14").maps["score"],
            "score_cam_loss": attribute(lite0, x, targets, "score_cam", ("loss",), channels=4).maps["loss"]}
    for name, m in maps.items():
        for i in range(2):
            expected = stats.summarize(m[i].numpy())
            for k in ("max", "mean", "std"):
                np.testing.assert_allclose(rows.iloc[i][f"{name}_{k}"], expected[k], rtol=1e-4,
                                           atol=1e-5 * expected["max"], err_msg=f"{name}_{k}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["method_params"] == {"grad_cam_plus_plus": {"layer": "_blocks.14"},
                                                   "score_cam": {"layer": None, "channels": 4}}
    assert "Wang et al. 2020" in manifest["definitions"]["score_cam_loss"]
