"""In Chromium: a team's own TorchScript model (a traced CNN in ``SALIENCY_MODELS_DIR``) gets maps from all four
perturbation methods, on the Saliency page (each map equal to ``saliency_core.attribute``'s) and side by side on
the Methods page. These methods only run the model forward, so a compiled model, which Grad-CAM and guided
backprop can't open up, serves them all."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import numpy as np
import pytest
import torch

from benchmarks.bench_load import HEATMAP_JS, SETTLED_JS
from tests.app.chromium import COLD_WAIT_MS, REPO, WAIT_MS, _streamlit, assert_healthy, screenshot, wait_idle
from tests.methods.perturbation_cases import save_own_models, small_cnn

pytestmark = [pytest.mark.browser, pytest.mark.slow]


LOG = REPO / "artifacts" / "browser-perturbation-server.log"
MODEL = "custom:perturb_traced"
TITLE = "Small CNN"
CROP = 64  # the defaults are sized for 224 px; at 64 px they still give each method a few regions
# Settings for the Saliency page that suit the small crop better.
LINK_PARAMS = {
    "occlusion": {"window": "16", "stride": "8"},
    "rise": {"masks": "64", "grid": "4"},
    "kernel_shap": {"samples": "48", "segments": "12"},
    "lime": {"samples": "48", "superpixels": "slic", "segments": "12"},
}


@pytest.fixture(scope="module")
def team_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A dashboard whose models folder holds the small CNN as TorchScript (traced) and torch.export; (URL, folder)."""
    tmp = tmp_path_factory.mktemp("perturbation")
    models = tmp / "models"
    models.mkdir()
    save_own_models(models, small_cnn(), crop=CROP)
    with _streamlit(request, tmp / "uploads", LOG, env={"SALIENCY_MODELS_DIR": str(models)}) as url:
        yield url, models


def engine_map(models, method: str, params: dict[str, str], monkeypatch) -> np.ndarray:
    """The score map saliency_core.attribute gives for the coffee sample on the TorchScript model (top-1)."""
    import warnings

    from saliency_core import attribute
    from saliency_core.inputs.samples import sample_by_name
    from saliency_core.methods.registry import ATTRIBUTION_METHODS
    from saliency_core.models.loading import load_model

    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(models))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
        model = load_model(MODEL, "cpu")
    assert isinstance(model.model, torch.jit.ScriptModule)
    kinds = {p.name: p.kind for p in ATTRIBUTION_METHODS[method].params}
    typed = {name: kinds[name](value) for name, value in params.items()}
    x = model.preprocess(sample_by_name("coffee").image).x
    return attribute(model, x, [-1], method, ("score", "loss"), **typed).maps["score"][0].numpy()


def shown_heatmap(page) -> np.ndarray:
    page.wait_for_function(SETTLED_JS, timeout=WAIT_MS, polling=200)
    z = page.evaluate(HEATMAP_JS)
    return np.asarray(z["values"], dtype=np.float64).reshape(z["shape"])


def test_a_torchscript_model_gets_maps_from_every_perturbation_method(session_on, team_server, monkeypatch):
    url, models = team_server
    s = session_on(url)
    first = True
    for method, params in LINK_PARAMS.items():
        s.goto("/saliency?" + urlencode({"model": MODEL, "method": method, **params}))
        wait_idle(s.page, COLD_WAIT_MS if first else WAIT_MS)
        first = False
        s.page.get_by_text(f"coffee · {TITLE}").first.wait_for(timeout=WAIT_MS)
        assert_healthy(s, method)
        shown = shown_heatmap(s.page)
        want = engine_map(models, method, params, monkeypatch)
        assert shown.shape == want.shape == (CROP, CROP) and want.max() > 0 and np.ptp(want) > 0, method
        np.testing.assert_allclose(shown, want, rtol=1e-4, atol=1e-6 * float(want.max()), err_msg=method)
    screenshot(s.page, "perturbation-lime-torchscript")

    # All four side by side: the sidebar's method (LIME) with its link settings, the others with their defaults.
    s.goto("/methods?" + urlencode({"model": MODEL, "methods": ",".join(LINK_PARAMS), "method": "lime",
                                    **LINK_PARAMS["lime"]}))
    wait_idle(s.page, WAIT_MS)
    assert_healthy(s, "the Methods page")
    names = s.page.evaluate("""() => { const p = document.querySelector('.st-key-grid .js-plotly-plot');
        return p && p.data ? p.data.filter(t => t.type === 'heatmap').map(t => t.name) : []; }""")
    titles = ("Occlusion", "RISE", "KernelSHAP", "LIME")
    assert [n.split(" · ")[0] for n in names] == [t for t in titles for _ in range(2)], names
    assert all(" · loss −L" in n for n in names[1::2]), names
    assert "is constant" not in s.page.locator('[data-testid="stMain"]').inner_text()  # every map has regions
    screenshot(s.page, "perturbation-methods-torchscript")
