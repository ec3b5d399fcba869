"""What the perturbation methods' tests share: a small CNN, smooth images, the objectives as oracles see them,
the embedded model on a small image, and the small CNN saved as a TorchScript and a torch.export model the way
the team's own models are served (``SALIENCY_MODELS_DIR``)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from saliency_core import attribute
from saliency_core.methods.registry import ATTRIBUTION_METHODS

OBJECTIVES = ("score", "loss")
CLASSES = ["red", "green", "blue", "grey", "other"]
#: The relative tolerance where a method and its oracle compute the same definition: the largest difference
#: over the largest value of the oracle's attribution.
RTOL = 1e-5


class SmallCNN(torch.nn.Module):
    """Conv-ReLU-conv-ReLU-pool-linear, 5 classes, fixed random weights."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 5))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_cnn() -> SmallCNN:
    net = SmallCNN().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def smooth_images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    """(n, 3, size, size) colour blobs in about [-2, 2]: smooth enough for SLIC and quick shift to find regions."""
    coarse = torch.randn(n, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def oracle_function(model: Callable[[torch.Tensor], torch.Tensor], objective: str):
    """The function an oracle attributes, with ``target=y``: the logits (score, s_y) or their log-softmax
    (loss, as −L = log p_y, the sign every perturbation method declares)."""
    if objective == "score":
        return model
    return lambda x: torch.log_softmax(model(x), dim=1)


def assert_matches(got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL) -> None:
    """``got`` equals ``want`` to ``rtol`` of ``want``'s largest absolute value, and that value is not 0."""
    scale = float(want.abs().max())
    assert scale > 0, "the oracle's attribution is zero everywhere: the comparison would prove nothing"
    worst = float((got.double() - want.double()).abs().max())
    assert worst <= rtol * scale, f"largest difference {worst:.3g}, {worst / scale:.3g} of the largest {scale:.3g}"


def small_coffee(lite0, size: int = 64) -> torch.Tensor:
    """The coffee sample through the embedded model's preprocessing, resized to ``size`` px: (1, 3, size, size)."""
    from saliency_core.inputs.samples import sample_by_name

    x = lite0.preprocess(sample_by_name("coffee").image).x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def save_own_models(folder: Path, net: torch.nn.Module, crop: int = 32) -> dict[str, str]:
    """``net`` saved in ``folder`` as TorchScript (traced) and torch.export, each with a sidecar (``crop`` px);
    the models' names as the dashboard lists them."""
    x = torch.zeros(2, 3, crop, crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; teams still send it
        torch.jit.trace(net, x).save(str(folder / "perturb_traced.pt"))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "perturb_exported.pt2"))
    sidecar = {"title": "Small CNN", "classes": CLASSES, "resize": crop + crop // 8, "crop": crop,
               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    for stem in ("perturb_traced", "perturb_exported"):
        (folder / f"{stem}.json").write_text(json.dumps(sidecar))
    return {"torchscript": "custom:perturb_traced", "export": "custom:perturb_exported"}


@pytest.fixture(scope="module")
def own_models(tmp_path_factory: pytest.TempPathFactory):
    """``load(kind)``: the small CNN saved and loaded as the team's own model ("torchscript" or "export")."""
    from saliency_core.models.loading import load_model

    folder = tmp_path_factory.mktemp("own-models")
    names = save_own_models(folder, small_cnn())
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
        mp.setenv("SALIENCY_MODELS_DIR", str(folder))
        loaded = {kind: load_model(name, "cpu") for kind, name in names.items()}
    return loaded.__getitem__


def check_on_own_models(own_models, method: str, params: dict) -> None:
    """On the TorchScript and the torch.export copy of the small CNN, through :func:`attribute`, the method gives
    the in-memory model's attributions (to 1e-5), for both objectives. The in-memory model is given the same
    sidecar (its normalisation is what superpixels are cut from)."""
    from saliency_core.models.registry import LoadedModel

    x = smooth_images(2, 32, seed=4)
    for kind in ("torchscript", "export"):
        model = own_models(kind)
        reference = LoadedModel("in-memory", model.spec, small_cnn(), model.categories, model.device)
        want = attribute(reference, x, [0, 2], method, OBJECTIVES, **params)
        if kind == "torchscript":
            assert isinstance(model.model, torch.jit.ScriptModule)
        got = attribute(model, x, [0, 2], method, OBJECTIVES, **params)
        for obj in OBJECTIVES:
            assert_matches(got.attributions[obj], want.attributions[obj])
            assert got.maps[obj].shape == (2, 32, 32) and float(got.maps[obj].max()) > 0


def check_progress(method: str, params: dict) -> None:
    """Progress is reported after every chunk of rows, up to the method's declared rows per image, and a callback
    that raises (a dashboard whose session left) stops the work at once."""
    x = smooth_images(2, 32)
    calls: list[tuple[int, int]] = []
    attribute(small_cnn(), x, [1, 3], method, OBJECTIVES, max_batch=5, progress=lambda d, t: calls.append((d, t)),
              **params)
    total = 2 * (ATTRIBUTION_METHODS[method].cost(params, (32, 32)).forward - 1)  # the clean pass is not reported
    assert calls == [(min(stop, total), total) for stop in range(5, total + 5, 5)]

    class Gone(Exception):
        pass

    seen: list[int] = []

    def leave(done: int, total: int) -> None:
        seen.append(done)
        raise Gone

    with pytest.raises(Gone):
        attribute(small_cnn(), x, [1, 3], method, OBJECTIVES, max_batch=5, progress=leave, **params)
    assert seen == [5]
