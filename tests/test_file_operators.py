"""A model file never reads or writes the server's files (saliency_core.models.file_operators).

TorchScript's ``torch.save`` and ``torch.from_file`` and torchvision's
``image::write_file`` are operators a model's code can call; a TorchScript
``__setstate__`` runs them while ``torch.jit.load`` reads the file. Each
archive here is an ordinary one whose serialized code or graph was edited,
as an attacker would, to call one of them.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from saliency_core.errors import ModelUnavailableError
from saliency_core.models.export_archive import read_exported_program
from saliency_core.models.file_operators import check_torchscript_code, file_operators, touches_files
from saliency_core.models.loading import load_model
from tests.test_custom_models import SIDECAR, TinyNet
from tests.test_export_archive import ROOT, _program, _set_program, ordinary, write_archive  # noqa: F401


class Stateful(nn.Module):
    """A module with its own __getstate__/__setstate__, which torch.jit.load calls."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[int, bool]:
        return (self.flag, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[int, bool]) -> None:
        self.flag = state[0]
        self.training = state[1]


class WithState(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.stateful = Stateful()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stateful(x)))


def scripted_with(tmp_path: Path, edit) -> Path:
    """custom:planted: WithState scripted, its serialized code changed by ``edit(source) -> source``."""
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(WithState().eval()), buf)
    with zipfile.ZipFile(buf) as z:
        members = {n: z.read(n) for n in z.namelist()}
    (code,) = [n for n in members if n.endswith(".py") and b"def __setstate__" in members[n]]
    members[code] = edit(members[code].decode()).encode()
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(folder / "planted.pt", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    (folder / "planted.json").write_text(json.dumps(SIDECAR))
    return folder / "planted.pt"


def _in_setstate(line: str):
    return lambda src: src.replace("    s.flag = (state)[0]\n", f"    {line}\n    s.flag = (state)[0]\n", 1) \
        if "    s.flag = (state)[0]\n" in src else src.replace(
            "    self.flag = (state)[0]\n", f"    {line}\n    self.flag = (state)[0]\n", 1)


@pytest.mark.parametrize("call", [
    'torch.save(state, "{marker}")',
    'ops.image.write_file("{marker}", torch.tensor([104, 105], dtype=0))',
    '_0 = torch.from_file("{marker}", None, 1, dtype=0)',
])
def test_torchscript_code_that_touches_files_is_refused_before_loading(tmp_path, monkeypatch, call):
    marker = tmp_path / "written-by-the-model"
    path = scripted_with(tmp_path, _in_setstate(call.format(marker=marker)))
    assert call.split("(")[0].split(".")[-1] in path.read_bytes().decode("latin-1")  # the edit took
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(path.parent))
    with pytest.raises(ModelUnavailableError, match=r"planted\.pt: its TorchScript code .* reads or writes files"):
        load_model("custom:planted", "cpu")
    assert not marker.exists()


def test_an_ordinary_stateful_torchscript_model_still_loads(tmp_path, monkeypatch):
    path = scripted_with(tmp_path, lambda src: src)
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(path.parent))
    assert load_model("custom:planted", "cpu").categories == SIDECAR["classes"]


@pytest.mark.parametrize("build", [torchvision.models.squeezenet1_1, torchvision.models.resnet18])
def test_scripted_torchvision_models_pass_the_code_check(tmp_path, build):
    path = tmp_path / "net.pt"
    torch.jit.script(build().eval()).save(str(path))
    check_torchscript_code(path, "net.pt")


def _graph_calls(members: dict[str, bytes], target: str, inputs: list, outputs: list) -> None:
    program = _program(members)
    graph = program["graph_module"]["graph"]
    graph["nodes"].insert(0, {"target": target, "inputs": inputs, "outputs": outputs, "metadata": {},
                              "is_hop_single_tensor_return": None, "name": "planted"})
    graph["tensor_values"]["planted"] = {
        "dtype": 1, "sizes": [{"as_int": 4}], "requires_grad": False, "device": {"type": "cpu", "index": None},
        "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}
    _set_program(members, program)


@pytest.mark.parametrize(("target", "inputs", "outputs"), [
    ("torch.ops.aten.from_file.default",
     [{"name": "filename", "arg": {"as_string": "/etc/hostname"}, "kind": 1},
      {"name": "shared", "arg": {"as_none": True}, "kind": 1}, {"name": "size", "arg": {"as_int": 4}, "kind": 1}],
     [{"as_tensor": {"name": "planted"}}]),
    ("torch.ops.image.write_file.default",
     [{"name": "filename", "arg": {"as_string": "/tmp/planted"}, "kind": 1},
      {"name": "data", "arg": {"as_tensor": {"name": "x"}}, "kind": 1}],
     [{"as_none": True}]),
])
def test_an_exported_graph_that_touches_files_is_refused(ordinary, tmp_path, target, inputs, outputs):  # noqa: F811
    members = dict(ordinary)
    _graph_calls(members, target, inputs, outputs)
    path = write_archive(tmp_path / "tiny.pt2", members)
    assert any(n.target.__name__.startswith(target.split(".")[3]) for n in torch.export.load(str(path)).graph.nodes
               if n.op == "call_function")  # torch itself would load and keep that call
    op = target.split(".")[3]
    with pytest.raises(ModelUnavailableError, match=f"calls .*{op}.* which reads or writes files on the server"):
        read_exported_program(path, "tiny.pt2")


def test_the_file_operators_are_found_by_their_schemas():
    import torchvision.io  # noqa: F401 -- registers image::read_file / write_file

    found = file_operators()
    assert {"aten::save", "aten::from_file", "image::read_file", "image::write_file"} <= found
    assert "aten::einsum" not in found  # its "path" is a list of ints, not a file
    assert touches_files(torch.ops.aten.from_file.default) and not touches_files(torch.ops.aten.conv2d.default)
