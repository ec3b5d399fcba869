"""PyTorch operators that read or write files, and a check that a TorchScript archive never calls one.

A model file is a program, and some of PyTorch's operators reach the
server's disk: ``aten::save`` (``torch.save`` inside TorchScript) writes a
file, ``aten::from_file`` reads one, and torchvision registers
``image::read_file`` and ``image::write_file``. Tried on torch 2.14: a
TorchScript archive whose ``__setstate__`` calls ``torch.save`` writes its
file during ``torch.jit.load``, before any check of the loaded module could
run. So the serialized TorchScript source is read *before* loading and
refused when it names such an operator; exported programs are checked the
same way (:mod:`saliency_core.models.export_archive`).

Which operators take a file is read from the registered schemas (an
argument named ``filename``, ``file``, ``path`` ...), so one that a newer
PyTorch or an imported library adds is refused too.
"""

from __future__ import annotations

import io
import re
import tokenize
import zipfile
from pathlib import Path

import torch

from saliency_core.errors import ModelUnavailableError

_FILE_ARGUMENT = re.compile(r"^(file|filename|filepath|fname|path|file_path|dir|directory)$")
MAX_CODE_BYTES = 64 << 20
# Known today, and refused even where the library that registers them is not imported yet.
KNOWN_FILE_OPERATORS = frozenset({"aten::save", "aten::from_file", "image::read_file", "image::write_file"})


def file_operators() -> frozenset[str]:
    """Qualified names (``aten::save``) of the registered operators that take a file name."""
    return KNOWN_FILE_OPERATORS | {schema.name for schema in torch._C._jit_get_all_schemas() if _takes_a_file(schema)}


def touches_files(op: torch._ops.OpOverload) -> bool:
    """Whether an operator overload takes a file name (reads or writes the server's disk)."""
    return _takes_a_file(op._schema)


def _takes_a_file(schema: torch._C.FunctionSchema) -> bool:
    return any(_FILE_ARGUMENT.match(arg.name) and str(arg.type).removeprefix("Optional[").rstrip("]?") == "str"
               for arg in schema.arguments)


def check_torchscript_code(path: Path, shown: str) -> None:
    """Refuse a TorchScript archive whose code names an operator that reads or writes files.

    The archive's ``code/`` folder holds the TorchScript source that
    ``torch.jit.load`` compiles and runs (``__setstate__`` while loading).
    TorchScript has no dynamic lookup of functions, so an operator it calls
    is named in that source: as an attribute (``torch.save``,
    ``ops.image.write_file``) or as ``getattr``'s literal string.

    Raises
    ------
    ModelUnavailableError : the code names such an operator, or can't be read.
    """
    names = {name.split("::", 1)[1] for name in file_operators()}
    try:
        with zipfile.ZipFile(path) as archive:
            code = [i for i in archive.infolist() if "/code/" in f"/{i.filename}" and i.filename.endswith(".py")]
            if sum(i.file_size for i in code) > MAX_CODE_BYTES:
                raise ModelUnavailableError(f"{shown}: its TorchScript code unpacks to more than "
                                            f"{MAX_CODE_BYTES >> 20} MB; refused")
            for info in code:
                _check_source(archive.read(info).decode("utf-8", "replace"), names, info.filename, shown)
    except (zipfile.BadZipFile, OSError):
        return  # not an archive at all: torch.jit.load says so in its own words


def _check_source(source: str, names: set[str], member: str, shown: str) -> None:
    previous = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            named = (tok.type == tokenize.NAME and previous == "." and tok.string in names) or (
                tok.type == tokenize.STRING and tok.string.strip("'\"") in names)
            if named:
                raise ModelUnavailableError(
                    f"{shown}: its TorchScript code ({member.split('/code/', 1)[-1]}, line {tok.start[0]}) calls "
                    f"{tok.string.strip(chr(39) + chr(34))}, an operator that reads or writes files on the server; "
                    "refused")
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                previous = tok.string
    except (tokenize.TokenError, SyntaxError, IndentationError):
        raise ModelUnavailableError(f"{shown}: its TorchScript code ({member}) can't be read") from None
