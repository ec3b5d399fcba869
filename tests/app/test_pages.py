"""The dashboard's pages driven in-process with Streamlit's AppTest.

Every map the pages draw is decoded from the Plotly figure they send and
compared with a map computed here, directly with ``saliency_core``, for the
same image, model and target. Fixtures: ``tests/app/conftest.py`` (the app)
and ``tests/conftest.py`` (``lite0``, the reference model).
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from saliency_core.core import gradients
from saliency_core.errors import InvalidImageError
from saliency_core.evaluation.stats import SUMMARY_COLUMNS
from saliency_core.inputs.images import load_image
from saliency_core.inputs.samples import sample_by_name
from saliency_core.methods.registry import shown_by_default
from tests.app.apptest import (
    PAGES,
    RTOL,
    assert_healthy,
    assert_map_equal,
    charts,
    chelsea,
    coffee,
    decode_image_source,
    decode_plotly_array,
    embedded_can_run,
    heatmap_z,
    heatmaps,
    link,
    main_markdown,
    png_bytes,
    ref_map,
    shown,
    texts,
)

pytestmark = pytest.mark.usefixtures("upload_dir")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def photo_png() -> bytes:
    """A real photograph (not one of the samples) as PNG bytes."""
    from skimage import data

    return png_bytes(np.ascontiguousarray(data.astronaut()[::2, ::2]))


@pytest.fixture(scope="module")
def reference(lite0) -> Callable[..., gradients.SaliencyResult]:
    """``reference(image, target, reduction="max")``: saliency_core's own maps for one image (target -1: top-1)."""
    memo: dict[tuple[str, int, str], gradients.SaliencyResult] = {}

    def ref(image: Image.Image, target: int, reduction: str = "max") -> gradients.SaliencyResult:
        key = (hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest(), target, reduction)
        if key not in memo:
            batch = lite0.preprocess(image)
            memo[key] = gradients.compute_saliency(lite0, batch.x, [target], reduction=reduction)
        return memo[key]

    return ref


def test_decode_plotly_array_reads_both_forms():
    a = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    typed = {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode(), "shape": "2, 3"}
    np.testing.assert_array_equal(decode_plotly_array(typed), a)
    np.testing.assert_array_equal(decode_plotly_array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]]))
    flat = {"dtype": "u1", "bdata": base64.b64encode(bytes([1, 2, 3])).decode()}
    np.testing.assert_array_equal(decode_plotly_array(flat), np.array([1, 2, 3], dtype=np.uint8))


# --------------------------------------------------------------------------- 1. every page renders


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "faithfulness" else n for n in PAGES])
def test_every_page_renders_with_defaults(new_app, name):
    from pages.ui import site

    at = new_app(PAGES[name]).run()
    assert_healthy(at)
    figs = charts(at)
    expected = {
        "home": lambda: "Which pixels" in at.title[0].value and len(at.get("page_link")) == len(site.PAGES) - 1,
        "saliency": lambda: "heatmap" in figs,
        "compare": lambda: {"side_by_side", "difference", "term_target", "term_others"} <= set(figs),
        "methods": lambda: {"grid", "agreement"} <= set(figs)
        and len(heatmaps(figs["grid"])) == 2 * len(embedded_can_run(shown_by_default())),
        "gallery": lambda: "gallery_0" in figs and len(heatmaps(figs["gallery_0"])) == 2 * 5,
        "statistics": lambda: {"histogram", "concentration"} <= set(figs) and len(at.dataframe) == 3,
        "faithfulness": lambda: {"deletion", "insertion", "similarity", "strip"} <= set(figs),
    }[name]
    assert expected(), (name, sorted(figs), [t.value for t in at.title])


# --------------------------------------------------------------------------- 2. sample maps are saliency_core's maps


def test_default_sample_heatmap_is_saliency_core_score_map(new_app, reference):
    at = new_app(PAGES["saliency"]).run()
    assert_healthy(at)
    assert at.selectbox(key="sample").value == "coffee"
    assert at.radio(key="objective").value == "score"
    assert "967 espresso" in main_markdown(at) and "true label" in main_markdown(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(coffee(), 967), "score"))


def test_sample_from_query_params_shows_its_loss_map(new_app, reference):
    # method=loss: how links said "objective=loss" before ?method named the attribution method; still opened.
    at = new_app(PAGES["saliency"], **link(sample="chelsea", method="loss")).run()
    assert_healthy(at)
    assert at.selectbox(key="sample").value == "chelsea"
    assert at.radio(key="objective").value == "loss"
    assert "281 tabby" in main_markdown(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(chelsea(), 281), "loss"))


# --------------------------------------------------------------------------- 3. uploads


def test_uploaded_png_is_analysed_with_its_top1_target(new_app, reference, photo_png):
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("astronaut.png", photo_png, "image/png").run()
    assert_healthy(at)
    # The uploader's on_change made the upload the image source.
    assert at.session_state["source"] == "upload"
    assert at.query_params.get("image") == hashlib.sha256(photo_png).hexdigest()
    image = Image.open(io.BytesIO(photo_png)).convert("RGB")  # decoded independently of the app
    expected = reference(image, -1)
    top1 = int(expected.targets[0])
    assert f"target {top1} " in main_markdown(at) and "(top-1)" in main_markdown(at)
    assert_map_equal(heatmap_z(at), ref_map(expected, "score"))


@pytest.mark.parametrize("kind", ["text", "truncated"])
def test_corrupt_upload_shows_the_loaders_message_and_the_page_recovers(new_app, reference, photo_png, kind):
    data = b"not an image" if kind == "text" else photo_png[: len(photo_png) // 2]
    with pytest.raises(InvalidImageError) as raised:
        load_image(data)
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("x.png", data, "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    assert str(raised.value) in texts(at.error), texts(at.error)
    assert "x.png" in texts(at.error)
    assert "heatmap" not in charts(at)

    at.button_group(key="source").set_value("sample").run()
    at.selectbox(key="sample").set_value("chelsea").run()
    assert_healthy(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(chelsea(), 281), "score"))


def test_corrupt_upload_is_an_error_in_the_page_whatever_its_name(new_app):
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("upload.png", b"not an image", "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "upload.png" in texts(at.main.error), texts(at.main.info)
    assert "upload.png" not in texts(at.sidebar.error), "shown once, in the page, not twice"


# --------------------------------------------------------------------------- 5. method and target


@pytest.mark.slow
def test_method_and_target_change_the_map_to_the_matching_reference(new_app, reference):
    at = new_app(PAGES["saliency"]).run()
    score = heatmap_z(at)
    assert_map_equal(score, ref_map(reference(coffee(), 967), "score"))

    at.radio(key="objective").set_value("loss").run()
    assert_healthy(at)
    loss = heatmap_z(at)
    assert not np.allclose(loss, score)
    assert_map_equal(loss, ref_map(reference(coffee(), 967), "loss"))

    at.selectbox(key="target").set_value(968).run()
    assert_healthy(at)
    assert "968 cup" in main_markdown(at) and "(chosen)" in main_markdown(at)
    loss_968 = heatmap_z(at)
    assert not np.allclose(loss_968, loss)
    assert_map_equal(loss_968, ref_map(reference(coffee(), 968), "loss"))

    at.radio(key="objective").set_value("score").run()
    assert_map_equal(heatmap_z(at), ref_map(reference(coffee(), 968), "score"))

    at.selectbox(key="reduction").set_value("mean_abs").run()
    assert_healthy(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(coffee(), 968, "mean_abs"), "score"))

    # Another image drops the chosen target: its maps explain its own true label.
    at.selectbox(key="sample").set_value("chelsea").run()
    assert_healthy(at)
    assert at.selectbox(key="target").value == -1
    assert "281 tabby" in main_markdown(at) and "(true label)" in main_markdown(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(chelsea(), 281, "mean_abs"), "score"))


# --------------------------------------------------------------------------- 6. links restore a view


SHARED_VIEW = {"sample": "chelsea", "objective": "loss", "target": 282, "model": "efficientnet_lite0"}

def assert_widgets_show_shared_view(at) -> None:
    assert at.selectbox(key="sample").value == "chelsea"
    assert at.radio(key="objective").value == "loss"
    assert at.selectbox(key="target").value == 282
    assert at.selectbox(key="model").value == "efficientnet_lite0"


def test_query_params_restore_the_compare_page(new_app, reference):
    at = new_app(PAGES["compare"], **link(**SHARED_VIEW)).run()
    assert_healthy(at)
    assert_widgets_show_shared_view(at)
    assert "282 tiger cat" in main_markdown(at)
    expected = reference(chelsea(), 282)
    traces = {t["name"]: decode_plotly_array(t["z"]) for t in heatmaps(charts(at)["side_by_side"])}
    assert set(traces) == {"score", "loss"}
    for method in ("score", "loss"):
        assert_map_equal(traces[method], ref_map(expected, method))


def test_query_params_restore_the_saliency_page(new_app, reference):
    at = new_app(PAGES["saliency"], **link(**SHARED_VIEW)).run()
    assert_healthy(at)
    assert_widgets_show_shared_view(at)
    assert "282 tiger cat" in main_markdown(at) and "(chosen)" in main_markdown(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(chelsea(), 282), "loss"))


def test_link_to_an_upload_opens_it_in_another_session(new_app, reference, photo_png, upload_dir):
    sha = hashlib.sha256(photo_png).hexdigest()
    first = new_app(PAGES["saliency"]).run()
    first.file_uploader(key="upload_file").upload("astronaut.png", photo_png, "image/png").run()
    assert_healthy(first)
    assert first.query_params.get("image") == sha
    assert first.query_params.get("source") == link(source="upload")["source"]
    assert (upload_dir / sha).read_bytes() == photo_png

    second = new_app(PAGES["saliency"], **link(source="upload", image=sha)).run()
    assert_healthy(second)
    assert second.session_state["source"] == "upload"
    assert "astronaut.png" in main_markdown(second)
    captions = [shown(c) for img in second.sidebar.get("image") for c in img.captions]
    assert "astronaut.png (from a shared link)" in captions, captions
    image = Image.open(io.BytesIO(photo_png)).convert("RGB")
    assert_map_equal(heatmap_z(second), ref_map(reference(image, -1), "score"))
    assert second.query_params.get("image") == sha


def test_link_to_an_unknown_upload_says_it_is_no_longer_kept(new_app, upload_dir):
    sha = hashlib.sha256(b"an image nobody uploaded").hexdigest()
    assert not (upload_dir / sha).exists()
    at = new_app(PAGES["saliency"], **link(source="upload", image=sha)).run()
    assert not at.exception, [e.value for e in at.exception]
    messages = texts(at.error) + texts(at.warning) + texts(at.info)
    assert "no longer kept" in messages and sha[:12] in messages, messages
    assert "heatmap" not in charts(at)


# --------------------------------------------------------------------------- 7. display changes are free


def test_display_changes_compute_no_gradients(new_app, monkeypatch):

    from saliency_core.evaluation import analysis

    assert analysis.gradients is gradients  # the app calls gradients.compute_saliency through this module
    calls = []
    original = gradients.compute_saliency

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(gradients, "compute_saliency", counting)
    from pages.ui import caches

    caches.analyses().clear()  # earlier tests cached the default view's analysis

    at = new_app(PAGES["saliency"]).run()
    assert_healthy(at)
    assert len(calls) == 1
    before = heatmap_z(at)

    at.selectbox(key="colorscale").set_value("viridis").run()
    assert "opacity" not in [s.key for s in at.slider], "the overlay's opacity shows only with the overlay"
    at.slider(key="clip").set_value((5.0, 95.0)).run()
    at.radio(key="objective").set_value("loss").run()
    assert_healthy(at)
    fig = charts(at)["heatmap"]
    assert heatmaps(fig)[0]["zmin"] > 0  # the clip took effect on the figure
    at.button_group(key="saliency_view").set_value("Overlay on the image").run()
    at.slider(key="opacity").set_value(0.3).run()
    assert_healthy(at)
    overlay = charts(at)["heatmap"]
    assert [t["type"] for t in overlay["data"]] == ["image", "heatmap"]
    assert heatmaps(overlay)[0]["opacity"] == 0.3
    np.testing.assert_array_equal(decode_plotly_array(heatmaps(overlay)[0]["z"]), heatmap_z(at))
    at.switch_page(PAGES["compare"]).run()
    assert "coloraxis" not in charts(at)["side_by_side"]["layout"]
    at.toggle(key="shared_scale").set_value(True).run()
    assert_healthy(at)
    assert "coloraxis" in charts(at)["side_by_side"]["layout"]
    at.switch_page(PAGES["saliency"]).run()
    assert len(calls) == 1, "a display change recomputed gradients"
    assert at.selectbox(key="colorscale").value == "viridis"
    assert not np.allclose(heatmap_z(at), before)  # now the loss map

    at.selectbox(key="target").set_value(968).run()
    assert_healthy(at)
    assert len(calls) == 2


# --------------------------------------------------------------------------- 8. unavailable model


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """No torchvision checkpoints anywhere: every torchvision model is unavailable."""
    from pages.ui import model_cache
    from saliency_core.models.loading import list_models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    status = {s.name: s for s in list_models()}
    assert not status["vit_b_16"].available and status["efficientnet_lite0"].available
    model_cache.model_statuses.clear()
    yield
    model_cache.model_statuses.clear()


def test_unavailable_model_keeps_the_current_one(new_app, reference, empty_torch_home):
    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="model").set_value("vit_b_16").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = texts(at.error)
    assert "ViT-B/16" in errors and "Still using EfficientNet-Lite0" in errors, errors
    assert "EfficientNet-Lite0" in main_markdown(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(coffee(), 967), "score"))
    # The shared link describes what is shown: the model in use, not the one that failed.
    assert at.query_params.get("model") in (None, [], "efficientnet_lite0", ["efficientnet_lite0"]), at.query_params
    at.radio(key="objective").set_value("loss").run()
    assert "vit_b_16" not in str(at.query_params.get("model")), at.query_params
    assert at.query_params.get("objective") in ("loss", ["loss"])


# --------------------------------------------------------------------------- 9. cs231n .npz batches


NPZ_SAMPLES = ("coffee", "chelsea", "rocket")


@pytest.fixture(scope="module")
def npz_batch(lite0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """cs231n-style bytes with X, y and a pickled label_map (which must never be loaded)."""
    X = np.stack([np.asarray(lite0.crop(sample_by_name(n).image), dtype=np.uint8) for n in NPZ_SAMPLES])
    y = np.array([sample_by_name(n).label for n in NPZ_SAMPLES], dtype=np.int64)
    buf = io.BytesIO()
    label_map = {int(sample_by_name(n).label): sample_by_name(n).label_name for n in NPZ_SAMPLES}
    np.savez(buf, X=X, y=y, label_map=label_map)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as npz:
        with pytest.raises(ValueError, match="allow_pickle"):
            npz["label_map"]  # really a pickled object array, as in cs231n's file
    return buf.getvalue(), X, y


@pytest.mark.slow
def test_npz_upload_feeds_the_saliency_and_gallery_pages(new_app, reference, npz_batch, lite0):
    data, X, y = npz_batch
    assert list(y) == [967, 281, 657]
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("batch.npz", data, "application/octet-stream").run()
    assert_healthy(at)
    assert at.selectbox(key="npz_index").value == 0
    text = main_markdown(at)
    assert "batch.npz #0" in text and "967 espresso (true label)" in text, text
    assert_map_equal(heatmap_z(at), ref_map(reference(Image.fromarray(X[0]), 967), "score"))

    at.selectbox(key="npz_index").set_value(1).run()
    assert_healthy(at)
    text = main_markdown(at)
    assert "batch.npz #1" in text and "281 tabby (true label)" in text, text
    assert_map_equal(heatmap_z(at), ref_map(reference(Image.fromarray(X[1]), 281), "score"))
    sha = at.query_params.get("image")
    sha = sha[0] if isinstance(sha, list) else sha
    linked = new_app(PAGES["saliency"], source="upload", image=sha).run()  # a colleague opens the link
    assert_healthy(linked)
    assert main_markdown(linked).startswith("batch.npz #1 · "), main_markdown(linked)  # the same title

    at.switch_page(PAGES["gallery"]).run()
    assert_healthy(at)
    sets = at.button_group(key="gallery_set")
    npz_set = "batch.npz (3 images)"
    assert npz_set in [shown(o) for o in sets.options], sets.options  # the labels are Markdown, the values are not
    sets.set_value(npz_set).run()
    assert_healthy(at)
    fig = charts(at)["gallery_0"]
    images = [decode_image_source(t["source"]) for t in fig["data"] if t["type"] == "image"]
    assert len(images) == 3 and len(heatmaps(fig)) == 6
    for drawn, x in zip(images, X, strict=True):
        np.testing.assert_array_equal(drawn, np.asarray(lite0.crop(Image.fromarray(x))))
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert [t.split(" (")[0] for t in titles] == ["espresso", "tabby", "missile"], titles


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros((2, 32, 32), np.uint8), np.zeros(2, np.int64), "X has shape (2, 32, 32)"),
        (np.zeros((2, 32, 32, 3), np.uint8), np.zeros(3, np.int64), "y has shape (3,)"),
    ],
    ids=["X-without-channels", "y-of-wrong-length"],
)
def test_npz_of_the_wrong_shape_shows_an_error(new_app, X, y, message):
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    at = new_app(PAGES["saliency"]).run()
    at.file_uploader(key="upload_file").upload("bad.npz", buf.getvalue(), "application/octet-stream").run()
    assert not at.exception, [e.value for e in at.exception]
    assert message in texts(at.error), texts(at.error)
    assert "heatmap" not in charts(at)


# --------------------------------------------------------------------------- 10. statistics


def test_statistics_page_summary_and_downloads(new_app, reference):
    at = new_app(PAGES["statistics"]).run()
    assert_healthy(at)
    shown = at.dataframe[0].value  # one row per statistic, one column per map, so it fits the page
    assert list(shown.columns) == ["statistic", "score", "loss"]
    summary = shown.set_index("statistic").T
    assert list(summary.index) == ["score", "loss"]
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    expected = reference(coffee(), 967)
    for method in ("score", "loss"):
        m = ref_map(expected, method)
        np.testing.assert_allclose(summary.loc[method, "max"], m.max(), rtol=RTOL)
        np.testing.assert_allclose(summary.loc[method, "mean"], m.mean(), rtol=1e-4)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Summary (CSV)", "Top pixels (CSV)", "Everything with provenance (JSON)"]


# --------------------------------------------------------------------------- the pages/ folder


def test_page_reruns_go_through_the_entry_script(new_app_unpatched, reference):
    at = new_app_unpatched(PAGES["saliency"]).run()  # the first run is rescued by sidebar.view()'s st.rerun()
    assert_healthy(at)
    assert_map_equal(heatmap_z(at), ref_map(reference(coffee(), 967), "score"))
    at.radio(key="objective").set_value("loss").run()
    assert_healthy(at)
    assert [w.key for w in at.sidebar.get("radio")] == ["objective"], "the sidebar was not drawn"
    assert_map_equal(heatmap_z(at), ref_map(reference(coffee(), 967), "loss"))


# --------------------------------------------------------------------------- faithfulness page


@pytest.mark.slow
def test_faithfulness_page_computes_curves_table_and_randomisation_once(new_app, monkeypatch):
    from saliency_core.evaluation import faithfulness, sanity

    calls = {"deletion_insertion_orders": 0, "deletion_insertion": 0, "cascading_randomization": 0}
    for module, name in ((faithfulness, "deletion_insertion_orders"), (faithfulness, "deletion_insertion"),
                         (sanity, "cascading_randomization")):
        original = getattr(module, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    from pages.ui import caches

    caches.progress_results().clear()  # forget results of earlier tests

    at = new_app(PAGES["faithfulness"], sample="chelsea").run()
    assert_healthy(at)
    figs = charts(at)
    assert {"deletion", "insertion", "similarity", "strip"} <= set(figs)
    assert [t["name"] for t in figs["deletion"]["data"]] == ["score", "loss", "random order"]
    deletion = figs["deletion"]["data"][0]
    assert len(decode_plotly_array(deletion["y"])) == 21  # 20 steps + the original
    table = next(d.value for d in at.dataframe if "order" in d.value.columns)  # the metrics table is first
    assert sorted(table["order"]) == ["loss", "random order", "score"]
    assert list(table["rank"]) == [1, 2, 3]
    assert (table["insertion_minus_deletion"].diff().dropna() <= 0).all()
    # All three orders in one batched pass (one deletion_insertion over the stacked orders).
    assert calls == {"deletion_insertion_orders": 1, "deletion_insertion": 1, "cascading_randomization": 1}
    similarity = figs["similarity"]["data"]
    assert len(similarity) == 4  # score/loss x spearman/ssim
    first = decode_plotly_array(similarity[0]["y"])
    assert first[0] == pytest.approx(1.0) and first[-1] < 0.9  # randomising the model changes the map
    strip = heatmaps(figs["strip"])
    assert len(strip) == 2 * 9  # score/loss x the trained model and 8 stages
    assert decode_plotly_array(strip[0]["z"]).shape == (112, 112)  # 224 px maps shown as 2 x 2 means

    at.run()  # a rerun (same options) reuses the results
    assert calls == {"deletion_insertion_orders": 1, "deletion_insertion": 1, "cascading_randomization": 1}
    at.slider(key="faith_steps").set_value(10).run()
    assert_healthy(at)
    assert calls["deletion_insertion_orders"] == 2 and calls["cascading_randomization"] == 1
    assert len(decode_plotly_array(charts(at)["deletion"]["data"][0]["y"])) == 11
    # Precision changes the numbers on CUDA (equal on the CPU): a key without it would serve exact-mode results.
    at.selectbox(key="precision").set_value("fast").run()
    assert_healthy(at)
    assert calls["deletion_insertion_orders"] == 3 and calls["cascading_randomization"] == 2
    assert "fast precision" in texts(at.caption)


@pytest.mark.slow
def test_faithfulness_page_downloads_carry_provenance_and_say_what_they_are(new_app, monkeypatch):
    import pandas as pd
    import streamlit as st

    from saliency_core.figures.evaluation_files import faithfulness_filename
    from tests.test_export import read_csv_provenance

    buttons = {}
    original = st.download_button

    def spy(label, data, file_name=None, *args, **kwargs):
        buttons[label] = (data, file_name)
        return original(label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", spy)
    at = new_app(PAGES["faithfulness"], sample="chelsea").run()
    assert_healthy(at)
    curves_data, curves_name = buttons["Deletion/insertion curves (CSV)"]
    rand_data, rand_name = buttons["Randomisation similarity (CSV)"]
    title = sample_by_name("chelsea").title
    assert curves_name == faithfulness_filename("deletion_insertion", title, "efficientnet_lite0", 281)
    assert rand_name == faithfulness_filename("randomisation", title, "efficientnet_lite0", 281)
    assert "Chelsea" in curves_name and "target281" in rand_name, (curves_name, rand_name)
    for data, section in ((curves_data, "faithfulness"), (rand_data, "randomisation")):
        raw = data() if callable(data) else data
        header = read_csv_provenance(raw)
        assert header["image"]["sha256"] == sample_by_name("chelsea").sha256
        assert header["model"]["name"] == "efficientnet_lite0"
        assert header["target"] == {"index": 281, "name": "tabby"}
        assert header["saliency"]["reduction"] == "max" and header["saliency"]["precision"] == "exact"
        assert header[section]["precision"] == "exact"
        assert len(pd.read_csv(io.BytesIO(raw), comment="#")) > 0
    assert header["randomisation"]["seed"] == 0 and len(header["randomisation"]["stages"]) == 9
    assert (header["randomisation"]["method"], header["randomisation"]["objectives"]) == ("gradient", ["score", "loss"])
    curves = pd.read_csv(io.BytesIO(curves_data()), comment="#")
    assert sorted(set(curves["order"])) == ["loss", "random order", "score"] and len(curves) == 3 * 21


def test_pages_about_one_method_name_it_in_their_caption(new_app):
    at = new_app(PAGES["saliency"]).run()
    assert "Score gradient" in main_markdown(at)
    at.radio(key="objective").set_value("loss").run()
    assert "Loss gradient" in main_markdown(at) and "Score gradient" not in main_markdown(at)
    at.switch_page(PAGES["statistics"]).run()
    assert "Loss gradient" in main_markdown(at)
