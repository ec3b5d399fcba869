"""The team's own models in the dashboard: listed in the picker, drawn on the Saliency page; broken ones explained;
and a torchvision model's weights downloaded on demand when chosen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pages import PAGES, charts, decode_plotly_array, heatmaps, main_markdown, texts

from saliency_core.inputs.samples import sample_by_name
from saliency_core.methods.registry import attribute
from saliency_core.models.loading import load_model
from tests.test_custom_models import CLASSES, TinyNet
from tests.test_downloads import random_checkpoint, serve_weights
from tests.test_export_archive import ordinary, planted_folder  # noqa: F401 -- fixtures


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """SALIENCY_MODELS_DIR with a TorchScript net (custom:tiny) and a sidecar with a bad field (custom:broken)."""
    from pages.ui import model_cache

    folder = tmp_path / "models"
    folder.mkdir()
    torch.manual_seed(0)
    torch.jit.script(TinyNet().eval()).save(str(folder / "tiny.pt"))
    sidecar = {"title": "Tiny colour net", "classes": CLASSES, "resize": 36, "crop": 32,
               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (folder / "tiny.json").write_text(json.dumps(sidecar))
    (folder / "broken.pt").write_bytes(b"not a model")
    (folder / "broken.json").write_text(json.dumps({**sidecar, "std": [0, 1, 1]}))
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(folder))
    model_cache.model_statuses.clear()
    yield folder
    model_cache.model_statuses.clear()


def test_a_custom_model_is_in_the_picker_and_draws_its_maps(new_app, models_dir):
    at = new_app(PAGES["saliency"]).run()
    options = at.selectbox(key="model").options
    assert "Tiny colour net" in options and "Tiny colour net — unavailable" not in options, options
    at.selectbox(key="model").set_value("custom:tiny").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "Tiny colour net" in main_markdown(at)
    (trace,) = heatmaps(charts(at)["heatmap"])
    z = decode_plotly_array(trace["z"])
    model = load_model("custom:tiny", "cpu")
    batch = model.preprocess(sample_by_name("coffee").image)
    want = attribute(model, batch.x, [-1], "gradient").maps["score"][0].numpy()  # no ImageNet label: top-1
    assert z.shape == want.shape == (32, 32) and want.max() > 0
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-7)
    assert at.query_params.get("model") in ("custom:tiny", ["custom:tiny"]), at.query_params
    at.switch_page("pages/methods.py").run()  # every page names the model by its own title, not the registry's
    assert not at.exception, [e.value for e in at.exception]
    assert "Tiny colour net" in main_markdown(at)


def test_a_broken_custom_model_says_what_is_wrong_and_keeps_the_current_one(new_app, models_dir):
    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="model").set_value("custom:broken").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = texts(at.error)
    assert "broken.json" in errors and "std must be three finite numbers > 0" in errors, errors
    assert "Still using EfficientNet-Lite0" in errors


@pytest.fixture
def downloads_from(tmp_path, monkeypatch):
    """``downloads_from(server)``: downloads on, into an empty torch cache, from a local ``serve_weights`` server
    (random weights: no checksum to match); the model list and loaded models are forgotten after the test."""
    from pages.ui import model_cache
    from saliency_core.models import weights_download as downloads

    def point_at(server) -> None:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "1")
        monkeypatch.setenv("SALIENCY_WEIGHTS_URL", server.url)
        monkeypatch.setattr(downloads, "sha256_prefix", lambda name: None)
        model_cache.model_statuses.clear()

    yield point_at
    model_cache.model_statuses.clear()
    model_cache._load_model.clear()


def test_choosing_an_uncached_model_downloads_its_weights_once(new_app, downloads_from):
    data = random_checkpoint()
    with serve_weights(files={"squeezenet1_1-b8a52dc0.pth": data}) as server:
        downloads_from(server)
        at = new_app(PAGES["saliency"]).run()
        assert "SqueezeNet 1.1 (the cs231n model) — download 5 MB" in at.selectbox(key="model").options
        at.selectbox(key="model").set_value("squeezenet1_1").run()
        assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
        assert server.requests == ["/models/squeezenet1_1-b8a52dc0.pth"]
        assert (Path(torch.hub.get_dir()) / "checkpoints" / "squeezenet1_1-b8a52dc0.pth").read_bytes() == data
        assert "SqueezeNet 1.1" in main_markdown(at)
        at.radio(key="objective").set_value("loss").run()
        assert server.requests == ["/models/squeezenet1_1-b8a52dc0.pth"]  # once


def test_a_replaced_model_file_or_sidecar_is_loaded_afresh(models_dir, tmp_path):
    from pages.ui import model_cache

    before = model_cache.get_model("custom:tiny")
    assert model_cache.get_model("custom:tiny") is before  # kept while its files stay as they are
    torch.manual_seed(1)
    replacement = TinyNet().eval()
    torch.jit.script(replacement).save(str(tmp_path / "new.pt"))
    (models_dir / "tiny.pt").replace(tmp_path / "old.pt")
    (tmp_path / "new.pt").replace(models_dir / "tiny.pt")  # how an admin replaces a file: a new one moved in
    after = model_cache.get_model("custom:tiny")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(after.model(x), replacement(x))
        assert not torch.allclose(before.model(x), after.model(x))
    assert after.key != before.key  # the key of every cached map and crop made with the model
    sidecar = json.loads((models_dir / "tiny.json").read_text())
    (models_dir / "tiny.json").write_text(json.dumps({**sidecar, "title": "Tiny colour net, retrained"}))
    assert model_cache.get_model("custom:tiny").spec.title == "Tiny colour net, retrained"
    assert model_cache.get_model("efficientnet_lite0") is model_cache.get_model("efficientnet_lite0")


@pytest.fixture
def failures_forgotten():
    """The dashboard's memory of failed models is process-wide: start and end each test without one."""
    from pages.ui import model_cache

    model_cache._model_failures.clear()
    yield
    model_cache._model_failures.clear()


def test_a_failed_download_is_tried_again_only_on_try_again(new_app, downloads_from, failures_forgotten):

    name = "squeezenet1_1-b8a52dc0.pth"
    with serve_weights() as server:  # nothing to serve yet: HTTP 404
        downloads_from(server)
        at = new_app(PAGES["saliency"]).run()
        at.selectbox(key="model").set_value("squeezenet1_1").run()
        assert not at.exception, [e.value for e in at.exception]
        errors = texts(at.error)
        assert "HTTP 404" in errors and "Still using EfficientNet-Lite0" in errors, errors
        assert len(server.requests) == 1
        at.radio(key="objective").set_value("loss").run()  # any click reruns the page
        at.radio(key="objective").set_value("score").run()
        assert texts(at.error) == errors  # the picker still says what is wrong
        assert len(server.requests) == 1  # without asking the server again
        at.button(key="retry_model").click().run()
        assert len(server.requests) == 2 and "HTTP 404" in texts(at.error)
        server.files[name] = random_checkpoint()
        at.button(key="retry_model").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert len(server.requests) == 3 and "SqueezeNet 1.1" in main_markdown(at)


def test_a_custom_model_that_fails_to_load_is_not_rebuilt_on_every_click(new_app, models_dir, monkeypatch,
                                                                         failures_forgotten):
    from saliency_core.models import custom_model_loading

    (models_dir / "corrupt.pt").write_bytes(b"not a model")  # its sidecar is fine: it fails when built
    sidecar = json.loads((models_dir / "tiny.json").read_text())
    (models_dir / "corrupt.json").write_text(json.dumps({**sidecar, "title": "Corrupt net"}))
    builds: list[str] = []
    build = custom_model_loading.build

    def counting(model):
        builds.append(model.name)
        return build(model)

    monkeypatch.setattr(custom_model_loading, "build", counting)
    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="model").set_value("custom:corrupt").run()
    errors = texts(at.error)
    assert "corrupt.pt: not a TorchScript file" in errors and "Still using EfficientNet-Lite0" in errors, errors
    at.radio(key="objective").set_value("loss").run()
    assert texts(at.error) == errors and builds == ["custom:corrupt"]
    at.button(key="retry_model").click().run()
    assert texts(at.error) == errors and builds == ["custom:corrupt"] * 2
    assert at.selectbox(key="model").value == "efficientnet_lite0"  # the picker shows the model in use
    (models_dir / "corrupt.pt").write_bytes((models_dir / "tiny.pt").read_bytes())  # the admin fixes the file
    at.selectbox(key="model").set_value("custom:corrupt").run()  # chosen again: a new file is tried at once
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert builds == ["custom:corrupt"] * 3 and "Corrupt net" in main_markdown(at)


def test_a_link_with_a_target_the_model_lacks_says_so_and_uses_the_automatic_target(new_app, models_dir):
    at = new_app(PAGES["saliency"], model="custom:tiny", target="500", objective="loss").run()
    assert not at.exception, [e.value for e in at.exception]
    (notice,) = [w.value for w in at.warning]
    assert notice.startswith("This link could not be followed in full") and (
        "**target=500** is not a class of Tiny colour net (0 to 3); showing the automatic target instead") in notice
    assert at.selectbox(key="target").value == -1 and len(heatmaps(charts(at)["heatmap"])) == 1
    assert "target" not in at.query_params and at.query_params.get("objective") in ("loss", ["loss"])
    at.run()
    assert not at.warning  # said once


@pytest.mark.parametrize(("target", "note"), [
    (968, "Tiny colour net has no class 968 · cup (its 4 classes are 0 to 3)"),  # beyond its four classes
    (2, "Tiny colour net has no class 2 · great white shark"),  # its class 2 is "blue": another class
])
def test_choosing_another_model_drops_an_explicit_class_it_does_not_have(new_app, models_dir, target, note):
    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="target").set_value(target).run()
    at.selectbox(key="model").set_value("custom:tiny").run()
    assert not at.exception, [e.value for e in at.exception]
    assert note in texts(at.info), texts(at.info)
    assert at.selectbox(key="target").value == -1 and not at.error and not at.warning
    assert "(top-1)" in main_markdown(at)


def test_a_link_may_name_a_class_beyond_imagenets_for_a_model_that_has_it(new_app, models_dir):
    class Wide(torch.nn.Module):  # 1500 classes
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, 1500)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean(dim=(2, 3)))

    torch.jit.script(Wide().eval()).save(str(models_dir / "wide.pt"))
    sidecar = json.loads((models_dir / "tiny.json").read_text())
    classes = [f"class {i}" for i in range(1500)]
    (models_dir / "wide.json").write_text(json.dumps({**sidecar, "title": "Wide net", "classes": classes}))
    at = new_app(PAGES["saliency"], model="custom:wide", target="1234").run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert at.selectbox(key="target").value == 1234 and "target 1234 class 1234 (chosen)" in main_markdown(at)


def test_the_target_pickers_text_from_another_models_list_is_read_as_its_class_or_dropped():
    """In a browser, after another model is chosen the target picker sends back the old list's text (Streamlit
    matches a picker's value by its text; tests/app/test_browser_own_models.py goes through it): "Auto: …" stays
    automatic, "281 · tabby" stays class 281 on another ImageNet model, "2 · blue" (the tiny net's class) is not
    ImageNet's class 2, and a link's target=500 is not one of the tiny net's four classes."""
    from pages.ui.sidebar import kept_target, target_index
    from saliency_core.models.registry import imagenet_categories

    imagenet = imagenet_categories()
    assert [target_index(v) for v in (5, -1, "281 · tabby", "Auto: top-1 prediction",
                                      "Auto: true label (967 · espresso)", "garbage")] == [5, -1, 281, -1, -1, -1]
    assert kept_target("Auto: top-1 prediction", imagenet) == (-1, None)
    assert kept_target(f"281 · {imagenet[281]}", imagenet) == (281, None)
    assert kept_target("2 · blue", imagenet) == (-1, "2 · blue")
    assert kept_target("2 · blue", CLASSES) == (2, None)
    assert kept_target(500, CLASSES) == (-1, "500") and kept_target(3, CLASSES) == (3, None)
    # After a change of model the number is not enough: class 2 was a shark, the tiny net's class 2 is blue.
    assert kept_target(2, CLASSES, f"2 · {imagenet[2]}") == (-1, f"2 · {imagenet[2]}")
    assert kept_target(281, imagenet, f"281 · {imagenet[281]}") == (281, None)  # one ImageNet model to another


def test_the_objective_pickers_text_from_another_methods_labels_is_read_as_its_objective():
    """The Objective picker's labels change with the method; a browser then sends back the old label."""
    from pages.ui.method_params import map_title
    from pages.ui.sidebar import objective_of

    assert objective_of("loss") == "loss" and objective_of("score") == "score"
    assert objective_of(map_title("gradient", "loss")) == "loss"
    assert objective_of(map_title("smoothgrad", "loss")) == "loss"
    assert objective_of(map_title("guided_backprop", "score")) == "score"
    assert objective_of("something else") == "score" and objective_of(None) == "score"




def test_the_randomisation_checks_run_on_a_torchscript_model(new_app, models_dir):
    # The Faithfulness page's cascade and the Methods page's ranking copy the model and re-initialise it:
    # a ScriptModule refuses requires_grad_, so its parameters are frozen one by one.
    at = new_app(PAGES["faithfulness"], model="custom:tiny", method="gradient").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    similarity = charts(at)["similarity"]
    assert len(similarity["data"]) == 4  # score and loss, Spearman and SSIM
    assert all(decode_plotly_array(t["x"]).tolist() == [0, 1, 2, 3] for t in similarity["data"])  # 3 layers + original
    at = new_app(PAGES["methods"], model="custom:tiny", methods="gradient,smoothgrad").run()
    at.toggle(key="methods_rank").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    (ranking,) = [d.value for d in at.dataframe if "rank" in d.value.columns]
    maps = ranking[ranking["map"] != "random order"]
    assert len(maps) == 4 and maps["randomised_spearman"].notna().all(), ranking  # two methods x score and loss


def test_the_gallery_says_why_grad_cam_cannot_run_on_a_torchscript_model(new_app, models_dir):
    # Grad-CAM is not offered for a TorchScript model (pages/ui/method_params.py: its needs); a link that asks
    # for it says why and shows the plain gradient's maps.
    at = new_app(PAGES["gallery"], model="custom:tiny", method="grad_cam").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)
    assert "method=grad_cam can't run on Tiny colour net: it needs a convolutional layer" in texts(at.warning)
    assert "gallery_0" in charts(at) and at.selectbox(key="method").value == "gradient"


def test_the_gallery_does_not_use_imagenet_labels_for_a_model_with_its_own_classes(new_app, models_dir):
    at = new_app(PAGES["gallery"], model="custom:tiny").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    shown = main_markdown(at) + "\n" + texts(at.caption)
    assert "Targets are the true labels" not in shown and "classified correctly" not in shown, shown
    assert "Targets are the model's top-1 classes" in shown, shown
    assert len(heatmaps(charts(at)["gallery_0"])) == 2 * 5
    at = new_app(PAGES["gallery"]).run()  # an ImageNet model: the samples' labels are the targets
    shown = main_markdown(at) + "\n" + texts(at.caption)
    assert "Targets are the true labels" in shown and "of 5 images classified correctly by" in shown, shown


def test_a_link_to_a_planted_export_archive_loads_it_without_running_it(new_app, planted_folder):  # noqa: F811
    """The probe's .pt2 (a nested program whose legacy weights are a pickle), opened from a shared link."""
    from pages.ui import model_cache

    _, marker = planted_folder
    model_cache.model_statuses.clear()
    try:
        at = new_app(PAGES["saliency"], model="custom:tiny").run()
    finally:
        model_cache.model_statuses.clear()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "Tiny colour net" in main_markdown(at)
    assert not marker.exists()


@pytest.fixture
def treacherous_dir(tmp_path, monkeypatch):
    """SALIENCY_MODELS_DIR with models that pass the load check and fail on real images (custom:raises, custom:nan,
    custom:wide: tests/test_model_output.py), and custom:large, a 1024 px crop."""
    from pages.ui import model_cache
    from tests.test_model_output import SIDECAR, write_treacherous

    folder = write_treacherous(tmp_path / "models")
    torch.manual_seed(0)
    torch.jit.script(TinyNet().eval()).save(str(folder / "large.pt"))
    (folder / "large.json").write_text(json.dumps({**SIDECAR, "title": "Large crop net", "resize": 1024,
                                                   "crop": 1024}))
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(folder))
    model_cache.model_statuses.clear()
    yield folder
    model_cache.model_statuses.clear()


@pytest.mark.parametrize("stem", ["raises", "nan", "wide"])
def test_a_model_that_fails_on_real_images_is_named_in_an_error_on_every_page(new_app, treacherous_dir, stem):
    from tests.test_model_output import TREACHEROUS, title

    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="model").set_value(f"custom:{stem}").run()  # it loads: black and grey images are fine
    for page in ("saliency", "methods", "faithfulness"):
        if page != "saliency":
            at.switch_page(PAGES[page]).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        errors = texts(at.error)
        assert f"{title(stem)} (custom:{stem})" in errors and TREACHEROUS[stem][1] in errors, (page, errors)
        assert not charts(at), page  # nothing drawn from its logits


def test_a_1024_px_crop_is_sent_to_the_browser_as_512_px_block_means(new_app, treacherous_dir):
    at = new_app(PAGES["saliency"]).run()
    at.selectbox(key="model").set_value("custom:large").run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    spec = next(el.proto.spec for el in at.get("plotly_chart") if el.key == "heatmap")
    assert len(spec) < 8_000_000  # 27 MB before: the full 1024 x 1024 map with its per-channel hover
    (trace,) = heatmaps(json.loads(spec))
    assert decode_plotly_array(trace["z"]).shape == (512, 512) and trace["dx"] == 2
    assert "2×2 block" in trace["hovertemplate"]
    assert "Drawn as means of 2×2 pixel blocks" in texts(at.caption) and "1024×1024 map" in texts(at.caption)


@pytest.fixture
def googlenet_dir(tmp_path, monkeypatch):
    """custom:googlenet, a torchvision GoogLeNet state dict: its auxiliary classifiers (aux1, aux2) hold
    convolutions that don't run in eval mode, so they never reach the output."""
    import torchvision

    from pages.ui import model_cache

    folder = tmp_path / "models"
    folder.mkdir()
    torch.manual_seed(0)
    net = torchvision.models.get_model("googlenet", weights=None, num_classes=3, init_weights=False).eval()
    torch.save(net.state_dict(), folder / "googlenet.pth")
    (folder / "googlenet.json").write_text(json.dumps({
        "title": "GoogLeNet", "classes": ["a", "b", "c"], "resize": 64, "crop": 64, "mean": [0.5] * 3,
        "std": [0.25] * 3, "architecture": "googlenet", "cam_layer": "inception5b"}))
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(folder))
    model_cache.model_statuses.clear()
    yield folder
    model_cache.model_statuses.clear()


def test_grad_cam_offers_only_layers_that_reach_the_output(new_app, googlenet_dir):
    at = new_app(PAGES["saliency"], model="custom:googlenet", method="grad_cam").run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    (layer,) = [w for w in at.sidebar.get("selectbox") if w.key == "param.grad_cam.layer"]
    assert [o for o in layer.options if "aux" in o] == [], layer.options  # 2 of its 59 convolutions never run
    assert len(layer.options) == 58 and any("inception5b.branch4.1.conv" in o for o in layer.options)
    linked = new_app(PAGES["saliency"], model="custom:googlenet", method="grad_cam", layer="aux1.conv.conv").run()
    assert not linked.exception and not linked.error
    notices = texts(linked.warning)
    assert "layer=aux1.conv.conv" in notices, notices  # a link naming one says so and uses the default layer
    assert "heatmap" in charts(linked)
