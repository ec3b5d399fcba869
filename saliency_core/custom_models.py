"""The team's own classifiers: a folder of model files with a small sidecar each (``SALIENCY_MODELS_DIR``).

A model is a file and a sidecar of the same stem::

    mynet.pt     TorchScript (torch.jit.save), loaded with torch.jit.load on the CPU
    mynet.pt2    a torch.export program (torch.export.save), loaded with torch.export.load
    mynet.pth    a state dict (torch.save(model.state_dict())) of a torchvision architecture,
                 loaded with torch.load(weights_only=True); .safetensors too, when the
                 safetensors package is installed
    mynet.json   or mynet.toml: what the dashboard needs to know (below)

Sidecar fields::

    title          "My net"                     (default: the stem)
    classes        ["cat", "dog", ...] or "classes.txt" (one name a line, in this folder)
    resize, crop   256, 224                     shorter side resized to ``resize``, centre crop ``crop``
    mean, std      [0.485, 0.456, 0.406], [...] normalisation of the [0, 1] RGB input
    interpolation  "bilinear" or "bicubic"      (default bilinear)
    cam_layer      "features.4"                 Grad-CAM's default layer (optional; not for TorchScript)
    architecture   "resnet18"                   torchvision's name; required for a state dict, else refused

Models appear as ``custom:<stem>`` so they never shadow a built-in name.

What is never done: unpickling Python objects from these files. State dicts
go through ``torch.load(weights_only=True)``. A TorchScript archive is read
by TorchScript's own C++ unpickler, which builds tensors and TorchScript
types only, never calls Python. ``torch.export.load`` (torch 2.14) *does*
unpickle in places (tensors marked ``use_pickle`` with
``weights_only=False``, "opaque" constants with ``pickle.loads``, legacy
``.pt`` members, sample inputs retried with ``weights_only=False``) and
loads AOTInductor's native libraries, so :func:`_check_pt2_archive` reads
the archive's manifest first and refuses any file that has such members; ordinary
``torch.export.save`` output has none. Model files are still programs
(their graphs run PyTorch operators): put only files you trust in the folder.

At load, one forward pass on a zero batch checks that the model returns
(N, C) float logits with C the number of class names and that one image's
logits do not depend on the rest of the batch (a model left in training
mode fails that). Every problem is a :class:`ModelUnavailableError` naming
the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from saliency_core.errors import ModelUnavailableError
from saliency_core.preprocessing import Preprocessing

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover -- Python 3.10: JSON sidecars only
    tomllib = None

MODELS_DIR_ENV = "SALIENCY_MODELS_DIR"
PREFIX = "custom:"
MODEL_SUFFIXES = (".pt", ".pt2", ".pth", ".safetensors")
SIDECAR_SUFFIXES = (".json", ".toml")
STATE_DICT_SUFFIXES = (".pth", ".safetensors")
MAX_SIDECAR_BYTES = 1 << 20
MAX_CLASSES = 100_000
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELDS = {"title", "classes", "resize", "crop", "mean", "std", "interpolation", "cam_layer", "architecture"}


@dataclass(frozen=True)
class CustomModel:
    """One model of the folder, as its sidecar describes it (``problem``: why it can't be used, else "")."""

    name: str  # "custom:<stem>"
    title: str
    path: str  # the model file ("" when there is none)
    preprocessing: Preprocessing | None = None
    classes: tuple[str, ...] = ()
    cam_layer: str = ""
    architecture: str = ""
    problem: str = ""

    @property
    def kind(self) -> str:
        return {".pt": "TorchScript", ".pt2": "torch.export program"}.get(
            Path(self.path).suffix, f"torchvision {self.architecture} state dict")


def models_dir() -> Path | None:
    """The folder named by ``SALIENCY_MODELS_DIR``, or None when unset."""
    value = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def is_custom(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def discover(folder: Path | None = None) -> dict[str, CustomModel]:
    """Every model of the folder by name (``custom:<stem>``), sorted; broken ones carry their ``problem``.

    Cheap: reads sidecars (and class-name files), never the model files.
    """
    folder = models_dir() if folder is None else folder
    if folder is None or not folder.is_dir():
        return {}
    root = folder.resolve()
    stems: dict[str, list[Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:  # an unreadable folder holds no models we can offer
        return {}
    for entry in entries:
        if entry.name.startswith(".") or entry.suffix == ".txt" or not entry.is_file():
            continue
        stems.setdefault(entry.stem, []).append(entry)
    out = {}
    for stem, files in stems.items():
        name = PREFIX + stem
        out[name] = _describe(root, stem, files)
    return out


def _describe(root: Path, stem: str, files: list[Path]) -> CustomModel:
    name = PREFIX + stem
    sidecars = [f for f in files if f.suffix in SIDECAR_SUFFIXES]
    models = [f for f in files if f.suffix in MODEL_SUFFIXES]
    others = [f for f in files if f not in sidecars and f not in models]

    def broken(problem: str, path: str = "") -> CustomModel:
        return CustomModel(name, stem, path, problem=problem)

    if not _STEM.match(stem):
        return broken(f"{files[0].name}: a model's name may hold letters, digits, '_', '-' and '.' only")
    if len(sidecars) > 1 or len(models) > 1:
        return broken(f"{stem}: one model file and one sidecar per name, found "
                      f"{', '.join(f.name for f in files)}")
    if not models:
        if others:
            return broken(f"{others[0].name}: {others[0].suffix or 'files without an extension'} is not a model "
                          f"format this dashboard loads; use {', '.join(MODEL_SUFFIXES)}")
        return broken(f"{sidecars[0].name}: no model file beside it ({stem}.pt, .pt2, .pth or .safetensors)")
    model = models[0]
    if not sidecars:
        return broken(f"{model.name}: no sidecar {stem}.json or {stem}.toml with its classes and input size",
                      str(model))
    try:
        _inside(root, model)
        return _read_sidecar(root, name, model, sidecars[0])
    except ModelUnavailableError as exc:
        return broken(str(exc), str(model))
    except OSError as exc:  # an unreadable sidecar or class file: say so in the picker, never a traceback
        return broken(f"{sidecars[0].name}: can't be read ({exc.strerror or exc})", str(model))


def _inside(root: Path, path: Path) -> Path:
    """``path``'s real location, refused when a symbolic link takes it outside the models folder."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ModelUnavailableError(f"{path.name}: a link to {real}, outside the models folder; refused")
    return real


def _read_sidecar(root: Path, name: str, model: Path, sidecar: Path) -> CustomModel:
    real = _inside(root, sidecar)
    if real.stat().st_size > MAX_SIDECAR_BYTES:
        raise ModelUnavailableError(f"{sidecar.name}: larger than {MAX_SIDECAR_BYTES // 1024} KB")
    text = real.read_text(encoding="utf-8", errors="replace")
    if sidecar.suffix == ".toml" and tomllib is None:
        raise ModelUnavailableError(f"{sidecar.name}: TOML sidecars need Python 3.11; use {model.stem}.json")
    try:
        data = json.loads(text) if sidecar.suffix == ".json" else tomllib.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError both are
        raise ModelUnavailableError(f"{sidecar.name}: not valid {sidecar.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelUnavailableError(f"{sidecar.name}: must hold a table of fields, got {type(data).__name__}")

    def bad(field: str, expected: str) -> ModelUnavailableError:
        got = repr(data.get(field))[:80]
        return ModelUnavailableError(f"{sidecar.name}: {field} must be {expected}, got {got}")

    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ModelUnavailableError(f"{sidecar.name}: unknown field(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(_FIELDS))}")
    for required in ("classes", "resize", "crop", "mean", "std"):
        if required not in data:
            raise ModelUnavailableError(f"{sidecar.name}: the field {required} is missing")
    title = data.get("title", model.stem)
    if not isinstance(title, str) or not title.strip() or len(title) > 120:
        raise bad("title", "a non-empty string of at most 120 characters")
    classes = _classes(root, sidecar, data["classes"])
    sizes = {}
    for field in ("resize", "crop"):
        v = data[field]
        if not isinstance(v, int) or isinstance(v, bool) or not 8 <= v <= 2048:
            raise bad(field, "an integer from 8 to 2048")
        sizes[field] = v
    if sizes["crop"] > sizes["resize"]:
        raise ModelUnavailableError(
            f"{sidecar.name}: crop ({sizes['crop']}) must not exceed resize ({sizes['resize']})")
    norm = {}
    for field in ("mean", "std"):
        v = data[field]
        if (not isinstance(v, list) or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
                or (field == "std" and not all(x > 0 for x in v))):
            raise bad(field, "three finite numbers" + (" > 0" if field == "std" else ""))
        norm[field] = tuple(float(x) for x in v)
    interpolation = data.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic"):
        raise bad("interpolation", '"bilinear" or "bicubic"')
    cam_layer = data.get("cam_layer", "")
    if not isinstance(cam_layer, str) or len(cam_layer) > 200:
        raise bad("cam_layer", "a dotted module name such as features.4")
    if cam_layer and model.suffix == ".pt":
        raise ModelUnavailableError(
            f"{sidecar.name}: cam_layer can't be used with TorchScript ({model.name}): its compiled forward can't "
            "hand a layer's output to Grad-CAM. Save the model with torch.export (.pt2) or as a state dict, "
            "or drop cam_layer")
    architecture = data.get("architecture", "")
    if model.suffix in STATE_DICT_SUFFIXES:
        if not isinstance(architecture, str) or not architecture:
            raise ModelUnavailableError(f"{sidecar.name}: a state dict ({model.name}) needs architecture, "
                                        "a torchvision model name such as resnet18")
    elif architecture:
        raise ModelUnavailableError(f"{sidecar.name}: architecture is for state dicts only; {model.name} "
                                    "carries its own")
    prep = Preprocessing(sizes["resize"], sizes["crop"], norm["mean"], norm["std"], interpolation)
    return CustomModel(name, title.strip(), str(model), prep, classes, cam_layer, architecture)


def _classes(root: Path, sidecar: Path, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        path = root / value
        if "/" in value or "\\" in value or not value.endswith(".txt"):
            raise ModelUnavailableError(f"{sidecar.name}: classes must be a list of names or the name of a .txt "
                                        f"file in the models folder, got {value[:80]!r}")
        if not path.is_file():
            raise ModelUnavailableError(f"{sidecar.name}: the class-name file {value} is missing")
        real = _inside(root, path)
        if real.stat().st_size > 16 * MAX_SIDECAR_BYTES:
            raise ModelUnavailableError(f"{value}: too large for a list of class names")
        value = [line.strip() for line in real.read_text(encoding="utf-8", errors="replace").splitlines()]
        while value and not value[-1]:
            value.pop()
    if (not isinstance(value, list) or not value or len(value) > MAX_CLASSES
            or not all(isinstance(c, str) and c.strip() for c in value)):
        raise ModelUnavailableError(f"{sidecar.name}: classes must be a non-empty list of non-empty names "
                                    "(or a .txt file of them, one a line)")
    return tuple(c.strip() for c in value)


def get(name: str) -> CustomModel | None:
    """The folder's model called ``name`` (``custom:<stem>``), or None."""
    return discover().get(name)


# --------------------------------------------------------------------------- loading


def build(model: CustomModel) -> torch.nn.Module:
    """The model file as an nn.Module on the CPU, eval mode, frozen, checked with one forward pass.

    Raises
    ------
    ModelUnavailableError : the sidecar's problem, or a file that is not what
        its extension says, or a model whose output does not fit its classes.
    """
    if model.problem:
        raise ModelUnavailableError(model.problem)
    path = Path(model.path)
    root = path.parent.resolve()
    real = _inside(root, path)
    if not real.is_file():
        raise ModelUnavailableError(f"{path.name}: the file is gone")
    loader = {".pt": _load_torchscript, ".pt2": _load_export}.get(path.suffix, _load_state_dict)
    module = loader(real, path.name, model)
    for m in module.modules():
        m.training = False  # an exported graph's .eval() raises; the flag is what require_eval reads
    for p in module.parameters():
        p.requires_grad_(False)
    _check_forward(module, path.name, model)
    return module


def _load_torchscript(path: Path, shown: str, model: CustomModel) -> torch.nn.Module:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the reader, for anything that is not a TorchScript archive
        raise ModelUnavailableError(f"{shown}: not a TorchScript file (torch.jit.save): {_first_line(exc)}") from None
    module.eval()
    return module


def _check_pt2_archive(path: Path, shown: str) -> None:
    """Refuse a .pt2 archive with members that torch.export.load would unpickle or run as native code.

    torch 2.14's loader unpickles with ``weights_only=False`` tensors marked
    ``use_pickle`` and legacy ``.pt`` weight files, ``pickle.loads`` "opaque"
    constants, falls back to ``weights_only=False`` when the sample inputs
    don't load with ``weights_only=True``, and loads AOTInductor's compiled
    libraries. ``torch.export.save`` of an ordinary model writes none of
    these (tensors as raw bytes, sample inputs as plain tensors).
    """
    import io

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            configs = [n for n in names if re.search(r"/data/(weights|constants)/[^/]*config\.json$", n)]
            if not any(n.endswith("/archive_format") for n in names) or not configs:
                raise ModelUnavailableError(f"{shown}: not a torch.export program (torch.export.save)")
            for n in names:
                if "/data/aotinductor/" in n or re.search(r"/data/(weights|constants)/[^/]+\.pt$", n):
                    raise ModelUnavailableError(f"{shown}: holds {n}, which torch.export.load would unpickle or "
                                                "run as native code; refused. Save it with torch.export.save")
            for n in configs:
                entries = json.loads(archive.read(n)).get("config", {})
                for fqn, meta in entries.items():
                    if meta.get("use_pickle") or ("/constants/" in n
                                                  and not str(meta.get("path_name", "")).startswith("tensor_")):
                        raise ModelUnavailableError(
                            f"{shown}: its {fqn} is stored as a pickled object, which this dashboard never loads")
            for n in names:
                if "/data/sample_inputs/" in n:
                    try:
                        torch.load(io.BytesIO(archive.read(n)), map_location="cpu", weights_only=True)
                    except Exception as exc:
                        raise ModelUnavailableError(f"{shown}: its sample inputs ({n}) are not plain tensors: "
                                                    f"{_first_line(exc)}") from None
    except ModelUnavailableError:
        raise
    except Exception as exc:  # a corrupt, encrypted or oddly compressed member (zlib.error, RuntimeError, ...)
        raise ModelUnavailableError(f"{shown}: not a torch.export program (torch.export.save): {exc}") from None


def _load_export(path: Path, shown: str, model: CustomModel) -> torch.nn.Module:
    _check_pt2_archive(path, shown)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelUnavailableError(f"{shown}: not a usable torch.export program: {_first_line(exc)}") from None
    _check_export_input(program, shown, model)
    try:
        # unflatten keeps the original module tree (named_modules: features.4, ...), so Grad-CAM finds its layer
        module = torch.export.unflatten(program)
    except Exception as exc:
        raise ModelUnavailableError(f"{shown}: not a usable torch.export program: {_first_line(exc)}") from None
    # Each node's meta holds the shapes export traced (fake, possibly symbolic tensors): compilers read
    # them, the interpreter that runs the graph does not, and they can't be deep-copied (which Grad-CAM's
    # and guided backprop's private copies of the model need).
    for m in module.modules():
        graph = getattr(m, "graph", None)
        if isinstance(graph, torch.fx.Graph):
            for node in graph.nodes:
                node.meta = {}
    return module


def _check_export_input(program, shown: str, model: CustomModel) -> None:
    """One (N, 3, crop, crop) input with N free: the graph runs with the batch sizes it was exported for."""
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in
              {s.arg.name for s in program.graph_signature.input_specs
               if s.kind == torch.export.graph_signature.InputKind.USER_INPUT}]
    shapes = [tuple(n.meta["val"].shape) for n in inputs if isinstance(n.meta.get("val"), torch.Tensor)]
    if len(inputs) != 1 or len(shapes) != 1 or len(shapes[0]) != 4:
        raise ModelUnavailableError(
            f"{shown}: takes {len(inputs)} input(s) {shapes}; expected one (N, 3, H, W) image batch")
    n, c, h, w = shapes[0]
    if isinstance(n, int):
        raise ModelUnavailableError(
            f"{shown}: exported for batches of exactly {n} image(s); the batch size must not be fixed: export with "
            "dynamic_shapes=({0: torch.export.Dim('batch')},) and an example batch of 2 or more")
    crop = model.preprocessing.crop
    if (isinstance(h, int) and h != crop) or (isinstance(w, int) and w != crop) or c != 3:
        raise ModelUnavailableError(f"{shown}: exported for ({c}, {h}, {w}) images, but its sidecar's crop is {crop}")


def _load_state_dict(path: Path, shown: str, model: CustomModel) -> torch.nn.Module:
    from torchvision.models import get_model, list_models

    if model.architecture not in list_models():
        raise ModelUnavailableError(f"{shown}: architecture {model.architecture!r} is not a torchvision model; "
                                    "e.g. resnet18, squeezenet1_1, mobilenet_v3_small")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelUnavailableError(f"{shown}: .safetensors files need the safetensors package "
                                        "(pip install safetensors)") from None
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise ModelUnavailableError(f"{shown}: not a safetensors file: {_first_line(exc)}") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for anything but tensors and plain containers
            raise ModelUnavailableError(f"{shown}: not a state dict saved with torch.save(model.state_dict()) "
                                        f"(loaded with weights_only=True): {_first_line(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelUnavailableError(f"{shown}: not a state dict (a mapping of names to tensors), "
                                    f"got {type(state).__name__}")
    try:
        module = get_model(model.architecture, weights=None, num_classes=len(model.classes))
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelUnavailableError(f"{shown}: does not fit torchvision's {model.architecture} with "
                                    f"{len(model.classes)} classes: {_first_line(exc, 400)}") from None
    return module.eval()


def _check_forward(module: torch.nn.Module, shown: str, model: CustomModel) -> None:
    """One pass of a zero image and a grey one: (2, C) finite float logits, the first row as when alone."""
    size = model.preprocessing.crop
    x = torch.zeros(2, 3, size, size)
    x[1] = 0.5
    try:
        with torch.no_grad():
            out = module(x)
            alone = module(x[:1]) if isinstance(out, torch.Tensor) else None
    except Exception as exc:
        raise ModelUnavailableError(f"{shown}: fails on a (2, 3, {size}, {size}) input batch "
                                    f"(crop {size} from the sidecar; the batch size must not be fixed): "
                                    f"{_first_line(exc)}") from None
    n = len(model.classes)
    if not isinstance(out, torch.Tensor):
        raise ModelUnavailableError(f"{shown}: returns {type(out).__name__}, not an (N, C) tensor of logits")
    if out.dim() != 2 or out.shape[0] != 2 or not out.is_floating_point():
        raise ModelUnavailableError(f"{shown}: returns {tuple(out.shape)} {out.dtype} for 2 images; "
                                    "expected (N, C) float logits")
    if out.shape[1] != n:
        raise ModelUnavailableError(f"{shown}: returns {out.shape[1]} logits per image but its sidecar names "
                                    f"{n} classes")
    if not torch.isfinite(out).all():
        raise ModelUnavailableError(f"{shown}: returns non-finite logits for a zero image")
    if not torch.allclose(alone, out[:1], rtol=1e-4, atol=1e-5):
        raise ModelUnavailableError(f"{shown}: an image's logits change with the rest of the batch; was it saved "
                                    "in training mode (BatchNorm batch statistics, dropout)? Save it after "
                                    "model.eval()")


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
