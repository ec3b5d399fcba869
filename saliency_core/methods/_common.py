"""What the attribution methods share: the request, baselines, batched rows, private model copies.

Every pass with gradients goes through the engine's one forward + VJP core,
:func:`saliency_core.core.gradients.forward_and_vjps`: :func:`vjps` for a
chunk of the request's images (with the loss signed as the method declares),
:func:`gradient_rows` for rows a method builds itself (noisy copies, path points).
The perturbation methods need no gradient: :func:`forward_rows` runs the rows
they build (occluded, masked copies) forward only, and gives both objectives
from each row's one forward pass.

The model is shared by every user of the dashboard at once. Methods that
need a changed backward pass (guided backprop) or an inner activation
(Grad-CAM) never hook the shared module: they run a *private copy* of its
structure that shares its parameters and buffers (no second copy of the
weights), made once per module and kept in a weak cache.
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import torch

from saliency_core.core import baselines
from saliency_core.core.gradients import VJPs, forward_and_vjps, objective_per_image
from saliency_core.core.gradients import resolve_targets as resolve_targets
from saliency_core.core.model_access import ModelLike, memory_format_of
from saliency_core.core.model_output import OutputCheck, checked_forward
from saliency_core.core.passes import CPU_FORWARD_ROWS, row_bytes, run_in_chunks
from saliency_core.core.precision import precision_context
from saliency_core.errors import InvalidInputError

Progress = Callable[[int, int], None]


@dataclass
class Request:
    """One :func:`saliency_core.attribute` call, validated.

    X : (N, 3, H, W) float tensor as given (any device and float dtype)
    y : (N,) int64 on ``device``; may hold TOP1_TARGET
    module : the module to run for ``precision`` (eval mode)
    device, dtype : the module's device and input dtype (float32 or float64)
    check : what every forward's logits must be (the model's title and class count)
    max_batch : rows per pass at most (None: as many as the memory budget allows)
    loss_sign : the method's declared sign of the loss objective (-1: −L = log p_y; +1: L)
    """

    model: ModelLike
    module: torch.nn.Module
    X: torch.Tensor
    y: torch.Tensor
    objectives: tuple[str, ...]
    reduction: str
    precision: str
    max_batch: int | None
    progress: Progress | None
    device: torch.device
    dtype: torch.dtype
    check: OutputCheck
    loss_sign: int = 1

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def row_bytes(self) -> int:
        """Bytes of one image (or noisy copy, path point) as the module takes it: what passes are sized by."""
        return row_bytes(self.X.shape[1:], self.dtype)

    def x(self) -> torch.Tensor:
        """X on the module's device, in its dtype."""
        return self.X.detach().to(device=self.device, dtype=self.dtype)

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def signed(self, objective: str, attribution: torch.Tensor) -> torch.Tensor:
        """An attribution of the +L loss (or of the score) as the method declares its loss: negated for −L
        (d(−L)/dx = −dL/dx), else itself."""
        return -attribution if objective == "loss" and self.loss_sign == -1 else attribution


@dataclass
class MethodOutput:
    """What a method's ``run`` returns; :func:`saliency_core.attribute` wraps it in an AttributionResult.

    attributions : objective -> (N, 3, H, W) signed, or (N, 1, H, W) for a layer method
    logits : (N, C) of the unperturbed input; targets : (N,) resolved
    maps : objective -> (N, H, W), when the method reduces channels itself
    convergence : objective -> (N,) the relative completeness gap (Integrated Gradients, Expected Gradients, DeepLIFT)
    steps_used : (N,) int64, the points on the path each image took (Integrated Gradients)
    converged : (N,) bool, whether each image met the method's tolerance (Integrated Gradients' adaptive rule)
    used : resolved parameter values beyond the given ones (e.g. Grad-CAM's layer)
    """

    attributions: dict[str, torch.Tensor]
    logits: torch.Tensor
    targets: torch.Tensor
    maps: dict[str, torch.Tensor] | None = None
    convergence: dict[str, torch.Tensor] | None = None
    steps_used: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    used: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------- passes

def clean_forward(req: Request, X: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C) logits of ``X`` (default: the request's images) without gradients, chunked by max_batch
    and the memory budget; checked (:func:`saliency_core.core.model_output.checked_forward`)."""
    X = req.X if X is None else X
    fmt = memory_format_of(req.module)
    parts = []

    def step(start: int, stop: int) -> torch.Tensor:
        x = X[start:stop].detach().to(device=req.device, dtype=req.dtype).contiguous(memory_format=fmt)
        with torch.no_grad(), precision_context(req.device, req.precision):
            return checked_forward(req.module, x, req.check).to(req.dtype)

    for _, _, logits in run_in_chunks(X.shape[0], req.max_batch, req.device, step, input_row_bytes=req.row_bytes,
                                      backward=False):
        parts.append(logits)
    return torch.cat(parts)


def vjps(req: Request, module: torch.nn.Module, start: int, stop: int,
         wrt: Callable[[], torch.Tensor] | None = None) -> VJPs:
    """:func:`saliency_core.core.gradients.forward_and_vjps` of the request's images [start, stop) through
    ``module`` (the model's, or a private copy of it), the loss signed as the method declares (``req.loss_sign``)."""
    return forward_and_vjps(module, req.X[start:stop], req.y[start:stop], req.objectives, precision=req.precision,
                            check=req.check, loss_sign=req.loss_sign, wrt=wrt)


def image_rows(req: Request, step: Callable[[int, int], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``step(start, stop) -> (logits, targets, {objective: tensor})`` over the request's images, in chunks of
    at most ``max_batch`` and the memory budget (halved on out-of-memory), concatenated; progress counts images."""
    logits_parts, target_parts = [], []
    parts: dict[str, list[torch.Tensor]] = {obj: [] for obj in req.objectives}
    for _, stop, (logits, targets, values) in run_in_chunks(req.n, req.max_batch, req.device, step,
                                                            input_row_bytes=req.row_bytes):
        logits_parts.append(logits)
        target_parts.append(targets)
        for obj, v in values.items():
            parts[obj].append(v)
        req.report(stop, req.n)
    return torch.cat(logits_parts), torch.cat(target_parts), {obj: torch.cat(p) for obj, p in parts.items()}


def gradient_rows(req: Request, per_image: int, targets: torch.Tensor,
                  build: Callable[[int, int], torch.Tensor],
                  consume: Callable[[int, int, dict[str, torch.Tensor]], None]) -> None:
    """Input gradients of ``N * per_image`` rows (image-major: row r belongs to image r // per_image).

    ``build(start, stop)`` makes rows [start, stop) on the device; the rows
    go through :func:`saliency_core.core.gradients.forward_and_vjps` (one forward,
    one VJP per objective; the loss as +L: the method signs the sum) at most ``max_batch`` rows at a
    time and never more than the memory budget allows for rows of this size
    (:func:`saliency_core.core.passes.rows_per_pass`: 13 at 224 px on a CPU, 1 at
    1024 px), halved on out-of-memory; then ``consume(start, stop, grads)``.
    Progress counts rows.
    """
    total = req.n * per_image

    def consume_and_report(start: int, stop: int, out: VJPs) -> None:
        consume(start, stop, out.grads)
        req.report(stop, total)

    vjp_rows(req, targets.repeat_interleave(per_image), build, consume_and_report)


def vjp_rows(req: Request, row_targets: torch.Tensor, build: Callable[[int, int], torch.Tensor],
             consume: Callable[[int, int, VJPs], None]) -> None:
    """:func:`gradient_rows` for rows in any order: row r explains class ``row_targets[r]`` ((R,) int64 on the
    device), ``build(start, stop)`` makes rows [start, stop), ``consume(start, stop, vjps)`` gets their logits
    and gradients (the loss as +L). Chunked as :func:`gradient_rows`; reports no progress (the caller knows
    what a row is worth)."""

    def step(start: int, stop: int) -> VJPs:
        return forward_and_vjps(req.module, build(start, stop), row_targets[start:stop], req.objectives,
                                precision=req.precision, check=req.check)

    for start, stop, out in run_in_chunks(len(row_targets), req.max_batch, req.device, step,
                                          input_row_bytes=req.row_bytes):
        consume(start, stop, out)


def forward_rows(req: Request, per_image: int, targets: torch.Tensor,
                 build: Callable[[int, int], torch.Tensor],
                 consume: Callable[[int, int, dict[str, torch.Tensor]], None]) -> None:
    """The objectives of ``N * per_image`` rows (image-major: row r belongs to image r // per_image), forward only.

    ``build(start, stop)`` makes rows [start, stop) on the device, (rows, 3, H, W) in the module's dtype;
    each chunk of rows runs through the module once, without gradients, and
    both objectives come from that one forward pass's logits:
    ``consume(start, stop, {objective: (rows,)})`` gets "score" s_y and "loss"
    signed as the method declares (``req.loss_sign`` -1: −L = log p_y), in the
    module's dtype. Chunks: at most ``max_batch`` rows, on a CPU at most
    :data:`~saliency_core.core.passes.CPU_FORWARD_ROWS` (faster there than
    large chunks), and never more than the memory budget allows for
    forward-only rows of this size (:func:`saliency_core.core.passes.rows_per_pass`:
    55 at 224 px on a CPU), halved on out-of-memory. Progress counts rows,
    after each chunk (where a dashboard stops the work of a session that left).
    """
    total = req.n * per_image
    row_targets = targets.repeat_interleave(per_image)
    fmt = memory_format_of(req.module)
    chunk = req.max_batch
    if req.device.type == "cpu":
        chunk = min(chunk or CPU_FORWARD_ROWS, CPU_FORWARD_ROWS)

    def step(start: int, stop: int) -> dict[str, torch.Tensor]:
        x = build(start, stop).contiguous(memory_format=fmt)
        with torch.no_grad(), precision_context(req.device, req.precision):
            logits = checked_forward(req.module, x, req.check)
        logits = logits.to(req.dtype)  # float16 under "fast" autocast
        y = row_targets[start:stop]
        return {obj: objective_per_image(logits, y, obj, req.loss_sign) for obj in req.objectives}

    for start, stop, values in run_in_chunks(total, chunk, req.device, step, input_row_bytes=req.row_bytes,
                                             backward=False):
        consume(start, stop, values)
        req.report(stop, total)


def seeded_generator(seed: int) -> torch.Generator:
    """A private CPU generator, a function of ``seed`` only: never torch's global one, so the same call draws the
    same numbers in any thread and on any device (RISE's masks, LIME's and KernelSHAP's samples)."""
    state = np.random.SeedSequence([int(seed)]).generate_state(1, np.uint64)[0]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state))
    return g


def add_rows_per_image(acc: torch.Tensor, start: int, stop: int, per_image: int, rows: torch.Tensor) -> None:
    """acc[n] += sum of ``rows`` (rows start..stop of :func:`gradient_rows`) that belong to image n.

    A fixed summation order (no atomics), so the same call gives the same bits on CUDA too.
    """
    r = start
    while r < stop:
        n = r // per_image
        end = min(stop, (n + 1) * per_image)
        acc[n] += rows[r - start:end - start].sum(dim=0)
        r = end


# ---------------------------------------------------------------- baselines

def make_baseline(req: Request, baseline: str | torch.Tensor) -> tuple[torch.Tensor, dict[str, object]]:
    """The reference input x′ for Gradient×Input and Integrated Gradients.

    A name from :data:`saliency_core.core.baselines.BASELINES`, the images
    deletion/insertion uses too (:func:`saliency_core.core.baselines.make_baseline`):
    "dataset_mean" (0 in the model's input space: for mean/std normalisation
    the dataset's mean colour; the old "zeros"), "black" (a black image through
    the model's own normalisation, (0 - mean) / std: needs a LoadedModel, a
    bare module has no mean/std), "blur" (a Gaussian-blurred copy of each
    image, sigma 5 px at 224, scaled with the size), "mean" (each image's mean
    colour); or a tensor shaped like X.

    Returns
    -------
    ((N, 3, H, W) on the module's device and dtype, {parameter: value used} for provenance)
    """
    x = req.x()
    if isinstance(baseline, torch.Tensor):
        if tuple(baseline.shape) != tuple(x.shape) or not baseline.is_floating_point():
            raise InvalidInputError(f"a baseline tensor must be a float tensor shaped like X {tuple(x.shape)}, "
                                    f"got {tuple(baseline.shape)} {baseline.dtype}")
        return baseline.detach().to(device=req.device, dtype=req.dtype), {"baseline": "tensor"}
    baseline = baselines.read_old_name(baseline, "dataset_mean")  # attribution's "zeros": 0 after normalisation
    if baseline not in baselines.BASELINES:
        raise InvalidInputError(f"baseline must be one of {baselines.BASELINES} or a tensor shaped like X, "
                                f"got {baseline!r}")
    norm = baselines.normalisation_of(req.model, None, None) if baseline == "black" else None
    if baseline == "black" and norm is None:
        raise InvalidInputError(
            'baseline "black" needs the model\'s normalisation (mean and std), which a bare module '
            'does not carry: pass a LoadedModel, baseline="dataset_mean", or the black image as a tensor, '
            "((0 - mean) / std) per channel"
        )
    image = baselines.make_baseline(x, baseline, mean=norm[0] if norm else None, std=norm[1] if norm else None)
    if baseline == "blur":
        return image, {"baseline": "blur", "blur_sigma": baselines.resolve_blur_sigma(x.shape)}
    return image, {"baseline": baseline}


# ---------------------------------------------------------------- private copies

_COPIES_LOCK = threading.Lock()
_COPIES: weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict] = weakref.WeakKeyDictionary()
_COPIES_PER_MODULE = 8


def structure_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module``'s submodules that shares its parameters and buffers, with no hooks.

    Changing the copy's structure (swapping a submodule) leaves the original
    alone; the weights are the same tensors, so no memory is doubled and an
    in-place weight update shows in both. Hooks registered on the original
    are not carried over: the copy runs the plain forward.
    """
    memo: dict[int, object] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        memo[id(t)] = t
    for m in module.modules():
        for name, value in vars(m).items():
            if "hooks" in name and isinstance(value, dict):
                memo[id(value)] = type(value)()
    return copy.deepcopy(module, memo)


def private_copy(module: torch.nn.Module, key: Hashable,
                 make: Callable[[torch.nn.Module], torch.nn.Module]) -> torch.nn.Module:
    """``make(structure_copy(module))``, made once per (module, key) and cached while the module lives.

    Thread-safe; at most a few keys per module are kept (least recently used dropped).
    """
    with _COPIES_LOCK:
        per_module = _COPIES.get(module)
        if per_module is None:
            per_module = _COPIES[module] = OrderedDict()
        if key not in per_module:
            per_module[key] = make(structure_copy(module))
            while len(per_module) > _COPIES_PER_MODULE:
                per_module.popitem(last=False)
        per_module.move_to_end(key)
        return per_module[key]
