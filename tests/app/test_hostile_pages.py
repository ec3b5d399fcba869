"""Text from uploads and links is data: a hostile file name never becomes a link or an image (AppTest).

An upload named ``![t](http://host/track.png) [docs](http://host/phish) cat.jpg``
made a colleague's browser fetch ``track.png`` when they opened the shared
link: the name was rendered as Markdown in captions. It must show as text,
on every page, for the uploader and for whoever opens the link.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from markdown_it import MarkdownIt

from tests.app.apptest import PAGES, assert_healthy, png_bytes, shown

HOSTILE = "![t](http://127.0.0.1:8622/track.png) [docs](http://127.0.0.1:8622/phish) :red[x] $y$ cat.png"


def rendered_bodies(at) -> list[str]:
    """Every Markdown body of the app (main and sidebar, image captions included), rendered to HTML."""
    md = MarkdownIt("gfm-like")
    bodies = [str(e.value) for kind in ("markdown", "caption", "error", "warning", "info", "success")
              for e in at.get(kind)]
    bodies += [c for img in at.get("imgs") for c in getattr(img, "captions", [])]
    bodies += [c for img in at.sidebar.get("imgs") for c in getattr(img, "captions", [])]
    return [md.render(b) for b in bodies]


def assert_shown_as_text(at) -> None:
    htmls = rendered_bodies(at)
    for h in htmls:
        assert "<a " not in h and "<img" not in h and "track.png\"" not in h, h
    seen = [shown(h) for h in htmls]
    assert any(HOSTILE in s for s in seen), seen  # the name itself, every character of it


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(7)
    return png_bytes(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))


@pytest.mark.parametrize("page", ["saliency", "compare", "statistics"])
def test_a_hostile_upload_name_is_text_for_the_uploader_and_for_the_link(new_app, photo, page):
    at = new_app(PAGES[page]).run()
    at.file_uploader(key="upload_file").upload(HOSTILE, photo, "image/png").run()
    assert_healthy(at)
    assert_shown_as_text(at)
    sha = hashlib.sha256(photo).hexdigest()
    colleague = new_app(PAGES[page], image=sha).run()  # the name comes back from the store's sidecar
    assert_healthy(colleague)
    assert_shown_as_text(colleague)


def test_a_hostile_name_of_a_bad_file_is_text_in_the_error(new_app):
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload(HOSTILE, b"<html>not an image</html>", "image/png").run()
    assert not at.exception
    assert at.error and all("<a " not in h and "<img" not in h for h in rendered_bodies(at))
    assert HOSTILE in shown(at.main.error[0].value)


def test_home_metric_and_gallery_set_names_are_text(new_app, photo):
    import io

    at = new_app(PAGES["home"]).run()
    at.file_uploader(key="upload_file").upload(HOSTILE, photo, "image/png").run()
    assert_healthy(at)
    value = next(m.value for m in at.metric if m.label == "Image")
    assert "<a " not in MarkdownIt("gfm-like").render(value) and shown(value) == HOSTILE

    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    np.savez(buf, X=rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), y=np.array([1, 2]))
    npz_name = HOSTILE.replace(".png", ".npz")
    at.file_uploader(key="upload_file").upload(npz_name, buf.getvalue(), "application/octet-stream").run()
    at.switch_page(PAGES["gallery"]).run()
    assert_healthy(at)
    control = at.button_group(key="gallery_set")
    labels = [o.content for o in control.proto.options]
    assert any(shown(label).startswith(npz_name) for label in labels), labels
    assert all("<a " not in MarkdownIt("gfm-like").render(label) for label in labels)


@pytest.mark.parametrize(("query", "says"), [
    ({"model": "no_such_model"}, "model=no_such_model"),
    ({"image": "not-a-sha"}, "image=not-a-sha"),
    ({"image": "a" * 64 + "\n"}, "image="),
    ({"target": "5000", "method": "gradcam"}, "target=5000"),
    ({"sample": HOSTILE}, "sample="),
])
def test_a_mangled_link_says_once_what_it_could_not_open_and_what_is_shown(new_app, query, says):
    at = new_app(PAGES["saliency"], **query).run()
    assert not at.exception
    notices = [shown(w.value) for w in at.warning]
    assert len(notices) == 1 and says in notices[0] and "instead" in notices[0], notices
    assert all("<a " not in h and "<img" not in h for h in rendered_bodies(at))
    if "method" in query:
        assert "method=gradcam" in notices[0]
    at.run()  # said once, not on every rerun
    assert not at.warning


def test_a_large_upload_is_not_kept_decoded_at_full_size(new_app):
    import gc

    from PIL import Image

    from pages.ui import caches

    big = png_bytes(np.full((2000, 3000, 3), 90, dtype=np.uint8))  # 18 MB decoded, a few kB as PNG
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("big.png", big, "image/png").run()
    assert_healthy(at)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, Image.Image) and o.size == (3000, 2000)]
    assert not alive, f"{len(alive)} full-size decode(s) still held"
    assert caches.decoded_images().nbytes <= caches.MAX_DECODED_BYTES
    assert ("thumbnail", hashlib.sha256(big).hexdigest()) in caches.decoded_images()
