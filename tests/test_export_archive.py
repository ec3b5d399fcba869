"""A torch.export archive (.pt2) in the models folder never runs code of its own (saliency_core.models.export_archive).

Each case starts from an ordinary ``torch.export.save`` archive and adds or
changes the members that make ``torch.export.load`` run code: pickles in any
program's legacy or pickled members (nested program names included), sample
inputs that need ``weights_only=False``, shape expressions that sympy
evaluates, guard code, a tree spec whose factory is imported by name, and a
call of an operator that runs Python. The planted code writes a marker
file; the marker must never appear, whether the archive is refused (with a
message) or loaded without its extra members.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from saliency_core.errors import ModelUnavailableError
from saliency_core.models.export_archive import check_expression, read_exported_program
from tests.test_custom_models import SIDECAR, TinyNet

ROOT = "tiny/"  # torch.export.save names the archive's folder after the file's stem
SYMBOL = "Symbol('s77', positive=True, integer=True)"


class Planted:
    """What an unsafe loader runs: unpickling this writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory) -> dict[str, bytes]:
    """The members of an ordinary archive of TinyNet with a dynamic batch, by name."""
    torch.manual_seed(0)
    program = torch.export.export(TinyNet().eval(), (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    torch.export.save(program, str(path))
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    assert f"{ROOT}models/model.json" in members and SYMBOL in members[f"{ROOT}models/model.json"].decode()
    return members


def _program(members: dict[str, bytes]) -> dict:
    return json.loads(members[f"{ROOT}models/model.json"])


def _set_program(members: dict[str, bytes], program: dict) -> None:
    members[f"{ROOT}models/model.json"] = json.dumps(program).encode()


def nested_program(members, marker):
    """The probe's archive: a second program models/sub/x.json whose legacy weights are a pickle."""
    members[f"{ROOT}models/sub/x.json"] = members[f"{ROOT}models/model.json"]
    members[f"{ROOT}data/sample_inputs/sub/x.pt"] = members[f"{ROOT}data/sample_inputs/model.pt"]
    members[f"{ROOT}data/weights/sub/x.pt"] = pickle.dumps(Planted(marker))
    members[f"{ROOT}data/constants/sub/x.pt"] = pickle.dumps(Planted(marker))


def other_program_name(members, marker):
    """Only a program named 'other', with legacy pickled weights and constants."""
    for name in list(members):
        if "/model." in name or "/model_" in name:
            members[name.replace("/model", "/other")] = members.pop(name)
    del members[f"{ROOT}data/weights/other_weights_config.json"]
    del members[f"{ROOT}data/constants/other_constants_config.json"]
    members[f"{ROOT}data/weights/other.pt"] = pickle.dumps(Planted(marker))
    members[f"{ROOT}data/constants/other.pt"] = pickle.dumps(Planted(marker))


def legacy_weights(members, marker):
    members[f"{ROOT}data/weights/model.pt"] = pickle.dumps(Planted(marker))


def legacy_constants(members, marker):
    members[f"{ROOT}data/constants/model.pt"] = pickle.dumps(Planted(marker))


def pickled_weight(members, marker):
    name = f"{ROOT}data/weights/model_weights_config.json"
    config = json.loads(members[name])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    members[name] = json.dumps(config).encode()
    members[f"{ROOT}data/weights/{entry['path_name']}"] = pickle.dumps(Planted(marker))


def _constant(prefix: str) -> Callable:
    def plant(members, marker):
        name = f"{ROOT}data/constants/model_constants_config.json"
        config = json.loads(members[name])
        config["config"]["evil"] = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}
        members[name] = json.dumps(config).encode()
        members[f"{ROOT}data/constants/{prefix}0"] = pickle.dumps(Planted(marker))
    plant.__name__ = f"constant_{prefix.strip('_')}"
    return plant


def sample_inputs_pickle(members, marker):
    buf = io.BytesIO()
    torch.save(((torch.zeros(1), Planted(marker)), {}), buf)
    members[f"{ROOT}data/sample_inputs/model.pt"] = buf.getvalue()


def shape_expression(members, marker):
    text = members[f"{ROOT}models/model.json"].decode()
    members[f"{ROOT}models/model.json"] = text.replace(
        SYMBOL, f"__import__('pathlib').Path('{marker}').touch() or {SYMBOL}").encode()


def guards_code(members, marker):
    program = _program(members)
    program["guards_code"] = [f"__import__('pathlib').Path('{marker}').touch() is None"]
    _set_program(members, program)


def tree_spec_factory(members, marker):
    """An input spec holding a defaultdict, whose factory torch imports by module name: the module plants."""
    module = marker.parent / "planted_factory.py"
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfactory = dict\n")
    program = _program(members)
    signature = program["graph_module"]["module_call_graph"][0]["signature"]
    protocol, spec = json.loads(signature["in_spec"])
    context = {"default_factory_module": "planted_factory", "default_factory_name": "factory", "dict_context": []}
    spec["children_spec"][1] = {"type": "collections.defaultdict", "context": context, "children_spec": []}
    signature["in_spec"] = json.dumps([protocol, spec])
    _set_program(members, program)


def aotinductor_library(members, marker):
    members[f"{ROOT}data/aotinductor/model/model.so"] = b"\x7fELF not really"


def pre_2_8_layout(members, marker):
    members.clear()
    members["version"] = b"8.20"
    members["serialized_exported_program.json"] = b"{}"
    members["serialized_state_dict.pt"] = pickle.dumps(Planted(marker))


def compressed_bomb(members, marker):
    """A JSON member declared far larger than the whole file (a zip bomb)."""
    members[f"{ROOT}models/model.json"] += b" " * (300 << 20)


# (case, True when the archive still loads: the planted members are simply never read)
CASES = [
    (nested_program, True),
    (other_program_name, False),
    (legacy_weights, False),
    (legacy_constants, False),
    (pickled_weight, False),
    (_constant("opaque_obj_"), False),
    (_constant("custom_obj_"), False),
    (_constant("tensor_"), False),
    (sample_inputs_pickle, False),
    (shape_expression, False),
    (guards_code, True),
    (tree_spec_factory, False),
    (aotinductor_library, True),
    (pre_2_8_layout, False),
    (compressed_bomb, False),
]


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize(("plant", "loads"), CASES, ids=[c[0].__name__ for c in CASES])
def test_no_member_of_an_archive_runs_code(ordinary, tmp_path, monkeypatch, plant, loads):
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "planted-code-ran"
    members = dict(ordinary)
    plant(members, marker)
    path = write_archive(tmp_path / "tiny.pt2", members)
    if loads:
        program = read_exported_program(path, "tiny.pt2")
        x = torch.rand(3, 3, 32, 32)
        torch.testing.assert_close(program.module()(x), torch.export.unflatten(program)(x))
    else:
        with pytest.raises(ModelUnavailableError, match=r"^tiny\.pt2: "):
            read_exported_program(path, "tiny.pt2")
    assert not marker.exists()
    sys.modules.pop("planted_factory", None)


def test_an_operator_that_runs_python_is_refused_before_the_model_runs(tmp_path):
    marker = tmp_path / "operator-ran"

    @torch.library.custom_op("saliency_probe::touch", mutates_args=())
    def touch(x: torch.Tensor) -> torch.Tensor:
        marker.touch()
        return x.clone()

    @touch.register_fake
    def _(x):
        return torch.empty_like(x)

    class Calls(TinyNet):
        def forward(self, x):
            return super().forward(torch.ops.saliency_probe.touch(x))

    program = torch.export.export(Calls().eval(), (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "calls.pt2"))
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelUnavailableError, match=r"saliency_probe\.touch.*not one of PyTorch's own operators"):
        read_exported_program(tmp_path / "calls.pt2", "calls.pt2")
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    SYMBOL, f"Mul(Integer(2), {SYMBOL})", "FloorDiv(s0, 2) + Max(1, s1)", "Eq(Mod(s3, 4), 0)", "s0*3 - 1",
])
def test_the_shape_expressions_export_writes_are_accepted(text):
    check_expression(text)


@pytest.mark.parametrize("text", [
    "__import__('os').system('id')", "Symbol.__class__", "Symbol('s0').func", "Integer(10)**Integer(99)",
    "Pow(Integer(10), Integer(10))", "Symbol('os.system')", "[s0]", "lambda: 0", "s0 if s1 else s2",
    "S('x')", "sympify('x')", "Symbol(\"s0\"), eval", "x" * 3000, 7,
])
def test_other_expressions_are_refused(text):
    with pytest.raises(ModelUnavailableError, match="shape expression"):
        check_expression(text)


def test_an_ordinary_archive_loads_and_computes_what_the_model_does(ordinary, tmp_path):
    torch.manual_seed(0)
    net = TinyNet().eval()
    program = read_exported_program(write_archive(tmp_path / "tiny.pt2", dict(ordinary)), "tiny.pt2")
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(torch.export.unflatten(program)(x), net(x))


@pytest.fixture
def planted_folder(ordinary, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """SALIENCY_MODELS_DIR holding custom:tiny, the probe's archive (an ordinary program plus a nested one
    whose legacy weights are a planted pickle), and the marker that pickle would write."""
    folder = tmp_path / "models"
    folder.mkdir()
    marker = tmp_path / "planted-code-ran"
    members = dict(ordinary)
    nested_program(members, marker)
    write_archive(folder / "tiny.pt2", members)
    (folder / "tiny.json").write_text(json.dumps(SIDECAR))
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(folder))
    return folder, marker


def test_the_batch_job_loads_the_probes_archive_without_running_it(planted_folder, tmp_path):
    from saliency_core.jobs import batch
    from saliency_core.jobs.results import load_results

    _, marker = planted_folder
    images = tmp_path / "images.npz"
    np.savez(images, X=np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8), y=[0, 1])
    out = tmp_path / "out"
    assert batch.main(["--images", str(images), "--out", str(out), "--model", "custom:tiny", "--device", "cpu",
                       "--workers", "0", "--no-progress", "--maps", "gradient:score"]) == 0
    assert len(load_results(out).results) == 2
    assert not marker.exists()
