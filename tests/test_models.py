"""Models: the embedded default offline, the torchvision path from a local cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from saliency_core.errors import InvalidInputError, ModelUnavailableError, UnknownModelError
from saliency_core.inputs.preprocessing import normalize
from saliency_core.models.loading import checkpoint_path, list_models, load_model, pick_device
from saliency_core.models.registry import DEFAULT_MODEL, REGISTRY, imagenet_categories

REQUIRED = ["squeezenet1_1", "resnet18", "resnet50", "vgg16", "mobilenet_v3_large",
            "efficientnet_b0", "convnext_tiny", "vit_b_16"]


def test_registry_has_the_default_and_every_required_torchvision_model():
    assert DEFAULT_MODEL == "efficientnet_lite0"
    assert set(REQUIRED) <= set(REGISTRY)


def test_embedded_model_is_frozen_in_eval_mode_with_1000_categories(lite0):
    assert lite0.name == "efficientnet_lite0"
    assert not lite0.model.training
    assert all(not p.requires_grad for p in lite0.model.parameters())
    assert len(lite0.categories) == 1000
    assert lite0.categories[967] == "espresso"
    assert lite0.device == torch.device("cpu")


@pytest.mark.parametrize(
    "sample, accepted",
    [("coffee", {967}), ("chelsea", set(range(281, 286)))],  # 281-285: the domestic cats
)
def test_embedded_model_offline_recognises_the_samples(lite0, sample, accepted):
    from saliency_core.inputs.samples import sample_by_name

    batch = lite0.preprocess(sample_by_name(sample).image)
    with torch.no_grad():
        top1 = lite0.model(batch.x).argmax(1).item()
    assert top1 in accepted, lite0.categories[top1]


def test_preprocess_gives_the_exact_crop_the_model_saw(lite0):
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)),
        Image.new("RGB", (1, 1), (10, 200, 30)),
        Image.new("RGB", (10000, 1), (255, 0, 0)),
        Image.new("RGB", (3, 700), (0, 0, 255)),
    ]
    batch = lite0.preprocess(images)
    assert batch.x.shape == (4, 3, 224, 224) and batch.x.dtype == torch.float32
    assert batch.display.shape == (4, 224, 224, 3) and batch.display.dtype == np.uint8
    torch.testing.assert_close(batch.x, normalize(batch.display, lite0.preprocessing))
    # mean = std = 0.5: pixel 255 -> 1.0, 0 -> -1.0
    assert batch.x[2, 0].min().item() == pytest.approx(1.0)
    assert batch.x[2, 1].max().item() == pytest.approx(-1.0)
    np.testing.assert_array_equal(batch.display[1], np.broadcast_to([10, 200, 30], (224, 224, 3)))


def test_list_models_reports_availability_and_where_to_put_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    statuses = {s.name: s for s in list_models()}
    assert set(statuses) == set(REGISTRY)
    assert statuses["efficientnet_lite0"].available
    sq = statuses["squeezenet1_1"]
    assert not sq.available
    assert str(tmp_path) in sq.reason and "squeezenet1_1-b8a52dc0.pth" in sq.reason


def test_torchvision_model_loads_offline_from_the_checkpoint_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = checkpoint_path("squeezenet1_1")
    assert path.startswith(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1(weights=None)
    torch.save(reference.state_dict(), path)

    assert {s.name: s for s in list_models()}["squeezenet1_1"].available
    loaded = load_model("squeezenet1_1", device="cpu", allow_download=False)
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    for (k, v), (k2, v2) in zip(loaded.model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert loaded.preprocessing.mean == (0.485, 0.456, 0.406)
    assert loaded.categories == imagenet_categories()


def test_missing_weights_say_which_file_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError) as info:
        load_model("resnet18", device="cpu", allow_download=False)
    assert "resnet18-f37072fd.pth" in str(info.value) and str(tmp_path) in str(info.value)


def test_failed_download_becomes_model_unavailable(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "1")
    monkeypatch.setenv("SALIENCY_WEIGHTS_URL", f"http://127.0.0.1:{port}/models")
    with pytest.raises(ModelUnavailableError) as info:
        load_model("squeezenet1_1", device="cpu")
    assert "squeezenet1_1-b8a52dc0.pth" in str(info.value) and "failed" in str(info.value)
    assert not os.listdir(os.path.dirname(checkpoint_path("squeezenet1_1")))  # no half file


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UnknownModelError) as info:
        load_model("resnet1000")
    assert "efficientnet_lite0" in str(info.value) and "vit_b_16" in str(info.value)


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto").type == expected
    with pytest.raises(InvalidInputError, match="Unknown device 'quantum'") as info:
        pick_device("quantum")
    assert not isinstance(info.value, UnknownModelError)  # a bad device is not a bad model name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_embedded_model_on_cuda():
    m = load_model(None, device="cuda")
    assert next(m.model.parameters()).device.type == "cuda"


def test_cpu_models_use_channels_last_and_give_the_same_maps(lite0):
    from saliency_core.core.gradients import compute_saliency

    conv = next(p for p in lite0.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    contiguous = load_model(None, device="cpu", channels_last=False)
    assert next(p for p in contiguous.model.parameters() if p.dim() == 4).is_contiguous()
    torch.manual_seed(0)
    X = torch.randn(2, 3, 224, 224)
    a = compute_saliency(lite0, X, [967, 281])
    b = compute_saliency(contiguous, X, [967, 281])
    for m in ("score", "loss"):
        # Same float32 maths, other summation order: equal to float32 rounding.
        scale = b.maps[m].max()
        torch.testing.assert_close(a.maps[m], b.maps[m], rtol=1e-3, atol=1e-5 * scale)
    assert lite0.module_for("fast") is lite0.model  # no separate fast variant on CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fast_mode_runs_a_channels_last_copy():
    m = load_model(None, device="cuda")
    assert next(p for p in m.model.parameters() if p.dim() == 4).is_contiguous()
    fast = m.module_for("fast")
    assert fast is not m.model and fast is m.module_for("fast")
    assert next(p for p in fast.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    assert m.module_for("exact") is m.model


def test_registry_matches_torchvision_weights_and_categories():
    from torchvision.models import get_model_weights

    for spec in REGISTRY.values():
        if spec.source != "torchvision":
            continue
        weights = get_model_weights(spec.name)[spec.weights.split(".")[1]]
        assert weights.url.endswith("/" + spec.checkpoint), spec.name
        assert list(weights.meta["categories"]) == imagenet_categories()
        t = weights.transforms()
        assert (t.resize_size[0], t.crop_size[0]) == (spec.preprocessing.resize, spec.preprocessing.crop), spec.name
        assert tuple(t.mean) == spec.preprocessing.mean and tuple(t.std) == spec.preprocessing.std
        assert t.interpolation.value == spec.preprocessing.interpolation, spec.name


def test_an_extreme_aspect_ratio_is_cropped_without_resizing_the_whole_image():
    import time

    from PIL import Image

    from saliency_core.inputs.preprocessing import MAX_RESIZED_PIXELS, crop_image

    prep = REGISTRY["efficientnet_lite0"].preprocessing
    start = time.perf_counter()
    crop = crop_image(Image.new("RGB", (100_000, 1), (200, 10, 10)), prep)  # would resize to 25,600,000 x 256
    assert time.perf_counter() - start < 2.0
    assert crop.size == (224, 224) and crop.getpixel((100, 100)) == (200, 10, 10)
    # Where both paths are feasible, the region path agrees with resizing the whole image.
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (20, 4000, 3), dtype=np.uint8))  # 256 x 51200 resized
    assert 51_200 * 256 > MAX_RESIZED_PIXELS
    whole = np.asarray(image.resize((51_200, 256), Image.Resampling.BICUBIC).crop((25_488, 16, 25_712, 240)))
    np.testing.assert_allclose(np.asarray(crop_image(image, prep)), whole, atol=8)


@pytest.mark.parametrize("size", [224, 97])
@pytest.mark.parametrize("threads", [1, 2])
def test_embedded_convolutions_pad_by_themselves_to_the_last_bit(lite0, size, threads):
    """The symmetric "same" pads folded into their convolutions (loading.fold_symmetric_padding): the same logits
    and input gradients, bit for bit, as the package's own module, which pads each activation first."""
    import copy

    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    from saliency_core.models.loading import fold_symmetric_padding, packaged_embedded

    stock = packaged_embedded().eval().to(memory_format=torch.channels_last)  # every pad a ZeroPad2d
    assert fold_symmetric_padding(copy.deepcopy(stock)) == 12  # the stride-1 depthwise convolutions
    pads = [m.static_padding for m in lite0.model.modules() if isinstance(m, Conv2dStaticSamePadding)]
    assert sum(isinstance(p, torch.nn.ZeroPad2d) for p in pads) == 5  # stride 2: one side only, kept
    torch.manual_seed(size)
    x = torch.randn(3, 3, size, size).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for name, module in (("stock", stock), ("folded", lite0.model)):
            xi = x.clone().requires_grad_(True)
            logits = module(xi)
            f = logits[:, 7].sum() - logits.logsumexp(1).sum()
            (grad,) = torch.autograd.grad(f, xi)
            out[name] = (logits.detach(), grad)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out["stock"][0], out["folded"][0])
    assert torch.equal(out["stock"][1], out["folded"][1])
