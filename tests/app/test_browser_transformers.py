"""In Chromium: a ViT (DeiT) and a Swin from the team's models folder, saved as timm state dicts, get maps from
every method the dashboard offers them, each family added by its button on the Methods page (issue 25). No
traceback, the CAM layer found by itself (the last block's norm, the last stage), and the methods a transformer
can't run (guided backprop: GELU; DeepLIFT: layer norms) named under the pick, not tried."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from saliency_core.methods import model_needs
from saliency_core.methods.registry import ATTRIBUTION_METHODS, by_family, map_title, shown_by_default
from tests import transformer_folder
from tests.app.chromium import COLD_WAIT_MS, REPO, WAIT_MS, _streamlit, assert_healthy, screenshot, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("timm")

LOG = REPO / "artifacts" / "browser-transformers-server.log"
GRID = ".st-key-grid .js-plotly-plot"
EVERY_METHOD_WAIT_MS = 900_000


@pytest.fixture(scope="module")
def transformer_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("transformers")
    models = tmp / "models"
    models.mkdir()
    for stem in transformer_folder.MODELS:
        transformer_folder.write(models, stem)
    with _streamlit(request, tmp / "uploads", LOG, env={"SALIENCY_MODELS_DIR": str(models)}) as url:
        yield url


def offered(stem: str) -> list[str]:
    """The methods the dashboard offers the model, in the order the Methods page adds them."""
    net = transformer_folder.build(stem)
    runnable = {m for m, method in ATTRIBUTION_METHODS.items() if not model_needs.unmet_needs(method, net)}
    ordered = [*shown_by_default(), *(m for names in by_family().values() for m in names)]
    return [m for m in dict.fromkeys(ordered) if m in runnable]


@pytest.mark.parametrize("stem", transformer_folder.MODELS)
def test_a_transformer_gets_maps_from_every_offered_method(session_on, transformer_server, stem):
    s = session_on(transformer_server)
    s.goto("/methods?" + urlencode({"model": f"custom:{stem}"}))
    wait_idle(s.page, COLD_WAIT_MS)
    page = s.page
    page.get_by_text("Guided backprop (it needs").first.wait_for(timeout=COLD_WAIT_MS)  # named, not tried
    wait_idle(page, COLD_WAIT_MS)
    every = offered(stem)
    for family, names in by_family().items():
        if any(m in every for m in names):
            page.locator(f".st-key-methods_add_{family} button").first.click()
            wait_idle(page, EVERY_METHOD_WAIT_MS)
    try:
        page.wait_for_function(f"sel => document.querySelector(sel).data.filter(t => t.type === 'heatmap').length "
                               f"=== {2 * len(every)}", arg=GRID, timeout=WAIT_MS)
    finally:
        screenshot(page, f"methods-every-family-{stem}")
    names = page.evaluate("""sel => document.querySelector(sel).data.filter(t => t.type === 'heatmap')
        .map(t => t.name)""", GRID)
    assert sorted(names) == sorted(map_title(m, o) for m in every for o in ("score", "loss")), names
    assert page.get_by_text("can't run here").count() == 0
    assert_healthy(s, f"/methods on {stem}")
