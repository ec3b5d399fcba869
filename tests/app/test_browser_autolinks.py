"""In Chromium: a URL or an address inside a name is text, never a link (the security issue's point 7).

Escaping ``:`` and ``/`` kept Markdown links out of names, but remark-gfm's autolink literals, which
Streamlit's frontend runs on the text after escapes are resolved, still turned an upload named
``see http://127.0.0.1:8622/phish cat.jpg`` into a link, for the uploader and for everyone who opened the
shared view; Parquet keys, class names and a custom model's title the same. Only a real browser rendering a
real server's page shows that, so this counts the page's ``a`` elements whose address is one of the names'.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.app.chromium import (
    COLD_WAIT_MS,
    MAIN,
    REPO,
    UPLOAD_INPUT,
    WAIT_MS,
    _streamlit,
    assert_healthy,
    query,
    screenshot,
    wait_idle,
)
from tests.test_custom_models import TinyNet

pytestmark = [pytest.mark.browser, pytest.mark.slow]


LOG = REPO / "artifacts" / "browser-autolinks-server.log"
UPLOAD_NAME = "see http://127.0.0.1:8622/phish cat.jpg"  # the issue's
TITLE = "Tiny net, docs at www.phish.example/net"
CLASSES = ["red HTTPS://127.0.0.1:8622/PHISH-red", "green www.phish.example/green", "blue help@phish.example",
           "grey http://127.0.0.1:8622/phish-grey"]
KEYS = ["see http://127.0.0.1:8622/phish k0.jpg", "WWW.phish.example/k1.jpg", "help@phish.example k2.jpg"]
# Every address the names above hold, as Chromium would write it in an href.
ADDRESSES = ("127.0.0.1:8622", "phish.example", "mailto:")
VISIBLE_TEXT_JS = """sel => [...document.querySelectorAll(sel)].map(e => e.innerText).join('\\n')
                            .replaceAll('\\u2060', '')"""


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dashboard whose models folder holds ``custom:tiny``, titled and with classes named with URLs."""
    tmp = tmp_path_factory.mktemp("autolinks")
    models = tmp / "models"
    models.mkdir()
    torch.manual_seed(0)
    torch.jit.script(TinyNet().eval()).save(str(models / "tiny.pt"))
    (models / "tiny.json").write_text(json.dumps({"title": TITLE, "classes": CLASSES, "resize": 36, "crop": 32,
                                                  "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
    with _streamlit(request, tmp / "uploads", LOG, env={"SALIENCY_MODELS_DIR": str(models)}) as url:
        yield url


def links_to_the_names(page) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    return [h for h in hrefs if any(a in h.lower() for a in ADDRESSES)]


def wait_for_text(page, text: str, where: str = MAIN, timeout: float = WAIT_MS) -> None:
    """Until ``text`` is on screen in ``where`` (read as people read it: the invisible word joiners dropped)."""
    page.wait_for_function(f"text => ({VISIBLE_TEXT_JS})({where!r}).includes(text)", arg=text,
                           timeout=timeout)


def jpeg() -> bytes:
    rng = np.random.default_rng(5)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_an_upload_named_with_a_url_is_no_link_for_the_uploader_nor_the_shared_link(session_on, server: str):
    owner = session_on(server)
    owner.goto("/saliency")
    wait_idle(owner.page, COLD_WAIT_MS)
    owner.page.locator(UPLOAD_INPUT).wait_for(state="attached", timeout=COLD_WAIT_MS)
    owner.page.set_input_files(UPLOAD_INPUT, files=[{"name": UPLOAD_NAME, "mimeType": "image/jpeg",
                                                     "buffer": jpeg()}])
    wait_for_text(owner.page, f"{UPLOAD_NAME} · ")  # the caption under the title names the upload
    wait_idle(owner.page)
    assert_healthy(owner, "after the upload")
    assert links_to_the_names(owner.page) == []
    assert "image" in query(owner.page), owner.page.url
    screenshot(owner.page, "autolinks-upload")

    guest = session_on(server)  # whoever opens the shared link
    guest.page.goto(owner.page.url)
    wait_for_text(guest.page, f"{UPLOAD_NAME} · ")
    wait_idle(guest.page)
    assert_healthy(guest, "the shared link")
    assert links_to_the_names(guest.page) == []


def test_a_custom_model_s_title_and_class_names_are_no_links(session_on, server: str):
    s = session_on(server)
    s.goto("/saliency?model=custom:tiny")
    wait_idle(s.page, COLD_WAIT_MS)
    wait_for_text(s.page, f" · {TITLE} · target", timeout=COLD_WAIT_MS)  # the caption: image · model · target
    wait_idle(s.page)
    assert_healthy(s, "the custom model")
    shown = s.page.evaluate(VISIBLE_TEXT_JS, MAIN)
    assert any(name in shown for name in CLASSES), shown  # the target's class name is on screen, as text
    assert links_to_the_names(s.page) == []


def test_parquet_keys_and_class_names_are_no_links(session_on, server: str, tmp_path: Path):
    frame = pd.DataFrame({"key": KEYS, "target": [0, 1, 2], "prediction": [0, 1, 3],
                          "target_name": CLASSES[:3], "prediction_name": CLASSES[1:],
                          "score_max": [1.0, 2.0, 3.0], "loss_max": [1.0, 2.0, 3.0],
                          "agree_spearman": [0.1, 0.2, 0.3]})
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    s = session_on(server)
    s.goto("/dataset")
    wait_idle(s.page, COLD_WAIT_MS)
    s.page.locator(".st-key-dataset_source").get_by_role("radio", name="Upload a Parquet file").click()
    wait_idle(s.page)
    s.page.locator(".st-key-dataset_upload input[type=file]").set_input_files(
        files=[{"name": "forged.parquet", "mimeType": "application/octet-stream", "buffer": buf.getvalue()}])
    wait_for_text(s.page, "Where two maps disagree most")
    wait_idle(s.page)
    for text in (*KEYS, *CLASSES[:3]):  # "Where two maps disagree most" names each image and its target
        wait_for_text(s.page, text)
    assert_healthy(s, "the uploaded Parquet file")
    assert links_to_the_names(s.page) == []
    screenshot(s.page, "autolinks-parquet")
