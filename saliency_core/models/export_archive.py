"""Reading a ``torch.export`` archive (``.pt2``) without letting the file run code.

``torch.export.load`` trusts its file (its own docstring: "Never load data
from an untrusted source"). Tried on torch 2.14, an archive makes it run
code of the file's choosing in each of these ways:

* a member it unpickles with ``weights_only=False``: tensors marked
  ``use_pickle``; legacy ``data/weights/<program>.pt`` and
  ``data/constants/<program>.pt`` members of *every* program under
  ``models/``, whose names may contain "/" (``models/sub/x.json`` makes it
  read ``data/weights/sub/x.pt``); sample inputs that fail
  ``weights_only=True`` (it retries without); "opaque" constants
  (``pickle.loads``); and the pre-2.8 layout it falls back to;
* a shape expression (``expr_str``), parsed with ``sympy.sympify``, which is
  Python's ``eval``;
* ``guards_code``, Python source that ``ExportedProgram.module()`` compiles
  and runs;
* a ``defaultdict`` in an input or output tree spec, whose factory it imports
  by module name;
* AOTInductor's compiled libraries (``data/aotinductor/``).

So this module never calls it. :func:`read_exported_program` reads only the
members an ordinary ``torch.export.save`` writes for the program named
``model`` (the one ``torch.export.load`` returns): that program's JSON, the
raw bytes of its weights and tensor constants, and its sample inputs through
``torch.load(weights_only=True)``. It refuses pickled or legacy payloads,
shape expressions outside a small grammar and tree specs of other types,
drops ``guards_code``, and hands torch's deserializer tensors that are
already built, so nothing is left for it to unpickle. No other member (other
programs, compiled libraries, extra files) is ever read. The graph it returns
calls only PyTorch's own operators (``aten``, ``prims``) that touch no file
(:mod:`saliency_core.models.file_operators`), a few control-flow operators and the
arithmetic on sizes that export records; any other call is refused before
the model runs.
"""

from __future__ import annotations

import io
import json
import math
import operator
import re
import tokenize
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch._export.serde import schema
from torch._export.serde.serialize import (
    _SYM_OPS,
    ExportedProgramDeserializer,
    _dict_to_dataclass,
    deserialize_scalar_type,
    deserialize_size,
    deserialize_storage_offset,
    deserialize_stride,
)
from torch.export.pt2_archive import constants as layout

from saliency_core.errors import ModelUnavailableError, first_line
from saliency_core.models.file_operators import touches_files

PROGRAM = "model"  # the program torch.export.save writes and torch.export.load returns
MAX_JSON_BYTES = 256 << 20
MAX_EXPRESSION_CHARS = 2000
_PAYLOAD_NAMES = {layout.WEIGHTS_DIR: re.compile(r"^weight_\d+$"),
                  layout.CONSTANTS_DIR: re.compile(r"^tensor_\d+$")}

# The sympy and torch.utils._sympy constructors that export writes in shape expressions (in srepr form:
# "Mul(Integer(2), Symbol('s77', positive=True, integer=True))"). Powers and shifts are left out on purpose:
# Pow(Integer(10), Integer(10**18)) would be evaluated while parsing.
_EXPRESSION_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Max", "Min", "Mod", "floor", "ceiling", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "LessThan",
    "StrictGreaterThan", "GreaterThan", "And", "Or", "Not", "Piecewise", "ExprCondPair",
    "true", "false", "oo", "zoo", "nan", "Infinity", "NegativeInfinity", "True", "False",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity", "IntTrueDiv", "FloatTrueDiv",
    # keyword arguments of Symbol: assumptions
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero",
})
_SYMBOL_NAME = re.compile(r"^[a-z]{1,8}\d{1,9}$")  # s77, u0: what export names a size
_SYMBOL_STRING = re.compile(r"""^(['"])[a-z]{1,8}\d{1,9}\1$""")
_NUMBER = re.compile(r"^\d{1,18}(\.\d{1,18})?$")
# No ".", "[", "**", "^", "<<", ":=" or "lambda": no attribute, item, power or function of one's own.
_EXPRESSION_OPERATORS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "<", ">", "<=", ">=", "==",
                                   "!=", "&", "|", "~"})
# pytree node types that torch rebuilds from a registry (a defaultdict's factory is imported by name instead).
_TREE_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})

# What the graph may call: PyTorch's own operators, control flow, and the arithmetic on sizes export records.
_OPERATOR_NAMESPACES = frozenset({"aten", "prims"})
_HIGHER_ORDER = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast", "cond", "while_loop", "map_impl",
                           "scan"})
_SIZE_ARITHMETIC = frozenset(_SYM_OPS) | {operator.getitem, operator.pos, math.ceil, math.floor, math.trunc,
                                          torch.sym_int, torch.sym_float, torch.sym_max, torch.sym_min,
                                          torch.sym_not, torch.sym_ite, torch.sym_sum}


def read_exported_program(path: Path, shown: str) -> torch.export.ExportedProgram:
    """The program ``model`` of a ``torch.export.save`` archive, read without unpickling or evaluating anything.

    Parameters
    ----------
    path : the archive.
    shown : its name in messages (the file name, not the server's path).

    Raises
    ------
    ModelUnavailableError : not such an archive, or it holds something that
        would run code (named in the message).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            reader = _Members(archive, path.stat().st_size, shown)
            program = reader.json(layout.MODELS_FILENAME_FORMAT.format(PROGRAM))
            _check_program_json(program, shown)
            state_dict = reader.tensors(layout.WEIGHTS_DIR, layout.WEIGHTS_CONFIG_FILENAME_FORMAT.format(PROGRAM))
            constants = reader.tensors(layout.CONSTANTS_DIR,
                                       layout.CONSTANTS_CONFIG_FILENAME_FORMAT.format(PROGRAM))
            example_inputs = reader.sample_inputs(layout.SAMPLE_INPUTS_FILENAME_FORMAT.format(PROGRAM))
    except ModelUnavailableError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, a CRC mismatch, an unreadable file
        raise ModelUnavailableError(f"{shown}: not a torch.export program (torch.export.save): "
                                    f"{first_line(exc)}") from None
    program["guards_code"] = []  # Python source, run by ExportedProgram.module(); the checks it held are ours
    try:
        exported = ExportedProgramDeserializer().deserialize(
            _dict_to_dataclass(schema.ExportedProgram, program), state_dict, constants, example_inputs)
    except Exception as exc:
        raise ModelUnavailableError(f"{shown}: not a usable torch.export program: {first_line(exc)}") from None
    _check_calls(exported.graph_module, shown)
    return exported


class _Members:
    """The members of one program, read by name from one root folder, within a byte budget."""

    def __init__(self, archive: zipfile.ZipFile, file_bytes: int, shown: str) -> None:
        self.archive, self.shown = archive, shown
        self.root = ""
        # torch.export.save stores members uncompressed: what is read can't exceed the file by much.
        self.budget = file_bytes + MAX_JSON_BYTES
        roots = [n[: -len(layout.ARCHIVE_FORMAT_PATH)] for n in archive.namelist()
                 if n.endswith("/" + layout.ARCHIVE_FORMAT_PATH) and n.count("/") == 1]
        if len(roots) != 1 or self._read(roots[0] + layout.ARCHIVE_FORMAT_PATH) != layout.ARCHIVE_FORMAT_VALUE.encode():
            raise ModelUnavailableError(f"{shown}: not a torch.export program (torch.export.save)")
        self.root = roots[0]
        version = self._read(self.root + layout.ARCHIVE_VERSION_PATH, "its archive version").decode()
        if version != layout.ARCHIVE_VERSION_VALUE:
            raise ModelUnavailableError(f"{shown}: archive version {version[:20]!r}; this PyTorch reads "
                                        f"{layout.ARCHIVE_VERSION_VALUE!r}. Save it again with torch.export.save")

    def _read(self, name: str, what: str = "") -> bytes:
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise ModelUnavailableError(f"{self.shown}: not a torch.export program (torch.export.save): it has no "
                                        f"{name.removeprefix(self.root)}{f' ({what})' if what else ''}") from None
        if info.file_size > self.budget:
            raise ModelUnavailableError(f"{self.shown}: its member {name} would unpack to {info.file_size:,} bytes, "
                                        "more than the whole file; refused")
        self.budget -= info.file_size
        return self.archive.read(info)

    def json(self, name: str) -> dict:
        data = json.loads(self._read(self.root + name, f"the program {PROGRAM!r} that torch.export.save writes"))
        if not isinstance(data, dict):
            raise ModelUnavailableError(f"{self.shown}: {name} is not a torch.export program")
        return data

    def tensors(self, folder: str, config_name: str) -> dict[str, torch.Tensor]:
        """The weights or constants of the program, each built from its raw bytes (never unpickled)."""
        if self.root + folder + f"{PROGRAM}.pt" in self.archive.namelist():
            raise ModelUnavailableError(f"{self.shown}: holds {folder}{PROGRAM}.pt, a pickled legacy member "
                                        "(weights_only=False) this dashboard never loads. Save it again with "
                                        "torch.export.save")
        config = _dict_to_dataclass(schema.PayloadConfig, self.json(config_name))
        storages: dict[str, torch.Tensor] = {}
        tensors: dict[str, torch.Tensor] = {}
        for fqn, meta in config.config.items():
            if meta.use_pickle or meta.tensor_meta is None or not _PAYLOAD_NAMES[folder].match(meta.path_name):
                raise ModelUnavailableError(f"{self.shown}: its {fqn[:100]} is stored as a pickled object "
                                            f"({meta.path_name[:60]}), which this dashboard never loads")
            t = meta.tensor_meta
            dtype = deserialize_scalar_type(t.dtype)
            if meta.path_name not in storages:
                raw = bytearray(self._read(self.root + folder + meta.path_name))
                if len(raw) % dtype.itemsize:
                    raise ModelUnavailableError(f"{self.shown}: {folder}{meta.path_name} is not whole "
                                                f"{dtype} values")
                storages[meta.path_name] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            storage = storages[meta.path_name]
            size = deserialize_size(t.sizes)
            if math.prod(size) > storage.numel():  # a view larger than its bytes (stride 0) would multiply memory
                raise ModelUnavailableError(f"{self.shown}: its {fqn[:100]} claims {size}, more values than stored")
            tensor = torch.as_strided(storage, size, deserialize_stride(t.strides),
                                      deserialize_storage_offset(t.storage_offset))
            tensors[fqn] = torch.nn.Parameter(tensor, requires_grad=t.requires_grad) if meta.is_param else tensor
        return tensors

    def sample_inputs(self, name: str) -> tuple | None:
        data = self._read(self.root + name, "its sample inputs")
        if not data:
            return None
        try:
            inputs = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelUnavailableError(f"{self.shown}: its sample inputs ({name}) are not plain tensors: "
                                        f"{first_line(exc)}") from None
        if not isinstance(inputs, tuple):
            raise ModelUnavailableError(f"{self.shown}: its sample inputs ({name}) are a "
                                        f"{type(inputs).__name__}, not (args, kwargs)")
        return inputs


def _check_program_json(program: dict, shown: str) -> None:
    """Refuse shape expressions outside :func:`check_expression`'s grammar and tree specs it would import."""
    stack: list[Any] = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    check_expression(value, shown)
                elif key in ("in_spec", "out_spec") and isinstance(value, str):
                    _check_tree_spec(value, shown)
                else:
                    stack.append(value)


def check_expression(text: object, shown: str = "the file") -> None:
    """Refuse a shape expression that is more than sympy constructors applied to sizes and small numbers.

    ``sympy.sympify`` evaluates its string as Python; within this grammar
    (calls of the names in ``_EXPRESSION_CALLS``, symbol names such as
    ``s77``, numbers, arithmetic and comparisons; no attribute, item, power
    or keyword of Python) evaluating it can only build an expression.
    """
    def refuse(why: str) -> ModelUnavailableError:
        return ModelUnavailableError(f"{shown}: holds a shape expression this dashboard does not evaluate "
                                     f"({why}): {str(text)[:80]!r}")

    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        raise refuse("not a short string")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise refuse(str(exc)) from None
    for tok in tokens:
        if tok.type == tokenize.NAME:
            ok = tok.string in _EXPRESSION_CALLS or _SYMBOL_NAME.match(tok.string)
        elif tok.type == tokenize.NUMBER:
            ok = _NUMBER.match(tok.string)
        elif tok.type == tokenize.STRING:
            ok = _SYMBOL_STRING.match(tok.string)
        elif tok.type == tokenize.OP:
            ok = tok.string in _EXPRESSION_OPERATORS
        else:
            ok = tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
        if not ok:
            raise refuse(f"{tok.string!r} is not allowed")


def _check_tree_spec(text: str, shown: str) -> None:
    try:
        _protocol, root = json.loads(text)
    except (ValueError, TypeError):
        raise ModelUnavailableError(f"{shown}: its input or output structure is not a tree spec") from None
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or node.get("type") not in _TREE_TYPES:
            kind = node.get("type") if isinstance(node, dict) else type(node).__name__
            raise ModelUnavailableError(f"{shown}: its inputs or outputs are a {str(kind)[:80]}; this dashboard "
                                        "rebuilds tuples, lists and dicts only")
        stack.extend(node.get("children_spec") or [])


def _check_calls(graph_module: torch.nn.Module, shown: str) -> None:
    """Every call in the graph (and its subgraphs) is one of PyTorch's operators or arithmetic on sizes."""
    for module in graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("call_module", "call_method"):
                raise ModelUnavailableError(f"{shown}: its graph has a {node.op} node ({str(node.target)[:80]}); "
                                            "an exported program calls operators only")
            if node.op == "call_function" and not _allowed_call(node.target):
                what = ("reads or writes files on the server" if isinstance(node.target, torch._ops.OpOverload)
                        and touches_files(node.target) else "is not one of PyTorch's own operators")
                raise ModelUnavailableError(f"{shown}: its graph calls {str(node.target)[:80]}, which {what}; refused")


def _allowed_call(target: object) -> bool:
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in _OPERATOR_NAMESPACES and not touches_files(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return target.name() in _HIGHER_ORDER
    try:
        return target in _SIZE_ARITHMETIC
    except TypeError:  # unhashable
        return False
