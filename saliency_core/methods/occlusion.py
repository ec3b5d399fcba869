"""Occlusion: how much the objective drops when a square patch of the image is replaced by a baseline.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014, section 4.2: a grey square slides over the image and the
classifier's output is recorded at each position. Here, as in Captum's
``Occlusion`` (the oracle in ``tests/methods/test_occlusion.py``), a
``window`` × ``window`` patch across all three channels moves in steps of
``stride``, ``ceil((H − window) / stride) + 1`` positions down (the last one
cut off at the border, so every pixel is covered) and as many across; at
each position the patch's pixels take the baseline image x′'s values, and

    attribution(pixel) = mean over the patches covering it of f(x) − f(x with that patch occluded)

with f = s_y (score) or −L = log p_y (loss): positive means hiding the pixel
lowers the objective, evidence *for* the target, for both objectives (the
loss is used as −L). The paper's grey square is the default baseline,
"dataset_mean" (0 after normalisation: the mean colour of the model's
normalisation, a mid grey); the paper gives no size for it.

Forward passes only, one per position and image, plus the clean image; both
objectives come from the same passes, in chunks (:func:`_common.forward_rows`).
The value is one per pixel, the same in the three channels of the
(N, 3, H, W) attribution, so the map is |a| for the "max" and "mean_abs"
reductions and √3·|a| for "l2".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from saliency_core.core.gradients import objective_per_image
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    clean_forward,
    forward_rows,
    make_baseline,
    resolve_targets,
)
from saliency_core.methods.declaration import DEFAULT_SIZE, AttributionMethod, Param, Passes, baseline_param

#: The largest window and stride the dashboard and the batch job take: a patch larger than the image is cut to it.
MAX_WINDOW = 1024


def positions(size: int, window: int, stride: int) -> int:
    """Patch positions along one side of ``size`` pixels (Captum's count): ``ceil((size − window) / stride) + 1``,
    the window cut to the side first."""
    window = min(window, size)
    return math.ceil((size - window) / stride) + 1


def passes(window: int = 32, stride: int = 16, size: tuple[int, int] = DEFAULT_SIZE, **_params: object) -> Passes:
    """Per image: the clean image, then one forward pass per patch position."""
    height, width = size
    return Passes(gradient=0, forward=positions(height, window, stride) * positions(width, window, stride) + 1)


def patch_sums(values: torch.Tensor, size: tuple[int, int], window: tuple[int, int], stride: int,
               counts: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W): each pixel's sum of ``values`` (N, P_h * P_w) over the patches that cover it.

    Patch k is at row ``(k // P_w) * stride``, column ``(k % P_w) * stride``, ``window`` (h, w) in size, cut at the
    border: the sum is taken on a canvas large enough for every whole patch, then cropped to ``size``.
    """
    (height, width), (wh, ww), (ph, pw) = size, window, counts
    canvas = ((ph - 1) * stride + wh, (pw - 1) * stride + ww)
    cols = values[:, None, :].expand(-1, wh * ww, -1)
    return F.fold(cols, canvas, (wh, ww), stride=stride)[:, :, :height, :width]


def run(req: Request, window: int = 32, stride: int = 16, baseline: str | torch.Tensor = "dataset_mean"
        ) -> MethodOutput:
    """attributions[obj] = mean over covering patches of f(x) − f(x occluded), f = s_y or −L; (N, 3, H, W)."""
    height, width = req.X.shape[2:]
    if stride < 1 or window < 1:
        raise InvalidInputError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    wh, ww = min(window, height), min(window, width)
    if (wh < height and stride > wh) or (ww < width and stride > ww):
        raise InvalidInputError(f"stride must be at most the window ({window} px), or patches would leave pixels "
                                f"uncovered; got stride={stride}")
    reference, used = make_baseline(req, baseline)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    ph, pw = positions(height, window, stride), positions(width, window, stride)
    per_image = ph * pw
    x = req.x()
    rows_of_h = torch.arange(height, device=req.device)
    cols_of_w = torch.arange(width, device=req.device)
    values = {obj: torch.empty(req.n * per_image, device=req.device, dtype=req.dtype) for obj in req.objectives}

    def build(start: int, stop: int) -> torch.Tensor:
        rows = torch.arange(start, stop, device=req.device)
        n, k = rows // per_image, rows % per_image
        top, left = (k // pw) * stride, (k % pw) * stride
        inside_h = (rows_of_h >= top[:, None]) & (rows_of_h < top[:, None] + wh)
        inside_w = (cols_of_w >= left[:, None]) & (cols_of_w < left[:, None] + ww)
        hidden = (inside_h[:, :, None] & inside_w[:, None, :])[:, None]
        return torch.where(hidden, reference[n], x[n])

    def consume(start: int, stop: int, got: dict[str, torch.Tensor]) -> None:
        for obj, v in got.items():
            values[obj][start:stop] = v

    forward_rows(req, per_image, targets, build, consume)
    covered = patch_sums(torch.ones(1, per_image, device=req.device, dtype=req.dtype), (height, width), (wh, ww),
                         stride, (ph, pw))
    attributions = {}
    for obj, v in values.items():
        drop = objective_per_image(logits, targets, obj, req.loss_sign)[:, None] - v.view(req.n, per_image)
        attributions[obj] = (patch_sums(drop, (height, width), (wh, ww), stride, (ph, pw)) / covered).repeat(1, 3, 1, 1)
    if (wh, ww) != (window, window):
        used["window_cut_to"] = [wh, ww]  # the image is smaller than the window
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, used=used)


METHOD = AttributionMethod(
    name="occlusion", title="Occlusion", citation="Zeiler & Fergus 2014",
    summary="mean over the window × window patches covering a pixel of f(x) − f(x with the patch set to x′)",
    params=(Param("window", 32, int, "side of the square patch in pixels, cut to the image (the paper: a grey "
                  "square, baseline dataset_mean; it gives no size)", minimum=1, maximum=MAX_WINDOW),
            Param("stride", 16, int, "pixels between patch positions, at most the window; each position is a "
                  "forward pass: 13 × 13 positions at 224 px with the defaults, 28 × 28 with window 16 and "
                  "stride 8", minimum=1, maximum=MAX_WINDOW),
            baseline_param("dataset_mean")),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, needs=frozenset({"baseline"}),
    family="perturbation",
)
