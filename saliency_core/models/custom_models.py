"""The team's own classifiers: a folder of model files with a small sidecar each (``SALIENCY_MODELS_DIR``).

A model is a file and a sidecar of the same stem::

    mynet.pt     TorchScript (torch.jit.save), loaded with torch.jit.load on the CPU
    mynet.pt2    a torch.export program (torch.export.save), loaded with torch.export.load
    mynet.pth    a state dict (torch.save(model.state_dict())) of a torchvision or timm architecture,
                 loaded with torch.load(weights_only=True); .safetensors too, when the
                 safetensors package is installed
    mynet.json   or mynet.toml: what the dashboard needs to know (below)

Sidecar fields::

    title          "My net"                     (default: the stem)
    classes        ["cat", "dog", ...] or "classes.txt" (one name a line, in this folder)
    resize, crop   256, 224                     shorter side resized to ``resize`` (8 to 2048), centre crop
                                                ``crop`` (8 to 1024, see MAX_CROP)
    mean, std      [0.485, 0.456, 0.406], [...] normalisation of the [0, 1] RGB input
    interpolation  "bilinear" or "bicubic"      (default bilinear)
    cam_layer      "features.4"                 Grad-CAM's default layer (optional; not for TorchScript;
                                                a ViT's, Swin's or ConvNeXt's is found without it)
    architecture   "resnet18"                   torchvision's name, or "timm:<name>" for a timm model (the
                   "timm:deit_small_patch16_224" optional timm package); required for a state dict,
                                                else refused
    architecture_args  {"img_size": 32, ...}    a timm model's size (TIMM_ARGS: img_size, depth, embed_dim,
                                                ...), as given to timm.create_model

A timm model's resize, crop, mean, std and interpolation default to timm's
own preprocessing for that name (its pretrained configuration: input size,
crop fraction, normalisation; ``img_size`` sets the crop); the sidecar's
fields, where given, win.

Models appear as ``custom:<stem>`` so they never shadow a built-in name.

Discovery only reads sidecars; :mod:`saliency_core.models.custom_model_loading` loads
and checks the model files (what is never unpickled, and why).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from saliency_core.errors import ModelUnavailableError
from saliency_core.inputs.preprocessing import Preprocessing

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
MAX_RESIZE = 2048
#: The largest crop a sidecar may ask for. Rows per pass shrink with the input size
#: (saliency_core.core.passes.rows_per_pass), but one row is the least a pass can hold, and one row of a
#: gradient pass costs about 12 * crop**2 bytes times the model's activation ratio (up to 225 among
#: the built-in models): 2.8 GB at 1024 px, 11 GB at 2048 px for a ViT-B/16-like model. 1024 px is
#: over twice the input of the largest common classifiers (EfficientNet-B7: 600 px).
MAX_CROP = 1024
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELDS = {"title", "classes", "resize", "crop", "mean", "std", "interpolation", "cam_layer", "architecture",
           "architecture_args"}
TIMM_PREFIX = "timm:"
#: What ``architecture_args`` may set: the shape of a timm model, never files, URLs or pretrained weights.
TIMM_ARGS = {"img_size", "patch_size", "embed_dim", "depth", "depths", "num_heads", "window_size", "mlp_ratio",
             "dims", "class_token", "global_pool", "no_embed_class", "reg_tokens", "qkv_bias"}


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
    architecture_args: tuple[tuple[str, object], ...] = ()  # a timm model's keyword arguments, sorted
    problem: str = ""
    files: tuple[str, ...] = ()  # what it was read from: the model file, its sidecar, its class-name file


    @property
    def kind(self) -> str:
        if self.architecture.startswith(TIMM_PREFIX):
            return f"timm {self.architecture[len(TIMM_PREFIX):]} state dict"
        return {".pt": "TorchScript", ".pt2": "torch.export program"}.get(
            Path(self.path).suffix, f"torchvision {self.architecture} state dict")


def models_dir() -> Path | None:
    """The folder named by ``SALIENCY_MODELS_DIR``, or None when unset."""
    value = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def is_custom(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def _stamp(path: Path | str) -> tuple:
    """(path, size, mtime_ns, inode) of a file, following links; a file replaced or rewritten changes it."""
    try:
        st = os.stat(path)
    except OSError:  # gone, or a dangling link
        return (str(path), None, None, None)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def fingerprint(model: CustomModel) -> tuple:
    """The :func:`_stamp` of each file ``model`` was read from: it changes when one of them is replaced."""
    return tuple(_stamp(f) for f in model.files)


# The last discovery of each folder, with the stamps of the entries it was read from.
_DISCOVERED: dict[str, tuple[tuple, dict[str, CustomModel]]] = {}
_DISCOVERED_LOCK = threading.Lock()


def discover(folder: Path | None = None) -> dict[str, CustomModel]:
    """Every model of the folder by name (``custom:<stem>``), sorted; broken ones carry their ``problem``.

    Cheap: reads sidecars (and class-name files), never the model files, and
    only when the folder changed: the result is kept with the (name, size,
    mtime_ns, inode) of every entry, and a listing that still matches returns
    it without parsing a sidecar again.
    """
    folder = models_dir() if folder is None else folder
    if folder is None or not folder.is_dir():
        return {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:  # an unreadable folder holds no models we can offer
        return {}
    root = folder.resolve()
    listing = tuple(_stamp(e) for e in entries)
    with _DISCOVERED_LOCK:
        known = _DISCOVERED.get(str(root))
    if known is not None and known[0] == listing:
        return dict(known[1])
    found = _describe_all(root, entries)
    with _DISCOVERED_LOCK:
        _DISCOVERED[str(root)] = (listing, found)
    return dict(found)


def _describe_all(root: Path, entries: list[Path]) -> dict[str, CustomModel]:
    stems: dict[str, list[Path]] = {}
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
        inside_folder(root, model)
        return _read_sidecar(root, name, model, sidecars[0])
    except ModelUnavailableError as exc:
        return broken(str(exc), str(model))
    except OSError as exc:  # an unreadable sidecar or class file: say so in the picker, never a traceback
        return broken(f"{sidecars[0].name}: can't be read ({exc.strerror or exc})", str(model))


def inside_folder(root: Path, path: Path) -> Path:
    """``path``'s real location, refused when a symbolic link takes it outside the models folder."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ModelUnavailableError(f"{path.name}: a link to {real}, outside the models folder; refused")
    return real


def _read_sidecar(root: Path, name: str, model: Path, sidecar: Path) -> CustomModel:
    real = inside_folder(root, sidecar)
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
    architecture = data.get("architecture", "")
    if model.suffix in STATE_DICT_SUFFIXES:
        if not isinstance(architecture, str) or not architecture:
            raise ModelUnavailableError(f"{sidecar.name}: a state dict ({model.name}) needs architecture, "
                                        "a torchvision model name such as resnet18, or timm:<name>")
    elif architecture:
        raise ModelUnavailableError(f"{sidecar.name}: architecture is for state dicts only; {model.name} "
                                    "carries its own")
    args = _architecture_args(sidecar.name, architecture, data.get("architecture_args"))
    if architecture.startswith(TIMM_PREFIX):
        data = {**_timm_preprocessing(sidecar.name, architecture[len(TIMM_PREFIX):], dict(args)), **data}
    for required in ("classes", "resize", "crop", "mean", "std"):
        if required not in data:
            raise ModelUnavailableError(f"{sidecar.name}: the field {required} is missing")
    title = data.get("title", model.stem)
    if not isinstance(title, str) or not title.strip() or len(title) > 120:
        raise bad("title", "a non-empty string of at most 120 characters")
    classes = _classes(root, sidecar, data["classes"])
    files = (str(model), str(sidecar), *([str(root / data["classes"])] if isinstance(data["classes"], str) else []))
    sizes = {}
    for field, largest in (("resize", MAX_RESIZE), ("crop", MAX_CROP)):
        v = data[field]
        if not isinstance(v, int) or isinstance(v, bool) or not 8 <= v <= largest:
            raise bad(field, f"an integer from 8 to {largest}"
                      + (" (one pass of a larger crop takes gigabytes of memory)" if field == "crop" else ""))
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
    prep = Preprocessing(sizes["resize"], sizes["crop"], norm["mean"], norm["std"], interpolation)
    return CustomModel(name, title.strip(), str(model), prep, classes, cam_layer, architecture, args, files=files)


def _architecture_args(shown: str, architecture: str, args: object) -> tuple[tuple[str, object], ...]:
    """A timm model's ``architecture_args``, checked: known keys (TIMM_ARGS), numbers, booleans, short strings
    or lists of integers; sorted (key, value) pairs, lists as tuples."""
    if args is None:
        return ()
    if not architecture.startswith(TIMM_PREFIX):
        raise ModelUnavailableError(f"{shown}: architecture_args is for timm models (architecture = "
                                    "\"timm:<name>\"); torchvision's models have fixed sizes")
    if not isinstance(args, dict):
        raise ModelUnavailableError(f"{shown}: architecture_args must be a table such as {{\"img_size\": 224}}, "
                                    f"got {type(args).__name__}")
    unknown = sorted(set(args) - TIMM_ARGS)
    if unknown:
        raise ModelUnavailableError(f"{shown}: architecture_args can't set {', '.join(map(repr, unknown))}; "
                                    f"it may set {', '.join(sorted(TIMM_ARGS))}")
    out = []
    for key, value in sorted(args.items()):
        if isinstance(value, list) and 0 < len(value) <= 16 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in value):
            value = tuple(value)
        elif isinstance(value, bool) or (isinstance(value, str) and len(value) <= 32):
            pass
        elif not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 4096):
            raise ModelUnavailableError(f"{shown}: architecture_args.{key} must be a number from 0 to 4096, a "
                                        f"boolean, a short string or a list of such integers, got {value!r:.80}")
        out.append((key, value))
    return tuple(out)


def import_timm(shown: str):
    """The timm package, optional for users; ModelUnavailableError naming ``shown`` and the install when missing."""
    try:
        import timm
    except ImportError:
        raise ModelUnavailableError(f"{shown}: timm models need the timm package (pip install timm)") from None
    return timm


def _timm_preprocessing(shown: str, name: str, args: dict) -> dict:
    """resize, crop, mean, std, interpolation from timm's configuration of ``name`` (``img_size`` sets the crop);
    ModelUnavailableError without timm or for a name timm doesn't know."""
    timm = import_timm(shown)
    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is None:
        close = sorted(timm.list_models(f"*{name.split('_')[0]}*"))[:6] if name else []
        raise ModelUnavailableError(f"{shown}: timm has no model {name!r}"
                                    + (f"; e.g. {', '.join(close)}" if close else ""))
    size = args.get("img_size", cfg.input_size[-1])
    crop = int(size[-1] if isinstance(size, tuple) else size)
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bicubic"
    return {"crop": crop, "resize": max(crop, math.floor(crop / (cfg.crop_pct or 1.0))),
            "mean": list(cfg.mean), "std": list(cfg.std), "interpolation": interpolation}


def _classes(root: Path, sidecar: Path, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        path = root / value
        if "/" in value or "\\" in value or not value.endswith(".txt"):
            raise ModelUnavailableError(f"{sidecar.name}: classes must be a list of names or the name of a .txt "
                                        f"file in the models folder, got {value[:80]!r}")
        if not path.is_file():
            raise ModelUnavailableError(f"{sidecar.name}: the class-name file {value} is missing")
        real = inside_folder(root, path)
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
