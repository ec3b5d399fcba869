"""What the metrics share: the model output a map explains, one clean pass, batched forward passes over
perturbed copies, seeded draws, map and mask checks, and recomputing maps through
:func:`saliency_core.methods.registry.attribute`.

The model output a metric perturbs is the quantity the map explains (:func:`output_for`, from
:func:`saliency_core.methods.registry.explains`): the target's logit s_y for the "score" objective; for
"loss", −L = log p_y for methods whose ``loss_objective`` is "-L" and L = −log p_y for the others. So a
map's metric compares the map with changes of the very function it attributes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saliency_core.core.arguments import validate_request
from saliency_core.core.model_access import (
    TOP1_TARGET,
    ModelLike,
    device_of,
    input_dtype_of,
    memory_format_of,
    module_for,
    require_eval,
)
from saliency_core.core.model_output import OutputCheck, checked_forward, output_check
from saliency_core.core.passes import row_bytes, run_in_chunks
from saliency_core.core.precision import precision_context
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.perturbations import MapsLike, validate_maps
from saliency_core.methods.registry import attribute, explains

Progress = Callable[[int, int], None]
#: Rows per forward pass of perturbed copies on the CPU, at most: on 2 cores chunks of 8 ran about twice as fast
#: per row as 64 (benchmarks/RESULTS.md, "Faithfulness checks"), and at 224 px the metrics' chunks of 53-64
#: made faithfulness correlation and infidelity 0.7x Quantus's batches of 8 (2026-12-06 run).
CPU_FORWARD_CHUNK = 8
#: The model outputs a metric can follow: the target's logit, the loss L = −log p_y, or −L = log p_y.
OUTPUTS = ("s_y", "L", "−L")


def output_for(method: str, objective: str) -> str:
    """The output a ``method``'s map for ``objective`` explains, one of :data:`OUTPUTS`."""
    return explains(method, objective)


def check_output(output: str) -> str:
    if output == "-L":  # the ASCII spelling
        return "−L"
    if output not in OUTPUTS:
        raise InvalidInputError(f"output must be one of {OUTPUTS}, got {output!r}")
    return output


def explained_output(logits: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    """(R, C) logits, (R,) targets -> (R,) float64: s_y, L = −log p_y or −L = log p_y."""
    logits = logits.double()
    if output == "s_y":
        return logits.gather(1, targets[:, None]).squeeze(1)
    log_p = logits.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    return log_p if output == "−L" else -log_p


@dataclass
class Clean:
    """The images ready for perturbed passes, and one forward pass over them, shared by the metrics that
    take ``clean=`` (make it once with :func:`clean_pass`).

    x : (N, 3, H, W) on the model's device, in its dtype; y : (N,) int64 targets, top-1 resolved (on x.device)
    logits : (N, C) float64 on the CPU; module, device, check, precision, input_row_bytes: how to run rows
    """

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    module: torch.nn.Module
    device: torch.device
    check: OutputCheck
    precision: str
    input_row_bytes: int

    def output(self, output: str) -> torch.Tensor:
        """(N,) float64 CPU: the clean images' value of ``output`` (:data:`OUTPUTS`)."""
        return explained_output(self.logits, self.y.cpu(), check_output(output))


def clean_pass(model: ModelLike, X: torch.Tensor, y: torch.Tensor | Sequence[int], *,
               precision: str = "exact", batch_size: int = 64) -> Clean:
    """Validate ``X`` (N, 3, H, W) and ``y`` (N,) (-1: top-1), and run the clean images once."""
    y = validate_request(X, y, precision=precision).y
    module = module_for(model, precision)
    require_eval(module)
    device = device_of(module)
    dtype = input_dtype_of(module)
    x = X.detach().to(device=device, dtype=dtype)
    check = output_check(model)
    rb = row_bytes(X.shape[1:], dtype)
    parts = []
    fmt = memory_format_of(module)

    def step(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode(), precision_context(device, precision):
            return checked_forward(module, x[a:b].contiguous(memory_format=fmt), check).double().cpu()

    for _, _, out in run_in_chunks(x.shape[0], batch_size, device, step, input_row_bytes=rb, backward=False):
        parts.append(out)
    logits = torch.cat(parts)
    y = torch.where(y == TOP1_TARGET, logits.argmax(dim=1), y)
    if int(y.max()) >= logits.shape[1]:
        raise InvalidInputError(f"target class {int(y.max())} is out of range for a model with "
                                f"{logits.shape[1]} classes")
    return Clean(x=x, y=y.to(device), logits=logits, module=module, device=device, check=check,
                 precision=precision, input_row_bytes=rb)


def forward_rows(clean: Clean, rows: int, build: Callable[[int, int], torch.Tensor], row_image: torch.Tensor,
                 output: str, batch_size: int, on_chunk: Callable[[int], None] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``build(start, stop)`` (perturbed copies, (stop - start, 3, H, W)) through the model in chunks
    (``batch_size`` at most, :data:`CPU_FORWARD_CHUNK` on the CPU, and what the memory budget allows); row r
    follows the target of image ``row_image[r]``. Returns CPU (rows,) float64 values of ``output`` and (rows,)
    int64 top-1 classes."""
    output = check_output(output)
    if clean.device.type == "cpu":
        batch_size = min(batch_size, CPU_FORWARD_CHUNK)
    values = torch.empty(rows, dtype=torch.float64)
    top1 = torch.empty(rows, dtype=torch.int64)
    fmt = memory_format_of(clean.module)
    dtype = clean.x.dtype
    targets = clean.y.cpu()[row_image.cpu()]

    def step(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            batch = build(a, b).to(device=clean.device, dtype=dtype).contiguous(memory_format=fmt)
            with precision_context(clean.device, clean.precision):
                logits = checked_forward(clean.module, batch, clean.check)
            logits = logits.double().cpu()
            return explained_output(logits, targets[a:b], output), logits.argmax(dim=1)

    for a, b, (v, best) in run_in_chunks(rows, batch_size, clean.device, step,
                                         input_row_bytes=clean.input_row_bytes, backward=False):
        values[a:b], top1[a:b] = v, best
        if on_chunk is not None:
            on_chunk(b)
    return values, top1


def row_generator(seed: int, row: int) -> torch.Generator:
    """A private CPU generator for draw ``row`` of a metric: the draws of a row do not depend on how rows
    are chunked (an out-of-memory retry draws the same), and the global RNG is left alone."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(row)) % (2**63))


def image_seeds(x: torch.Tensor, seed: int) -> torch.Tensor:
    """(N,) int64: one seed per image of ``x`` (N, 3, H, W), from ``seed`` and a sha256 of the image's
    float32 values (shape included).

    Every seeded draw of a metric is made by a generator keyed on its image's seed (:func:`image_generator`),
    never on the image's position in the batch: the same image gets the same draws, and so the same value,
    alone or anywhere in any batch, and two equal images in one batch get equal draws. Hashing costs about a
    millisecond per 224 px image.
    """
    seed = int(seed)
    flat = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    out = torch.empty(flat.shape[0], dtype=torch.int64)
    for i in range(flat.shape[0]):
        h = hashlib.sha256(seed.to_bytes(8, "little", signed=True))
        h.update(repr(tuple(flat.shape[1:])).encode())
        h.update(flat[i].numpy().tobytes())
        out[i] = int.from_bytes(h.digest()[:8], "little") >> 1  # 63 bits: a valid manual_seed
    return out


def image_generator(image_seed: int, draw: int = 0) -> torch.Tensor:
    """A private CPU generator for draw ``draw`` (a run, sample or percentage) of the image whose
    :func:`image_seeds` entry is ``image_seed``: independent of chunking and of the batch around the image."""
    return row_generator(int(image_seed), draw)


def check_maps(maps: MapsLike, shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, H, W) finite maps -> float64 CPU tensor (:func:`~saliency_core.evaluation.perturbations.validate_maps`)."""
    return validate_maps(maps, shape).cpu()


def check_maps_alone(maps: MapsLike) -> torch.Tensor:
    """Maps of any (N, H, W) shape -> float64 CPU tensor (for the metrics of the maps alone)."""
    if not isinstance(maps, (torch.Tensor, np.ndarray)):
        raise InvalidInputError(f"maps must be an (N, H, W) tensor or array, got {type(maps).__name__}")
    shape = tuple(maps.shape)
    if len(shape) != 3:
        raise InvalidInputError(f"maps must have shape (N, H, W), got {shape}")
    return check_maps(maps, shape)


def check_mask(mask: MapsLike, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, H, W) bool object masks -> bool CPU tensor."""
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise InvalidInputError(f"mask must be an (N, H, W) bool tensor or array, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise InvalidInputError(f"mask must have the maps' shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise InvalidInputError(f"mask must be bool (or 0/1 integers), got {mask.dtype}")
        if bool(((mask != 0) & (mask != 1)).any()):
            raise InvalidInputError("mask must hold only 0 and 1")
        mask = mask != 0
    return mask.detach().cpu()


def check_count(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value: object, name: str, *, zero_ok: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > 0 or (zero_ok and value == 0))
    if not ok:
        raise InvalidInputError(f"{name} must be a finite number {'>=' if zero_ok else '>'} 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Recompute:
    """How to remake a map: an attribution method's name, objective and parameters (as
    :func:`saliency_core.attribute` takes them), the channel reduction and the largest batch."""

    method: str
    objective: str = "score"
    params: Mapping[str, object] | None = None
    reduction: str = "max"
    max_batch: int | None = None

    @property
    def output(self) -> str:
        return output_for(self.method, self.objective)

    def maps(self, model: ModelLike, X: torch.Tensor, y: torch.Tensor, precision: str) -> torch.Tensor:
        """(N, H, W) float64 CPU maps of ``X`` (N, 3, H, W) for targets ``y`` (N,)."""
        r = attribute(model, X, y, self.method, (self.objective,), reduction=self.reduction, precision=precision,
                      max_batch=self.max_batch, **dict(self.params or {}))
        return r.maps[self.objective].detach().double().cpu()


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson r of (N, K) float64 tensors; NaN where either row is constant."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(dim=1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan")))
