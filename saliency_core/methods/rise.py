"""RISE: the objective on randomly masked copies of the image, averaged per pixel over the masks that keep it.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018, section 3.2. Each of ``masks`` masks is an
s × s grid (s = ``grid``) of cells kept with probability p (``keep``),
bilinearly upsampled to (s + 1)·C_H × (s + 1)·C_W with the cell size
C = ⌈H / s⌉ × ⌈W / s⌉, then cropped to H × W at a random offset in
[0, C_H) × [0, C_W) (as the authors' code does; their upsampling reflects at
the grid's border, torch's ``interpolate(align_corners=False)`` used here
repeats the border cell). A masked copy is x′ + M ⊙ (x − x′): with the
default baseline "dataset_mean" (x′ = 0 after normalisation) that is the
authors' ``M ⊙ x`` on the normalised image. The paper's estimator is

    S(pixel) = 1 / (N p) · Σ_i f(masked copy i) · M_i(pixel)

with f the class probability. Here f = s_y (score) or −L = log p_y (loss):
both are unbounded, so the raw sum would mostly measure f's level (log p_y
is negative everywhere, and its absolute value would turn the map upside
down). The map therefore subtracts the mean of f over the masks, f̄:

    attribution(pixel) = 1 / (N p) · Σ_i (f_i − f̄) · M_i(pixel) = S(pixel) − f̄ · Σ_i M_i(pixel) / (N p)

about E[f | pixel kept] − E[f]: positive where keeping the pixel raises the
objective, evidence *for* the target, for both objectives. The test
(``tests/methods/test_rise.py``) computes the paper's S with the same masks
and checks this identity.

Reproducible: the masks come from a private CPU generator seeded with
``seed``, the same for every image of a batch, so an image's map does not
depend on the rest of the batch. Forward passes only, one per mask and image
plus the clean image; both objectives come from the same passes, in chunks.
Masks are made a chunk at a time (4000 masks at 224 px would take 800 MB).
The value is one per pixel, the same in the three channels of the
(N, 3, H, W) attribution: the map is |a| for "max" and "mean_abs", √3·|a| for "l2".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from saliency_core.core import limits
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    add_rows_per_image,
    clean_forward,
    forward_rows,
    make_baseline,
    resolve_targets,
    seeded_generator,
)
from saliency_core.methods.declaration import AttributionMethod, Param, Passes, baseline_param

#: The finest grid the dashboard and the batch job take (cells per side).
MAX_GRID = 64


class Masks:
    """RISE's N masks for H × W images: the random grids and offsets, drawn at once; each mask made on demand.

    grids : (N, s, s) float32 of 0 and 1; offsets : (N, 2) int64, the crop's (row, column) offset
    """

    def __init__(self, count: int, size: tuple[int, int], grid: int = 7, keep: float = 0.5, seed: int = 0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.grid = grid
        self.cell = (math.ceil(self.size[0] / grid), math.ceil(self.size[1] / grid))
        g = seeded_generator(seed)
        self.grids = (torch.rand(count, grid, grid, generator=g) < keep).float()
        self.offsets = torch.stack([torch.randint(0, self.cell[0], (count,), generator=g),
                                    torch.randint(0, self.cell[1], (count,), generator=g)], dim=1)

    def __len__(self) -> int:
        return self.grids.shape[0]

    def take(self, index: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(len(index), H, W) masks with values in [0, 1]: grid ``index[i]`` upsampled and cropped."""
        index = index.cpu()
        (height, width), (ch, cw) = self.size, self.cell
        grids = self.grids[index][:, None].to(device=device, dtype=dtype)
        up = F.interpolate(grids, size=((self.grid + 1) * ch, (self.grid + 1) * cw), mode="bilinear",
                           align_corners=False)[:, 0]
        dy, dx = self.offsets[index, 0].to(device), self.offsets[index, 1].to(device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, :, None]
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, :]
        return up[torch.arange(len(index), device=device)[:, None, None], rows, cols].clamp_(0.0, 1.0)


def passes(masks: int = 250, **_params: object) -> Passes:
    """Per image: the clean image (its top-1), then one forward pass per mask."""
    return Passes(gradient=0, forward=masks + 1)


def run(req: Request, masks: int = 250, grid: int = 7, keep: float = 0.5, seed: int = 0,
        baseline: str | torch.Tensor = "dataset_mean") -> MethodOutput:
    """attributions[obj] = Σ_i (f_i − f̄) M_i / (N p), f = s_y or −L over the masked copies; (N, 3, H, W)."""
    if not 0.0 < keep <= 1.0:
        raise InvalidInputError(f"keep is a probability: it must be above 0 and at most 1, got {keep}")
    reference, used = make_baseline(req, baseline)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    x = req.x()
    delta = x - reference
    drawn = Masks(masks, tuple(x.shape[2:]), grid, keep, seed)
    # Sums in float64: thousands of masks, and f̄ is subtracted from them at the end.
    weighted = {obj: torch.zeros(req.n, *x.shape[2:], device=req.device, dtype=torch.float64) for obj in req.objectives}
    level = {obj: torch.zeros(req.n, device=req.device, dtype=torch.float64) for obj in req.objectives}
    kept = torch.zeros(req.n, *x.shape[2:], device=req.device, dtype=torch.float64)
    chunk_masks: dict[int, torch.Tensor] = {}

    def build(start: int, stop: int) -> torch.Tensor:
        rows = torch.arange(start, stop, device=req.device)
        m = drawn.take(rows % masks, req.device, req.dtype)
        chunk_masks[start] = m
        n = rows // masks
        return reference[n] + m[:, None] * delta[n]

    def consume(start: int, stop: int, values: dict[str, torch.Tensor]) -> None:
        m = chunk_masks.pop(start).double()
        add_rows_per_image(kept, start, stop, masks, m)
        for obj, v in values.items():
            v = v.double()
            add_rows_per_image(weighted[obj], start, stop, masks, v[:, None, None] * m)
            add_rows_per_image(level[obj], start, stop, masks, v)

    forward_rows(req, masks, targets, build, consume)
    attributions = {}
    for obj in req.objectives:
        mean = level[obj] / masks
        a = (weighted[obj] - mean[:, None, None] * kept) / (masks * keep)
        attributions[obj] = a.to(req.dtype)[:, None].repeat(1, 3, 1, 1)
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, used=used)


METHOD = AttributionMethod(
    name="rise", title="RISE", citation="Petsiuk, Das & Saenko 2018",
    summary="Σ_i (f_i − f̄) M_i / (N p) over N random masks M_i (a coarse grid of cells kept with probability p, "
            "upsampled, shifted); f_i the objective on x′ + M_i ⊙ (x − x′)",
    params=(Param("masks", 250, int, "random masks, one forward pass each (the paper: 4000)", minimum=1,
                  maximum=limits.MAX_FORWARD_PASSES, costly=True),
            Param("grid", 7, int, "cells per side of each mask's random grid, s (the paper: 7, cells of 32 px at "
                  "224)", minimum=1, maximum=MAX_GRID),
            Param("keep", 0.5, float, "probability that a cell is kept, p (the paper: 0.5)", minimum=0.01,
                  maximum=1.0),
            Param("seed", 0, int, "seed of the masks (a private generator: same seed, same map)", minimum=0,
                  maximum=limits.MAX_SEED),
            baseline_param("dataset_mean")),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, needs=frozenset({"baseline"}),
    family="perturbation",
)
