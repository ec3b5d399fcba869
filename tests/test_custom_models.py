"""The team's own classifiers (SALIENCY_MODELS_DIR): discovery, refusals with clear messages, identical maps.

The folder is built on the fly: a 3-layer CNN trained for a few steps on
synthetic 32 x 32 images of 4 classes, saved as TorchScript, as a
torch.export program and (for a torchvision architecture) as a state dict.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from saliency_core.errors import InvalidInputError, ModelUnavailableError, UnknownModelError
from saliency_core.evaluation import randomized_model, sanity
from saliency_core.methods.registry import attribute
from saliency_core.models import custom_models
from saliency_core.models.loading import list_models, load_model
from saliency_core.models.registry import REGISTRY, get_spec, model_names

CLASSES = ["red", "green", "blue", "grey"]
SIDECAR = {"title": "Tiny colour net", "classes": CLASSES, "resize": 36, "crop": 32,
           "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def synthetic(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class is their dominant colour (red, green, blue, grey)."""
    y = torch.randint(0, 4, (n,), generator=generator)
    x = torch.randn(n, 3, 32, 32, generator=generator) * 0.5
    for c in range(3):
        x[y == c, c] += 1.5
    return x, y


@pytest.fixture(scope="module")
def trained() -> TinyNet:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(20):
        x, y = synthetic(32, g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def write_sidecar(folder: Path, stem: str, suffix: str = ".json", **changes) -> None:
    data = {**SIDECAR, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    if suffix == ".json":
        (folder / f"{stem}.json").write_text(json.dumps(data))
    else:
        lines = [f"{k} = {json.dumps(v)}" for k, v in data.items()]
        (folder / f"{stem}.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def source_folder(trained, tmp_path_factory) -> Path:
    """The three good models: TorchScript, torch.export (dynamic batch) and a torchvision state dict."""
    folder = tmp_path_factory.mktemp("models")
    torch.jit.script(trained).save(str(folder / "scripted.pt"))
    write_sidecar(folder, "scripted")
    batch = torch.export.Dim("batch")
    program = torch.export.export(trained, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "exported.pt2"))
    (folder / "colours.txt").write_text("\n".join(CLASSES) + "\n")
    write_sidecar(folder, "exported", ".toml", classes="colours.txt", cam_layer="features.3")
    torch.manual_seed(1)
    import torchvision

    squeeze = torchvision.models.squeezenet1_1(num_classes=4).eval()
    torch.save(squeeze.state_dict(), folder / "squeeze.pth")
    write_sidecar(folder, "squeeze", architecture="squeezenet1_1", cam_layer="features.12", resize=64, crop=64)
    return folder


@pytest.fixture
def models_dir(source_folder, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the good folder as SALIENCY_MODELS_DIR (tests may add broken files to it)."""
    folder = tmp_path / "models"
    shutil.copytree(source_folder, folder)
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(folder))
    return folder


def test_custom_models_are_listed_beside_the_built_in_ones(models_dir):
    names = model_names()
    assert names[:len(REGISTRY)] == list(REGISTRY)
    assert set(names[len(REGISTRY):]) == {"custom:scripted", "custom:exported", "custom:squeeze"}
    status = {s.name: s for s in list_models()}
    assert status["custom:scripted"].available and status["custom:scripted"].title == "Tiny colour net"
    assert "4 classes" in status["custom:exported"].reason


def test_a_custom_name_never_shadows_a_registry_name(models_dir):
    shutil.copy(models_dir / "scripted.pt", models_dir / "resnet18.pt")
    write_sidecar(models_dir, "resnet18")
    assert "custom:resnet18" in model_names()
    assert get_spec("resnet18") is REGISTRY["resnet18"]
    assert get_spec("custom:resnet18").source == "custom"
    with pytest.raises(UnknownModelError, match="custom:scripted"):
        load_model("custom:nothing", "cpu")


@pytest.mark.parametrize("name", ["custom:scripted", "custom:exported"])
def test_maps_equal_those_of_the_in_memory_model(models_dir, trained, name):
    loaded = load_model(name, "cpu", channels_last=False)
    assert loaded.categories == CLASSES and loaded.preprocessing.crop == 32
    assert not any(m.training for m in loaded.model.modules())
    x, _ = synthetic(3, torch.Generator().manual_seed(5))
    y = [0, 2, -1]
    methods = [("gradient", {}), ("integrated_gradients", {"steps": 8})]
    if name == "custom:exported":
        methods.append(("grad_cam", {}))  # the sidecar's cam_layer
    for method, params in methods:
        got = attribute(loaded, x, y, method, **params)
        ref_params = {"layer": "features.3"} if method == "grad_cam" else params
        if method == "integrated_gradients":
            ref_params = {**params, "baseline": "dataset_mean"}
            got = attribute(loaded, x, y, method, baseline="dataset_mean", **params)
        want = attribute(trained, x, y, method, **ref_params)
        for obj in ("score", "loss"):
            scale = float(want.maps[obj].max())
            torch.testing.assert_close(got.maps[obj], want.maps[obj], rtol=1e-5, atol=1e-5 * scale)
        assert float(want.maps["score"].max()) > 0


def test_state_dict_model_loads_into_its_torchvision_architecture(models_dir):
    import torchvision

    loaded = load_model("custom:squeeze", "cpu", channels_last=False)
    torch.manual_seed(1)
    reference = torchvision.models.squeezenet1_1(num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    for method, params in [("gradient", {}), ("grad_cam", {})]:
        got = attribute(loaded, x, [1], method, **params)
        want = attribute(reference, x, [1], method, **({"layer": "features.12"} if method == "grad_cam" else {}))
        torch.testing.assert_close(got.maps["score"], want.maps["score"], rtol=1e-5, atol=1e-6)


def test_methods_that_cannot_work_on_a_compiled_model_say_so(models_dir):
    scripted = load_model("custom:scripted", "cpu")
    exported = load_model("custom:exported", "cpu")
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="TorchScript"):
        attribute(scripted, x, [0], "grad_cam", layer="features.3")
    for model in (scripted, exported):
        with pytest.raises(InvalidInputError, match="guided backprop"):
            attribute(model, x, [0], "guided_backprop")


@pytest.mark.parametrize("name", ["custom:scripted", "custom:exported"])
def test_the_randomisation_check_runs_on_compiled_models(models_dir, name):
    # A TorchScript module refuses requires_grad_ and an exported graph refuses .eval(): the copy is frozen
    # parameter by parameter, and its layers are re-initialised like an eager model's.
    loaded = load_model(name, "cpu", channels_last=False)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    x, _ = synthetic(2, torch.Generator().manual_seed(3))
    result = sanity.cascading_randomization(loaded, x, [-1, -1], max_stages=None)
    assert result.stages == ["original", "head.2", "features.3", "features.0"]
    maps = result.maps["score"]
    for k in range(1, len(result.stages)):
        assert not np.allclose(maps[k], maps[0]), result.stages[k]
    last = result.similarity[result.similarity["stage_index"] == 3]["spearman"]
    assert (last < 0.9).all(), last
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # the shared model is untouched
    work = randomized_model.fully_randomized_model(loaded)
    assert not torch.equal(work.model.state_dict()["head.2.weight"], before["head.2.weight"])
    assert attribute(work, x, [0, 1], "gradient").maps["score"].shape == (2, 32, 32)


def problem(models_dir: Path, name: str) -> str:
    """The message the picker shows for ``name``: from the listing, else from loading it."""
    status = {s.name: s for s in list_models()}[name]
    if not status.available:
        return status.reason
    with pytest.raises(ModelUnavailableError) as info:
        load_model(name, "cpu")
    return str(info.value)


class Pickled:
    def __reduce__(self):  # what an unsafe loader would run
        return (os.system, ("touch /tmp/saliency-pwned",))


def test_files_that_are_not_what_they_claim_are_refused_without_unpickling(models_dir, trained):
    (models_dir / "text.pt").write_text("hello")
    write_sidecar(models_dir, "text")
    (models_dir / "evil.pth").write_bytes(pickle.dumps(Pickled()))
    write_sidecar(models_dir, "evil", architecture="squeezenet1_1")
    torch.save(trained, models_dir / "whole.pth")  # a whole pickled module, not a state dict
    write_sidecar(models_dir, "whole", architecture="squeezenet1_1")
    shutil.copy(models_dir / "scripted.pt", models_dir / "swapped.pt2")
    write_sidecar(models_dir, "swapped")
    torch.save(trained.state_dict(), models_dir / "sd.pt")  # a state dict named like TorchScript
    write_sidecar(models_dir, "sd")
    assert "not a TorchScript file" in problem(models_dir, "custom:text")
    assert "weights_only=True" in problem(models_dir, "custom:evil")
    assert "weights_only=True" in problem(models_dir, "custom:whole")
    assert "not a torch.export program" in problem(models_dir, "custom:swapped")
    assert "sd.pt: not a TorchScript file" in problem(models_dir, "custom:sd")
    assert not os.path.exists("/tmp/saliency-pwned")


def test_an_export_archive_with_pickled_members_is_refused(models_dir):
    import zipfile

    src = models_dir / "exported.pt2"
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = next(n for n in members if n.endswith("model_weights_config.json"))
    data = json.loads(members[config])
    first = next(iter(data["config"].values()))
    first["use_pickle"] = True
    members[config] = json.dumps(data).encode()
    with zipfile.ZipFile(models_dir / "pickly.pt2", "w") as z:
        for n, b in members.items():
            z.writestr(n.replace("exported/", "pickly/", 1), b)
    write_sidecar(models_dir, "pickly")
    assert "pickled object" in problem(models_dir, "custom:pickly")


def test_outputs_that_do_not_fit_the_classes_are_refused(models_dir, trained):
    write_sidecar(models_dir, "scripted", classes=CLASSES[:3])
    assert "returns 4 logits per image but its sidecar names 3 classes" in problem(models_dir, "custom:scripted")

    class Features(nn.Module):
        def forward(self, x):
            return x.mean(dim=1)  # (N, H, W), not logits

    torch.jit.script(Features()).save(str(models_dir / "maps.pt"))
    write_sidecar(models_dir, "maps")
    assert "expected (N, C) float logits" in problem(models_dir, "custom:maps")

    class Training(nn.Module):  # BatchNorm in training mode: logits depend on the batch
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.net(x)

    training = Training().train()
    program = torch.export.export(training, (torch.randn(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(models_dir / "training.pt2"))
    write_sidecar(models_dir, "training")
    assert "training mode" in problem(models_dir, "custom:training")

    fixed = torch.export.export(trained, (torch.zeros(1, 3, 32, 32),))  # batch size 1 baked in
    torch.export.save(fixed, str(models_dir / "fixed.pt2"))
    write_sidecar(models_dir, "fixed")
    assert "the batch size must not be fixed" in problem(models_dir, "custom:fixed")


@pytest.mark.parametrize("changes, message", [
    ({"classes": None}, "the field classes is missing"),
    ({"crop": "big"}, "crop must be an integer"),
    # One gradient pass of one 2048 px row can take 11 GB (custom_models.MAX_CROP); 2048 was allowed before.
    ({"resize": 2048, "crop": 2048}, "crop must be an integer from 8 to 1024 (one pass of a larger crop takes "),
    ({"resize": 4096}, "resize must be an integer from 8 to 2048"),
    ({"std": [1, 0, 1]}, "std must be three finite numbers > 0"),
    ({"interpolation": "lanczos"}, "interpolation must be"),
    ({"classes": "missing.txt"}, "missing.txt is missing"),
    ({"classes": "../outside.txt"}, "classes must be a list of names"),
    ({"classes": []}, "non-empty list"),
    ({"colour": 1}, "unknown field(s) colour"),
    ({"cam_layer": "features.3"}, "cam_layer can't be used with TorchScript"),
    ({"architecture": "resnet18"}, "architecture is for state dicts only"),
])
def test_sidecars_with_bad_or_missing_fields_name_the_field(models_dir, changes, message):
    write_sidecar(models_dir, "scripted", **changes)
    status = {s.name: s for s in list_models()}["custom:scripted"]
    assert not status.available and "scripted.json" in status.reason and message in status.reason, status.reason
    with pytest.raises(ModelUnavailableError, match=r"scripted\.json"):
        load_model("custom:scripted", "cpu")


def test_broken_json_and_lonely_or_foreign_files(models_dir):
    (models_dir / "scripted.json").write_text("{not json")
    (models_dir / "lonely.pt").write_bytes(b"x")
    (models_dir / "pickled.pkl").write_bytes(b"x")
    write_sidecar(models_dir, "pickled")
    (models_dir / "nofile.json").write_text("{}")
    status = {s.name: s for s in list_models()}
    assert "scripted.json: not valid JSON" in status["custom:scripted"].reason
    assert "lonely.pt: no sidecar" in status["custom:lonely"].reason
    assert "pickled.pkl: .pkl is not a model format" in status["custom:pickled"].reason
    assert "nofile.json: no model file" in status["custom:nofile"].reason
    assert not any(status[n].available for n in ("custom:scripted", "custom:lonely", "custom:pickled"))


def test_symlinks_out_of_the_folder_are_refused(models_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(models_dir / "scripted.pt", outside / "net.pt")
    (outside / "classes.txt").write_text("a\nb\nc\nd\n")
    os.symlink(outside / "net.pt", models_dir / "linked.pt")
    write_sidecar(models_dir, "linked")
    os.symlink(outside / "classes.txt", models_dir / "linkedclasses.txt")
    write_sidecar(models_dir, "scripted", classes="linkedclasses.txt")
    status = {s.name: s for s in list_models()}
    assert "linked.pt: a link to" in status["custom:linked"].reason and "outside the models folder" in (
        status["custom:linked"].reason)
    assert "outside the models folder" in status["custom:scripted"].reason
    # A link that stays inside the folder is fine.
    os.symlink(models_dir / "exported.pt2", models_dir / "alias.pt2")
    write_sidecar(models_dir, "alias")
    assert load_model("custom:alias", "cpu").categories == CLASSES


def test_custom_discovery_is_off_without_the_setting(monkeypatch):
    monkeypatch.delenv("SALIENCY_MODELS_DIR", raising=False)
    assert custom_models.discover() == {}
    assert model_names() == list(REGISTRY)


def test_the_batch_job_accepts_a_custom_model(models_dir, tmp_path):
    import numpy as np

    from saliency_core.jobs import batch
    from saliency_core.jobs.results import load_results

    rng = np.random.default_rng(0)
    images = tmp_path / "images.npz"
    np.savez(images, X=rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8), y=np.array([0, 1, 2]))
    args = ["--images", str(images), "--out", str(tmp_path / "out"), "--model", "custom:exported", "--device", "cpu",
            "--workers", "0", "--no-progress", "--maps", "gradient:score,grad_cam:score"]
    assert batch.parse_args(args).model == "custom:exported"
    assert batch.main(args) == 0
    written = load_results(tmp_path / "out")
    assert len(written.results) == 3 and set(written.results["model"]) == {"custom:exported"}


def test_an_unreadable_sidecar_is_a_broken_entry_not_a_traceback(tmp_path, monkeypatch):
    from saliency_core.models import custom_models

    (tmp_path / "locked.pt").write_bytes(b"x")
    (tmp_path / "locked.json").write_text("{}")

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(custom_models, "_read_sidecar", unreadable)
    (entry,) = custom_models.discover(tmp_path).values()
    assert entry.problem == "locked.json: can't be read (Permission denied)"


def test_discovery_parses_sidecars_again_only_when_the_folder_changes(models_dir, monkeypatch):
    parsed: list[str] = []
    read_sidecar = custom_models._read_sidecar

    def counting(root, name, model, sidecar):
        parsed.append(sidecar.name)
        return read_sidecar(root, name, model, sidecar)

    monkeypatch.setattr(custom_models, "_read_sidecar", counting)
    first = custom_models.discover()
    assert sorted(parsed) == ["exported.toml", "scripted.json", "squeeze.json"]
    parsed.clear()
    assert custom_models.discover() == first and model_names()[len(REGISTRY):] == list(first)
    assert parsed == []  # nothing changed: no sidecar read again
    write_sidecar(models_dir, "scripted", title="Tiny colour NET")  # same size: only its mtime tells
    assert custom_models.discover()["custom:scripted"].title == "Tiny colour NET"
    assert sorted(parsed) == ["exported.toml", "scripted.json", "squeeze.json"]
    (models_dir / "colours.txt").write_text("a\nb\nc\nd\n")  # a class-name file is part of the listing too
    assert custom_models.discover()["custom:exported"].classes == ("a", "b", "c", "d")


def test_a_custom_models_fingerprint_changes_with_each_of_its_files(models_dir):
    def fingerprint(name: str) -> tuple:
        return custom_models.fingerprint(custom_models.get(name))

    exported = fingerprint("custom:exported")
    assert [os.path.basename(f[0]) for f in exported] == ["exported.pt2", "exported.toml", "colours.txt"]
    scripted = fingerprint("custom:scripted")
    assert fingerprint("custom:scripted") == scripted
    shutil.copy(models_dir / "squeeze.pth", models_dir / "new.pt")
    os.replace(models_dir / "new.pt", models_dir / "scripted.pt")  # a file replaced by another
    assert fingerprint("custom:scripted") != scripted
    (models_dir / "colours.txt").write_text("\n".join(CLASSES) + "\n\n")
    assert fingerprint("custom:exported") != exported
