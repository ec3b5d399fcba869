"""The one check of what a model returns, applied to every forward pass the engine runs on images.

A model is loaded after one pass on a black and a grey image
(:mod:`saliency_core.models.custom_model_loading`), so a model that raises, returns
NaN or returns another number of logits only on real, textured images gets
past that. Every forward of the engine (gradients, the attribution methods,
deletion/insertion, the randomisation check, and through them the batch job)
therefore runs through :func:`checked_forward`, which turns each of those
into a :class:`~saliency_core.errors.ModelOutputError` naming the model and
what was wrong, instead of a traceback or maps computed over the wrong logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saliency_core.core.model_access import LoadedModelLike, ModelLike, unwrap_module
from saliency_core.core.passes import is_oom
from saliency_core.errors import ModelOutputError, SaliencyError

_ADVICE = ("The model is at fault, not the image, so nothing was computed from it: check the model on real "
           "images (its load check only runs a black and a grey one), or choose another model.")


@dataclass(frozen=True)
class OutputCheck:
    """What a model's output must be: ``(N, classes)`` floating logits, all finite.

    title : how messages name the model ("Tiny colour net (custom:tiny)")
    classes : the number of classes it has (its class names), None when unknown (a bare module)
    """

    title: str
    classes: int | None = None


def output_check(model: ModelLike) -> OutputCheck:
    """The check for ``model``: a LoadedModel's title and class count, or a bare module's class name.

    Reads ``title`` (or ``spec.title``), ``name`` and ``categories`` where
    the model has them; anything LoadedModel-like may leave them out.
    """
    module = unwrap_module(model)
    if not isinstance(model, LoadedModelLike):
        return OutputCheck(f"the model ({type(module).__name__})")
    title = getattr(model, "title", None) or getattr(getattr(model, "spec", None), "title", None)
    name = getattr(model, "name", None)
    if not title:
        title = name or f"the model ({type(module).__name__})"
    elif name and name != title:
        title = f"{title} ({name})"
    categories = getattr(model, "categories", None)
    return OutputCheck(str(title), len(categories) if categories else None)


def check_logits(out: object, n: int, check: OutputCheck) -> torch.Tensor:
    """``out`` itself when it is an ``(n, check.classes)`` floating tensor with every value finite.

    Raises
    ------
    ModelOutputError : naming the model, what it returned and what was expected.
    """
    classes = check.classes if check.classes is not None else "C"
    if not isinstance(out, torch.Tensor):
        problem = f"returned {type(out).__name__} instead of a tensor of logits"
    elif out.dim() != 2 or out.shape[0] != n or not out.is_floating_point():
        problem = (f"returned a {tuple(out.shape)} {str(out.dtype).replace('torch.', '')} tensor for {n} image(s) "
                   f"instead of ({n}, {classes}) float logits")
    elif check.classes is not None and out.shape[1] != check.classes:
        problem = f"returned {out.shape[1]} logits per image, but it has {check.classes} classes"
    else:
        finite = torch.isfinite(out).all(dim=1)
        if bool(finite.all()):
            return out
        bad = int((~finite).sum())
        problem = f"returned NaN or infinite logits for {bad} of {n} image(s)"
        if out.dtype in (torch.float16, torch.bfloat16):
            problem += ' under "fast" precision (float16 overflows above 65504; "exact" may work)'
    raise ModelOutputError(f"{check.title} {problem}. {_ADVICE}")


def checked_forward(module: torch.nn.Module, x: torch.Tensor, check: OutputCheck) -> torch.Tensor:
    """``module(x)``, checked by :func:`check_logits`; an exception the model raises becomes a ModelOutputError.

    x : (N, 3, H, W) on the module's device and dtype. Returns the (N, C)
    logits as the module gave them (float16 under autocast). Out-of-memory
    errors pass through unchanged, so that chunked runs can halve their
    chunk and retry; so do SaliencyErrors.
    """
    try:
        out = module(x)
    except SaliencyError:
        raise
    except Exception as exc:
        if is_oom(exc):
            raise
        raise ModelOutputError(f"{check.title} failed ({_reason(exc)}). {_ADVICE}") from exc
    return check_logits(out, x.shape[0], check)


def _reason(exc: Exception) -> str:
    """One line of what the model raised: TorchScript puts its traceback first and the error last."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if isinstance(exc, torch.jit.Error):
        return lines[-1].removeprefix("builtins.")[:300]
    return f"{type(exc).__name__}: {lines[0]}"[:300]
