"""Gradient saliency: score- and loss-gradient maps from one forward pass.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks:
Visualising Image Classification Models and Saliency Maps", ICLR Workshop
2014: the saliency of pixel (i, j) is the largest absolute gradient over its
colour channels, ``max_c |d s_y / d x_{c,i,j}|``, where ``s_y`` is the
unnormalised score (logit) of the target class ``y``. The "loss" map uses the
cross-entropy ``L = -log softmax(s)_y`` instead of ``s_y``.

:func:`forward_and_vjps` is the engine's one forward + VJP core: these maps
and every attribution method (:mod:`saliency_core.methods`) run their passes
through it. The model is shared by every user of the dashboard at once, so
it only ever asks autograd for the gradient with respect to the input or an
activation (``torch.autograd.grad``): nothing is written into parameters'
``.grad``, the train/eval mode is never touched, and the caller's tensor is
copied. Arguments are checked by :func:`saliency_core.core.arguments.validate_request`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from saliency_core.core.arguments import OBJECTIVES as OBJECTIVES
from saliency_core.core.arguments import REDUCTIONS as REDUCTIONS
from saliency_core.core.arguments import check_objectives as check_objectives
from saliency_core.core.arguments import validate_request
from saliency_core.core.deprecation import renamed_keyword
from saliency_core.core.model_access import TOP1_TARGET as TOP1_TARGET
from saliency_core.core.model_access import (
    ModelLike,
    device_of,
    input_dtype_of,
    memory_format_of,
    module_for,
)
from saliency_core.core.model_output import OutputCheck, checked_forward, output_check
from saliency_core.core.passes import row_bytes, run_in_chunks
from saliency_core.core.precision import autocast_context, tf32_context
from saliency_core.errors import InvalidInputError


@dataclass
class SaliencyResult:
    """Everything one :func:`compute_saliency` call produced.

    All tensors are detached and live on the model's device. Their float
    dtype is the model's: float32, or float64 for a float64 model.

    Attributes
    ----------
    maps : objective -> (N, H, W) float32, >= 0, the channel-reduced |gradient|
    gradients : objective -> (N, 3, H, W) float32, the signed input gradients
    logits : (N, C) float32 (even under "fast" precision's float16 autocast)
    probs : (N, C) float32, softmax of the logits
    targets : (N,) int64, the class each map explains (top-1 resolved)
    reduction : how channels were reduced ("max", "mean_abs" or "l2")
    precision : "exact" (strict fp32) or "fast" (see :func:`compute_saliency`)
    """

    maps: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor
    targets: torch.Tensor
    reduction: str
    precision: str

    @property
    def target_probs(self) -> torch.Tensor:
        """(N,) softmax probability of each image's target class, p_y."""
        return self.probs.gather(1, self.targets[:, None]).squeeze(1)


def reduce_channels(grad: torch.Tensor, reduction: str = "max") -> torch.Tensor:
    """Collapse colour channels of a gradient into one saliency value per pixel.

    Parameters
    ----------
    grad : (N, 3, H, W) signed gradient
    reduction : "max" (Simonyan et al. 2014, cs231n), "mean_abs" (mean of
        |g| over channels) or "l2" (Euclidean norm over channels).

    Returns
    -------
    (N, H, W) tensor, >= 0
    """
    if reduction == "max":
        return grad.abs().amax(dim=1)
    if reduction == "mean_abs":
        return grad.abs().mean(dim=1)
    if reduction == "l2":
        return torch.linalg.vector_norm(grad, dim=1)
    raise InvalidInputError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def resolve_targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` with :data:`TOP1_TARGET` replaced by each row's argmax; refuses classes the logits lack.

    logits : (N, C); y : (N,) int64 on the same device.
    """
    if logits.dim() != 2:
        raise InvalidInputError(f"the model must return (N, C) logits, got {tuple(logits.shape)}")
    y = torch.where(y == TOP1_TARGET, logits.detach().argmax(dim=1), y)
    if int(y.max()) >= logits.shape[1]:
        raise InvalidInputError(
            f"target class {int(y.max())} is out of range for a model with {logits.shape[1]} classes"
        )
    return y


def objective_per_image(logits: torch.Tensor, y: torch.Tensor, objective: str, loss_sign: int = 1) -> torch.Tensor:
    """(N,) values of an objective: "score" s_y, or "loss" ``loss_sign`` * CE(s, y) (``loss_sign`` -1: log p_y)."""
    if objective == "score":
        return logits.gather(1, y[:, None]).squeeze(1)
    loss = F.cross_entropy(logits, y, reduction="none")
    return loss if loss_sign == 1 else loss_sign * loss


def objective_sum(logits: torch.Tensor, y: torch.Tensor, objective: str, loss_sign: int = 1) -> torch.Tensor:
    """The objective summed over the batch: each image's gradient is its own.

    Summed, not averaged: each image's loss depends only on its own pixels,
    so summing gives every image exactly its own gradient. The default mean
    reduction would divide every map by N.
    """
    if objective == "score":
        return logits.gather(1, y[:, None]).sum()
    loss = F.cross_entropy(logits, y, reduction="sum")
    return loss if loss_sign == 1 else loss_sign * loss


class VJPs(NamedTuple):
    """What :func:`forward_and_vjps` returns, detached, in the module's dtype.

    logits : (B, C); targets : (B,) int64, top-1 resolved
    grads : objective -> the gradient, shaped like the tensor differentiated
    wrt : that tensor (e.g. a layer's activation) when ``wrt`` was given, else None; a tuple of tensors where
        ``wrt`` gave a tuple (a transformer's attention matrices, one per layer), and each grads[obj] a tuple too
    """

    logits: torch.Tensor
    targets: torch.Tensor
    grads: dict[str, torch.Tensor]
    wrt: torch.Tensor | tuple[torch.Tensor, ...] | None


def forward_and_vjps(module: torch.nn.Module, X: torch.Tensor, y: torch.Tensor,
                     objectives: Sequence[str] = OBJECTIVES, *, precision: str = "exact",
                     check: OutputCheck | None = None, loss_sign: int = 1,
                     wrt: Callable[[], torch.Tensor | tuple[torch.Tensor, ...]] | None = None) -> VJPs:
    """The engine's core: one forward pass of ``module``, then one vector-Jacobian product per objective.

    :func:`compute_saliency` and every attribution method run their passes
    through here (with the plain module, a guided copy, or a copy that hands
    over a layer's output). Only ``torch.autograd.grad``: nothing is written
    into parameters' ``.grad``, the module's mode is never touched, and the
    caller's tensor is copied. Works inside ``torch.no_grad()`` and
    ``torch.inference_mode()`` too.

    Parameters
    ----------
    module : the module to run (e.g. ``module_for(model, precision)``), in eval mode.
    X : (B, 3, H, W) float tensor, normalised for the model; copied to the
        module's device and dtype (and memory layout), never modified.
    y : (B,) int64 targets on the module's device; :data:`TOP1_TARGET` is
        resolved from this forward pass.
    objectives : any of "score" (s_y) and "loss" (per-image cross-entropy
        times ``loss_sign``: +L, or -L = log p_y).
    precision : "exact" (TF32 off on CUDA) or "fast" (float16 autocast for the forward pass).
    check : what the logits must be (:func:`saliency_core.core.model_output.output_check`
        of the model the module belongs to); None: the module's own, which
        knows no class count.
    wrt : called after the forward pass, returns the tensor to differentiate
        (e.g. a captured activation), or a tuple of tensors (each gets its gradient); None: the input.

    Returns
    -------
    :class:`VJPs`

    Raises
    ------
    ModelOutputError : the model raised, or returned logits that fail ``check``.
    """
    objectives = validate_request(objectives=objectives, precision=precision).objectives
    check = check or output_check(module)
    device, dtype = device_of(module), input_dtype_of(module)
    # torch.no_grad() or inference_mode() in the caller must not stop us; the copy is made outside
    # inference mode, so it is a normal tensor even if X is not. TF32 setting for the forward *and*
    # backward pass; autocast for the forward only (the backward follows the forward's types).
    with torch.inference_mode(False), torch.enable_grad(), tf32_context(device, precision):
        # A fresh leaf in the model's dtype: the caller's tensor never becomes part of a graph.
        x = X.detach().to(device=device, dtype=dtype, copy=True)
        # Input in the weights' layout: a mismatch makes every convolution convert.
        x = x.contiguous(memory_format=memory_format_of(module)).requires_grad_(True)
        with autocast_context(device, precision):
            logits = checked_forward(module, x, check)
        logits = logits.to(dtype)  # float16 under autocast
        # TOP1_TARGET means "the model's top-1 prediction", resolved from this same forward pass.
        y = resolve_targets(logits, y)
        inputs = x if wrt is None else wrt()
        many = isinstance(inputs, tuple)
        grads: dict[str, torch.Tensor] = {}
        for i, objective in enumerate(objectives):
            g = torch.autograd.grad(objective_sum(logits, y, objective, loss_sign), inputs,
                                    retain_graph=i < len(objectives) - 1)
            grads[objective] = g if many else g[0]
    if wrt is None:
        return VJPs(logits.detach(), y, grads, None)
    return VJPs(logits.detach(), y, grads, tuple(t.detach() for t in inputs) if many else inputs.detach())


def compute_saliency(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int],
                     objectives: Sequence[str] = OBJECTIVES, *, reduction: str = "max",
                     precision: str = "exact", max_batch: int | None = None,
                     methods: Sequence[str] | None = None) -> SaliencyResult:
    """Input-gradient saliency for several objectives from one forward pass.

    Parameters
    ----------
    model : classifier returning (N, C) logits (a ``torch.nn.Module`` or a
        :class:`saliency_core.models.registry.LoadedModel`); used as is: put it in
        eval mode once, beforehand. float32 or float64 parameters (a float64
        model gets a float64 copy of ``X`` and gives float64 results);
        float16/bfloat16 models raise InvalidInputError.
    X : (N, 3, H, W) float tensor, normalised for the model; any device and
        float dtype (copied to the model's device and dtype).
    y : (N,) integer target classes; :data:`TOP1_TARGET` (-1) means "the
        model's top-1 prediction",
        taken from the same forward pass.
    objectives : any of "score" (d s_y / dx) and "loss" (d CE(s, y) / dx,
        per image, independent of the rest of the batch).
    reduction : channel reduction, see :func:`reduce_channels`.
    precision : "exact": strict float32 (TF32 off on CUDA); "fast": on CUDA,
        float16 autocast with a channels_last copy of the model; elsewhere
        the same as exact (float32; bfloat16 on CPU moved the maps too much).
    max_batch : images per forward pass at most; None for as many as the
        memory budget allows (:func:`saliency_core.core.passes.rows_per_pass`,
        from the image size). On CUDA out-of-memory the chunk is halved and retried.
    methods : the old name of ``objectives`` (DeprecationWarning; it goes in
        the next release: "method" now names an attribution method).

    Returns
    -------
    SaliencyResult, tensors on the model's device, in the model's dtype.

    Raises
    ------
    ModelOutputError : the model raised on the images, or returned logits that
        are not (N, C) finite floats with C its number of classes.
    """
    objectives = renamed_keyword("compute_saliency", "methods", methods, "objectives", objectives, OBJECTIVES)
    y = validate_request(X, y, objectives=objectives, reduction=reduction, precision=precision).y
    check = output_check(model)
    module = module_for(model, precision)
    device = device_of(module)
    y = y.to(device)
    logits_parts: list[torch.Tensor] = []
    target_parts: list[torch.Tensor] = []
    grad_parts: dict[str, list[torch.Tensor]] = {o: [] for o in objectives}

    def step(start: int, stop: int) -> VJPs:
        return forward_and_vjps(module, X[start:stop], y[start:stop], objectives, precision=precision, check=check)

    for _, _, (logits, targets, grads, _) in run_in_chunks(X.shape[0], max_batch, device, step,
                                                           input_row_bytes=row_bytes(X.shape[1:],
                                                                                     input_dtype_of(module))):
        logits_parts.append(logits)
        target_parts.append(targets)
        for o in objectives:
            grad_parts[o].append(grads[o])
    logits = torch.cat(logits_parts)
    gradients = {o: torch.cat(parts) for o, parts in grad_parts.items()}
    return SaliencyResult(
        maps={o: reduce_channels(g, reduction) for o, g in gradients.items()},
        gradients=gradients,
        logits=logits,
        probs=logits.softmax(dim=1),
        targets=torch.cat(target_parts),
        reduction=reduction,
        precision=precision,
    )


def compute_saliency_maps(X: torch.Tensor, y: torch.Tensor, model: torch.nn.Module,
                          objective: str = "score", *, method: str | None = None) -> torch.Tensor:
    """The cs231n "Network Visualization" signature.

    Parameters
    ----------
    X : (N, 3, H, W) float tensor, normalised for the model
    y : (N,) int64 class indices
    model : a pretrained classifier in eval mode
    objective : "score" (gradient of the class score, as in the assignment) or
        "loss" (gradient of the per-image cross-entropy)
    method : the old name of ``objective`` (DeprecationWarning; it goes in the next release)

    Returns
    -------
    (N, H, W) tensor: max over colour channels of |gradient| (Simonyan et al. 2014).
    """
    objective = renamed_keyword("compute_saliency_maps", "method", method, "objective", objective, "score")
    return compute_saliency(model, X, y, (objective,)).maps[objective]


def loss_decomposition(result: SaliencyResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the loss gradient into its target and non-target terms.

    With ``L = -s_y + log sum_k exp(s_k)`` and ``p = softmax(s)``::

        dL/dx = -(1 - p_y) ds_y/dx  +  sum_{k != y} p_k ds_k/dx
                \\_____ target ____/     \\______ others ______/

    As the model grows confident (p_y -> 1) the target term fades, which is
    why the loss map is fainter than the score map for a well-classified
    image. Both terms come from the two gradients already computed: the
    "others" term is ``dL/dx + (1 - p_y) ds_y/dx``; no extra backward pass.

    Returns
    -------
    (target_term, others_term), each (N, 3, H, W), summing to the loss gradient.
    """
    if "score" not in result.gradients or "loss" not in result.gradients:
        raise InvalidInputError("loss_decomposition needs a result computed with objectives ('score', 'loss')")
    w = (1.0 - result.target_probs).view(-1, 1, 1, 1)
    target_term = -w * result.gradients["score"]
    return target_term, result.gradients["loss"] - target_term
