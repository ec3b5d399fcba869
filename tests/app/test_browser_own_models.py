"""In Chromium: the team's own model (``SALIENCY_MODELS_DIR``) and a torchvision model whose weights are
downloaded on demand, each chosen in the sidebar's model picker, each drawing its map.

The weights come from a local HTTP server (``SALIENCY_WEIGHTS_URL``) that serves a checkpoint this test
wrote: random weights, not torchvision's file, so the dashboard runs here with the checksum of the file
name switched off (the one thing ``CHECKSUM_OFF`` changes before starting Streamlit's own command line).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_load import HEATMAP_JS
from tests.app import test_browser
from tests.app.test_browser import (
    COLD_WAIT_MS,
    REPO,
    SIDEBAR,
    WAIT_MS,
    _free_port,
    _healthy,
    assert_healthy,
    budget,
    screenshot,
    serve,
    wait_idle,
)
from tests.test_custom_models import CLASSES, TinyNet
from tests.test_downloads import random_checkpoint, serve_weights

pytestmark = [pytest.mark.browser, pytest.mark.slow]

session_on = test_browser.session_on  # the browser itself is conftest's

LOG = REPO / "artifacts" / "browser-own-models-server.log"
WEIGHTS = "squeezenet1_1-b8a52dc0.pth"
TITLE = "Tiny colour net"
MODEL_PICKER_OPEN = f'{SIDEBAR} .st-key-model button[aria-label="Open"]'
TARGET_SHOWN = f'{SIDEBAR} .st-key-target input[role="combobox"]'  # the text the target picker shows
CHECKSUM_OFF = ("import sys; import saliency_core.downloads as d; d.sha256_prefix = lambda name: None; "
                "from streamlit.web.cli import main; sys.argv[0] = 'streamlit'; sys.exit(main())")


@pytest.fixture(scope="module")
def team_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A dashboard with a models folder (``custom:tiny``) and downloads from a local weights server;
    (base URL, the weights server, the models folder, the torch cache folder)."""
    tmp = tmp_path_factory.mktemp("team")
    models = tmp / "models"
    models.mkdir()
    torch.manual_seed(0)
    torch.jit.script(TinyNet().eval()).save(str(models / "tiny.pt"))
    (models / "tiny.json").write_text(json.dumps({"title": TITLE, "classes": CLASSES, "resize": 36, "crop": 32,
                                                  "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_weights(files={WEIGHTS: random_checkpoint()}) as weights:
        env = {**os.environ, "SALIENCY_UPLOAD_DIR": str(tmp / "uploads"), "SALIENCY_MODELS_DIR": str(models),
               "SALIENCY_ALLOW_DOWNLOAD": "1", "SALIENCY_WEIGHTS_URL": weights.url, "TORCH_HOME": str(tmp / "torch"),
               "SALIENCY_RESULTS_DIR": str(tmp / "no-results"), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-c", CHECKSUM_OFF, "run", "dashboard.py", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        with serve(request, cmd, LOG, url, lambda: _healthy(url), env):
            yield url, weights, models, tmp / "torch"


def choose_model(page, option: str) -> None:
    """Open the sidebar's model picker and click the option that contains ``option``."""
    page.locator(MODEL_PICKER_OPEN).click()
    page.get_by_role("option").filter(has_text=option).first.click()


def shown_heatmap(page) -> np.ndarray:
    z = page.evaluate(HEATMAP_JS)
    return np.asarray(z["values"], dtype=np.float64).reshape(z["shape"])


def test_own_model_and_downloaded_weights_are_chosen_in_the_picker_and_drawn(session_on, team_server,
                                                                              monkeypatch):
    url, weights, models, torch_home = team_server
    s = session_on(url)
    s.goto("/saliency")
    wait_idle(s.page, COLD_WAIT_MS)

    s.page.locator(MODEL_PICKER_OPEN).click()
    s.page.get_by_role("option").first.wait_for()
    options = s.page.get_by_role("option").all_inner_texts()
    assert any(TITLE in o for o in options), options
    assert any("SqueezeNet 1.1" in o and "download" in o for o in options), options
    s.page.keyboard.press("Escape")

    choose_model(s.page, TITLE)
    s.page.get_by_text(f"coffee · {TITLE}").first.wait_for(timeout=budget(WAIT_MS))
    wait_idle(s.page)
    assert_healthy(s, "the team's own model")
    target = s.page.locator(TARGET_SHOWN).input_value()
    assert "Auto: top-1 prediction" in target, target  # not the ImageNet list's "true label (967 · espresso)"
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(models))
    from saliency_core.analysis import AUTO_TARGET, analyse
    from saliency_core.models import load_model
    from saliency_core.samples import sample_by_name

    (ref,) = analyse(load_model("custom:tiny", device="cpu"), [sample_by_name("coffee").image], [AUTO_TARGET], [None])
    shown = shown_heatmap(s.page)
    assert shown.shape == (32, 32)
    np.testing.assert_allclose(shown, ref.maps["score"], rtol=1e-3, atol=1e-6 * float(ref.maps["score"].max()))
    screenshot(s.page, "own-model-tiny")

    assert weights.requests == []
    choose_model(s.page, "SqueezeNet 1.1")
    s.page.get_by_text("coffee · SqueezeNet 1.1").first.wait_for(timeout=budget(WAIT_MS))
    wait_idle(s.page)
    assert_healthy(s, "the downloaded model")
    target = s.page.locator(TARGET_SHOWN).input_value()
    assert "Auto: true label (967 · espresso)" in target, target
    assert weights.requests == [f"/models/{WEIGHTS}"]
    assert (Path(torch_home) / "hub" / "checkpoints" / WEIGHTS).read_bytes() == weights.files[WEIGHTS]
    assert shown_heatmap(s.page).shape == (224, 224)
    screenshot(s.page, "downloaded-squeezenet")
