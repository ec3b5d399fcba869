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
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from benchmarks.bench_load import HEATMAP_JS, PLOT_JS, REDRAWN_JS, SETTLED_JS
from tests.app.chromium import (
    COLD_WAIT_MS,
    REPO,
    SIDEBAR,
    WAIT_MS,
    _free_port,
    _healthy,
    assert_healthy,
    screenshot,
    serve,
    wait_idle,
)
from tests.test_custom_models import CLASSES, TinyNet
from tests.test_downloads import random_checkpoint, serve_weights

pytestmark = [pytest.mark.browser, pytest.mark.slow]


LOG = REPO / "artifacts" / "browser-own-models-server.log"
WEIGHTS = "squeezenet1_1-b8a52dc0.pth"
TITLE = "Tiny colour net"
TARGET_SHOWN = f'{SIDEBAR} .st-key-target input[role="combobox"]'  # the text the target picker shows
CHECKSUM_OFF = ("import sys; import saliency_core.models.weights_download as d; d.sha256_prefix = lambda name: None; "
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


def open_picker(page, key: str) -> list[str]:
    """Open the sidebar picker ``key``; the texts of its entries. A page that is still drawing can swallow the
    click that opens the list: then it is opened again."""
    for attempt in range(3):
        wait_idle(page)
        page.locator(f'{SIDEBAR} .st-key-{key} button[aria-label="Open"]').click()
        try:
            page.get_by_role("option").first.wait_for(timeout=15_000)
            return page.get_by_role("option").all_inner_texts()
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    raise AssertionError("unreachable")


def choose(page, key: str, option: str) -> None:
    """Pick the entry of the sidebar picker ``key`` that contains ``option``."""
    open_picker(page, key)
    page.get_by_role("option").filter(has_text=option).first.click()


def choose_model(page, option: str) -> None:
    choose(page, "model", option)


def shown_heatmap(page) -> np.ndarray:
    """The heatmap on screen, once Plotly has drawn it and no script runs."""
    page.wait_for_function(SETTLED_JS, timeout=WAIT_MS, polling=200)
    z = page.evaluate(HEATMAP_JS)
    return np.asarray(z["values"], dtype=np.float64).reshape(z["shape"])


def test_own_model_and_downloaded_weights_are_chosen_in_the_picker_and_drawn(session_on, team_server,
                                                                              monkeypatch):
    url, weights, models, torch_home = team_server
    s = session_on(url)
    s.goto("/saliency")
    wait_idle(s.page, COLD_WAIT_MS)

    options = open_picker(s.page, "model")
    assert any(TITLE in o for o in options), options
    assert any("SqueezeNet 1.1" in o and "download" in o for o in options), options
    s.page.keyboard.press("Escape")

    choose_model(s.page, TITLE)
    s.page.get_by_text(f"coffee · {TITLE}").first.wait_for(timeout=WAIT_MS)
    wait_idle(s.page)
    assert_healthy(s, "the team's own model")
    target = s.page.locator(TARGET_SHOWN).input_value()
    assert "Auto: top-1 prediction" in target, target  # not the ImageNet list's "true label (967 · espresso)"
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(models))
    from saliency_core.evaluation.analysis import AUTO_TARGET, analyse
    from saliency_core.inputs.samples import sample_by_name
    from saliency_core.models.loading import load_model

    (ref,) = analyse(load_model("custom:tiny", device="cpu"), [sample_by_name("coffee").image], [AUTO_TARGET], [None])
    shown = shown_heatmap(s.page)
    assert shown.shape == (32, 32)
    np.testing.assert_allclose(shown, ref.maps["score"], rtol=1e-3, atol=1e-6 * float(ref.maps["score"].max()))
    screenshot(s.page, "own-model-tiny")

    assert weights.requests == []
    s.page.evaluate(f"() => {{ window.__before = {PLOT_JS}.data[0].z; }}")
    choose_model(s.page, "SqueezeNet 1.1")
    s.page.get_by_text("coffee · SqueezeNet 1.1").first.wait_for(timeout=WAIT_MS)
    wait_idle(s.page)
    assert_healthy(s, "the downloaded model")
    target = s.page.locator(TARGET_SHOWN).input_value()
    assert "Auto: true label (967 · espresso)" in target, target
    assert weights.requests == [f"/models/{WEIGHTS}"]
    assert (Path(torch_home) / "hub" / "checkpoints" / WEIGHTS).read_bytes() == weights.files[WEIGHTS]
    s.page.wait_for_function(REDRAWN_JS, timeout=WAIT_MS, polling=200)
    assert shown_heatmap(s.page).shape == (224, 224)
    screenshot(s.page, "downloaded-squeezenet")


def test_changing_the_method_then_the_image_keeps_the_objective(session_on, team_server):
    """The Objective picker's labels depend on the method: after another method is chosen the browser sends
    back the old label on the next click, which crashed the page (KeyError on the map)."""
    url = team_server[0]
    s = session_on(url)
    s.goto("/saliency?objective=loss")
    wait_idle(s.page, COLD_WAIT_MS)
    choose(s.page, "method", "Gradient × input")
    wait_idle(s.page)
    checked = s.page.locator(f'{SIDEBAR} .st-key-objective input[type="radio"]:checked')
    assert checked.count() == 1
    choose(s.page, "sample", "Chelsea")
    s.page.get_by_text("crop of Chelsea").first.wait_for(timeout=WAIT_MS)
    wait_idle(s.page)
    assert_healthy(s, "a new image after a new method")
    assert "objective=loss" in s.page.url
    assert "Gradient × input · loss" in s.page.locator('[data-testid="stMain"]').inner_text()


def test_an_explicit_class_is_not_carried_by_its_number_to_another_models_list(session_on, team_server):
    url = team_server[0]
    s = session_on(url)
    s.goto("/saliency?target=2")
    wait_idle(s.page, COLD_WAIT_MS)
    assert "great white shark" in s.page.locator(TARGET_SHOWN).input_value()
    choose_model(s.page, TITLE)
    s.page.get_by_text(f"coffee · {TITLE}").first.wait_for(timeout=WAIT_MS)
    wait_idle(s.page)
    assert_healthy(s, "another model after an explicit class")
    assert "has no class 2 · great white shark" in s.page.locator('[data-testid="stAlertContentInfo"]').inner_text()
    assert "Auto: top-1 prediction" in s.page.locator(TARGET_SHOWN).input_value()
    assert "target=" not in s.page.url


MODEL_SHOWN = f'{SIDEBAR} .st-key-model input[role="combobox"]'  # the text the model picker shows
SIDEBAR_ERROR = f'{SIDEBAR} [data-testid="stAlertContentError"]'


def test_a_model_whose_weights_cannot_be_downloaded_leaves_the_picker_on_the_model_in_use(session_on, team_server):
    """Offline, choosing a model whose weights can't be fetched left the picker on that model while every page
    used EfficientNet-Lite0, under a 20-line red box ending in "[Errno -2] Name or service not known". The
    picker now shows the model in use, the box says in two lines what failed and what to do, and the library's
    words are folded under Details."""
    url, weights = team_server[0], team_server[1]
    s = session_on(url)
    s.goto("/saliency")
    wait_idle(s.page, COLD_WAIT_MS)
    choose_model(s.page, "ResNet-18")  # the local weights server has no such file: the download fails
    error = s.page.locator(SIDEBAR_ERROR).first
    error.wait_for(timeout=WAIT_MS)
    wait_idle(s.page)
    assert_healthy(s, "a model that failed to download")
    assert s.page.locator(MODEL_SHOWN).input_value() == "EfficientNet-Lite0 (embedded)"
    text = error.inner_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("ResNet-18: its weights could not be downloaded (HTTP 404") and \
        "Still using EfficientNet-Lite0" in lines[0], lines
    assert "resnet18-f37072fd.pth" in lines[1] and "checkpoints" in lines[1], lines
    details = s.page.locator(f"{SIDEBAR} [data-testid='stExpander']").filter(has_text="Details").first
    assert details.is_visible() and "download.pytorch.org" not in details.inner_text()  # folded
    assert s.page.get_by_role("button", name="Try again").count() == 1
    assert any("resnet18" in r for r in weights.requests)
    s.page.get_by_text("coffee · EfficientNet-Lite0").first.wait_for(timeout=WAIT_MS)  # the page still draws
    screenshot(s.page, "model-download-failed")
