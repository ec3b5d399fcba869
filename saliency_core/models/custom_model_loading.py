"""Loading the team's own model files (:mod:`saliency_core.models.custom_models` finds them and reads their sidecars).

What is never done: unpickling Python objects from these files, running
Python they hold, or letting them touch the server's files. State dicts go
through ``torch.load(weights_only=True)``. A TorchScript archive is read by
TorchScript's own C++ unpickler, which builds tensors and TorchScript types
only and never calls Python; but its code can call operators that read or
write files (``torch.save`` in a ``__setstate__`` runs while loading), so
that code is read first (:mod:`saliency_core.models.file_operators`). A
``torch.export`` archive is never given to ``torch.export.load``, which
unpickles and evaluates parts of its file: :mod:`saliency_core.models.export_archive`
reads only the members of the program it needs, builds the tensors itself
and refuses whatever would run code. Model files are still programs (their
graphs run PyTorch operators, which can be slow or large): put only files
you trust in the folder.

At load, one forward pass on a zero batch checks that the model returns
(N, C) float logits with C the number of class names and that one image's
logits do not depend on the rest of the batch (a model left in training
mode fails that). Every problem is a :class:`ModelUnavailableError` naming
the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import torch

from saliency_core.core.model_access import SOURCE_CLASSES, freeze
from saliency_core.errors import ModelUnavailableError, first_line
from saliency_core.models.custom_models import TIMM_PREFIX, CustomModel, import_timm, inside_folder
from saliency_core.models.export_archive import read_exported_program
from saliency_core.models.file_operators import check_torchscript_code


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
    real = inside_folder(root, path)
    if not real.is_file():
        raise ModelUnavailableError(f"{path.name}: the file is gone")
    loader = {".pt": _load_torchscript, ".pt2": _load_export}.get(path.suffix, _load_state_dict)
    module = loader(real, path.name, model)
    freeze(module)  # an exported graph's .eval() raises
    _check_forward(module, path.name, model)
    return module


def _load_torchscript(path: Path, shown: str, model: CustomModel) -> torch.nn.Module:
    check_torchscript_code(path, shown)  # its __setstate__ runs while loading
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the reader, for anything that is not a TorchScript archive
        raise ModelUnavailableError(f"{shown}: not a TorchScript file (torch.jit.save): {first_line(exc)}") from None
    module.eval()
    return module


def _load_export(path: Path, shown: str, model: CustomModel) -> torch.nn.Module:
    program = read_exported_program(path, shown)  # never torch.export.load: see saliency_core.models.export_archive
    _check_export_input(program, shown, model)
    try:
        # unflatten keeps the original module tree (named_modules: features.4, ...), so Grad-CAM finds its layer
        module = torch.export.unflatten(program)
    except Exception as exc:
        raise ModelUnavailableError(f"{shown}: not a usable torch.export program: {first_line(exc)}") from None
    # The classes the modules were (a Swin stage, a ViT): unflatten makes every one an InterpreterModule, and
    # the CAM methods read a layer's layout from its class (saliency_core.methods.feature_grid).
    setattr(module, SOURCE_CLASSES, source_classes(program))
    # Each node's meta holds the shapes export traced (fake, possibly symbolic tensors): compilers read
    # them, the interpreter that runs the graph does not, and they can't be deep-copied (which Grad-CAM's
    # and guided backprop's private copies of the model need).
    for m in module.modules():
        graph = getattr(m, "graph", None)
        if isinstance(graph, torch.fx.Graph):
            for node in graph.nodes:
                node.meta = {}
    return module


def source_classes(program) -> dict[str, str]:
    """{dotted module name: "package.module.Class"} of an exported program, from its nodes' module stacks."""
    found: dict[str, str] = {}
    for node in program.graph.nodes:
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
                cls = entry[1]
                found.setdefault(entry[0], cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}")
    return found


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


def _architecture(shown: str, model: CustomModel) -> torch.nn.Module:
    """The sidecar's architecture with random weights and ``len(classes)`` outputs: torchvision's, or timm's
    (``timm:<name>``, never its pretrained weights, sized by ``architecture_args``)."""
    from torchvision.models import get_model, list_models

    if model.architecture.startswith(TIMM_PREFIX):
        timm = import_timm(shown)
        name = model.architecture[len(TIMM_PREFIX):]
        try:
            return timm.create_model(name, pretrained=False, num_classes=len(model.classes),
                                     **dict(model.architecture_args))
        except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
            raise ModelUnavailableError(f"{shown}: timm's {name} can't be built with architecture_args "
                                        f"{dict(model.architecture_args)}: {first_line(exc, 300)}") from None
    if model.architecture not in list_models():
        raise ModelUnavailableError(f"{shown}: architecture {model.architecture!r} is not a torchvision model; "
                                    "e.g. resnet18, squeezenet1_1, mobilenet_v3_small, or timm:<name>")
    return get_model(model.architecture, weights=None, num_classes=len(model.classes))


def _load_state_dict(path: Path, shown: str, model: CustomModel) -> torch.nn.Module:
    module = _architecture(shown, model)  # first: a wrong name is told before a large file is read
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelUnavailableError(f"{shown}: .safetensors files need the safetensors package "
                                        "(pip install safetensors)") from None
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise ModelUnavailableError(f"{shown}: not a safetensors file: {first_line(exc)}") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for anything but tensors and plain containers
            raise ModelUnavailableError(f"{shown}: not a state dict saved with torch.save(model.state_dict()) "
                                        f"(loaded with weights_only=True): {first_line(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelUnavailableError(f"{shown}: not a state dict (a mapping of names to tensors), "
                                    f"got {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelUnavailableError(f"{shown}: does not fit {model.kind.removesuffix(' state dict')} with "
                                    f"{len(model.classes)} classes: {first_line(exc, 400)}") from None
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
                                    f"{first_line(exc)}") from None
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
