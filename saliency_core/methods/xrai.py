"""XRAI: regions of the image ranked by the density of Integrated Gradients' attribution inside them.

Kapishnikov, Bolukbasi, Viégas & Terry, "XRAI: Better Attributions Through
Regions", ICCV 2019; PAIR's ``saliency.core.XRAI`` (``saliency==0.2.1``) step
for step:

1. Base attribution: Integrated Gradients from a black and from a white
   baseline, averaged (PAIR's default baselines are the image's own min and
   max: black and white for an image in [0, 1] or [−1, 1]), then the signed
   *maximum* over the colour channels per pixel (PAIR's
   ``_attr_aggregation_max``; not a sum, not |·|). The project's engine
   (:mod:`~saliency_core.methods.integrated_gradients`, fixed trapezoid rule
   of ``steps`` points per baseline: PAIR's points, ``linspace(0, 1, steps)``,
   with half weights at the ends) runs both baselines in one stream of
   gradient rows. Black and white are (0 − mean) / std and (1 − mean) / std
   through the model's normalisation (the project's baselines have "black",
   no "white": white is made here the same way); a bare module, whose
   normalisation is unknown, gets PAIR's default: the image's min and max.
2. Segments, once per image for both objectives: Felzenszwalb's graph
   segmentation (skimage) of the pixel image (the model's input unnormalised,
   x · std + mean; a bare module's input as given), rescaled to [−1, 1] and
   resized to 224 px (cubic), at scales 50, 100, 150, 250, 500, 1200
   (sigma 0.8, min size 150), each label image resized back (nearest) and
   every label min..max a mask (empty ones included), each dilated by a
   disk of radius 5: PAIR's ``_get_segments_felzenszwalb``.
3. Greedy ranking, ``mode``:

   - "full" (PAIR's ``_xrai``): repeatedly add the region whose pixels not
     yet covered have the highest mean attribution (its gain), dropping
     regions that would add fewer than 50 pixels, until the covered area
     exceeds ``area_threshold`` or no region is left. PAIR recomputes every
     region's gain at every step (O(regions² · pixels)); here each region's
     uncovered count and sum are kept and only the newly covered pixels are
     subtracted (O(regions · pixels) in all), and the leaders within 1e-9 of
     the best are recomputed exactly so that ties go to the first region, as
     PAIR's strict ``>`` does.
   - "fast" (PAIR's ``_xrai_fast``): regions sorted once by their own mean
     attribution (stable), then added in that order, each covering what is
     left of it (skipped if under 50 pixels); ``area_threshold`` is ignored,
     as in PAIR.

   Each pixel's value is the gain of the region that first covered it
   (PAIR's ``attribution_mask``); pixels left uncovered get the mean
   attribution over all of them.

The attributions are PAIR's ``attribution_mask`` as it is: one signed
channel per pixel, (N, 1, H, W) (``output="layer"``, like the CAMs: no
channel reduction). The maps, which the project keeps >= 0 (statistics,
metrics and figures read them as magnitudes), are those gains less each
image's smallest: the same order of regions and the same differences
between them (a region's rank is what XRAI is read for), 0 for the least
important region; |gain| would rank a region of strongly negative density
first, and a ReLU would tie all negative regions.

The loss objective is used as −L (the target's log-probability): its IG and
so its regions' gains are evidence for the target. Segments do not depend on
the objective and are computed once per image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from saliency_core.core import limits
from saliency_core.core.baselines import normalisation_of
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import MethodOutput, Request, clean_forward, resolve_targets
from saliency_core.methods.declaration import AttributionMethod, Param, Passes
from saliency_core.methods.integrated_gradients import _fixed

#: IG points per baseline when not told (two baselines: 2 x STEPS gradient rows): one 224 px map of the embedded
#: model, both objectives, in about 10 s on a 2-core CPU (a gradient row costs about 0.1 s there; PAIR's default
#: is 100 per baseline).
STEPS = 32
MODES = ("full", "fast")
#: PAIR's segmentation: Felzenszwalb at these scales, sigma, minimum size, on the image resized to this side and
#: rescaled to [-1, 1]; each segment dilated by a disk of this radius.
SCALES = (50, 100, 150, 250, 500, 1200)
SIGMA = 0.8
MIN_SIZE = 150
RESIZE = (224, 224)
VALUE_RANGE = (-1.0, 1.0)
DILATION = 5
#: A region that adds fewer new pixels than this is dropped (PAIR's experimental min_pixel_diff).
MIN_PIXEL_DIFF = 50
#: Gains within this relative distance of the best are recomputed exactly before one is chosen (full mode).
_TIE = 1e-9


def passes(steps: int = STEPS, **_params: object) -> Passes:
    """Per image: ``steps`` gradient rows from each of the two baselines (both objectives from each row), and the
    forward pass of the image (its logits and target)."""
    return Passes(gradient=2 * steps, forward=1)


# ---------------------------------------------------------------- segments

def segments(image: np.ndarray) -> np.ndarray:
    """(K, H, W) bool: PAIR's ``_get_segments_felzenszwalb`` of an (H, W, 3) pixel image, mask for mask."""
    from skimage import segmentation
    from skimage.morphology import disk
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float64)
    shape = image.shape[:2]
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)  # PAIR divides by 0 here
    scaled = scaled * (VALUE_RANGE[1] - VALUE_RANGE[0]) + VALUE_RANGE[0]
    scaled = resize(scaled, RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    masks = []
    for scale in SCALES:
        seg = segmentation.felzenszwalb(scaled, scale=scale, sigma=SIGMA, min_size=MIN_SIZE)
        seg = resize(seg, shape, order=0, preserve_range=True, mode="constant", anti_aliasing=False).astype(int)
        labels = np.arange(seg.min(), seg.max() + 1)
        masks.append(seg[None] == labels[:, None, None])
    return _dilate(np.concatenate(masks), disk(DILATION).astype(bool))


def _dilate(masks: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """(K, H, W) bool: each mask dilated by the (symmetric) footprint, outside the image counting as False:
    skimage's ``dilation``, all masks at once (a disk's rows are intervals: a max over shifted rows)."""
    k, h, w = masks.shape
    r = footprint.shape[0] // 2
    padded = np.zeros((k, h + 2 * r, w + 2 * r), dtype=bool)
    padded[:, r:r + h, r:r + w] = masks
    out = np.zeros_like(masks)
    for dy in range(-r, r + 1):
        for dx in np.flatnonzero(footprint[dy + r]) - r:
            out |= padded[:, r + dy:r + dy + h, r + dx:r + dx + w]
    return out


def pixel_image(req: Request, x: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) float64: the images as pixels (unnormalised through the model's normalisation), or as given."""
    norm = normalisation_of(req.model, None, None)
    pixels = x.detach().double().cpu()
    if norm is not None:
        mean, std = (torch.tensor([float(v) for v in t], dtype=torch.float64).view(1, -1, 1, 1) for t in norm)
        pixels = pixels * std + mean
    return pixels.permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- ranking

def _mean(attr: np.ndarray, mask: np.ndarray) -> float:
    """PAIR's ``_gain_density``: the mean of ``attr`` over ``mask``, −inf if empty (same elements, same order)."""
    return float(attr[mask].mean()) if mask.any() else -np.inf


def rank_full(attr: np.ndarray, masks: np.ndarray, area_threshold: float = 1.0,
              min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """PAIR's ``_xrai`` of a (H, W) float64 attribution and (K, H, W) bool masks: the (H, W) gain map."""
    shape = attr.shape
    flat = attr.reshape(-1)
    m = masks.reshape(len(masks), -1)
    columns = np.ascontiguousarray(m.T)  # (P, K): the regions holding each pixel
    count = m.sum(axis=1).astype(np.int64)  # each region's pixels not yet covered ...
    total = m.astype(np.float64) @ flat  # ... and their attribution
    remaining = np.ones(len(m), dtype=bool)
    covered = np.zeros(flat.shape, dtype=bool)
    out = np.full(flat.shape, -np.inf)
    area = 0.0
    while area <= area_threshold:
        remaining &= count >= min_pixel_diff
        if not remaining.any():
            break
        gain = np.full(len(m), -np.inf)
        gain[remaining] = total[remaining] / count[remaining]
        top = gain.max()
        leaders = np.flatnonzero(gain >= top - _TIE * max(abs(top), 1e-300))
        best, best_gain = -1, -np.inf
        for k in leaders:  # ascending: the first of equal gains wins, as PAIR's strict ">"
            g = _mean(flat, m[k] & ~covered)
            if g > best_gain:
                best, best_gain = int(k), g
        new = m[best] & ~covered
        out[new] = best_gain
        idx = np.flatnonzero(new)
        count -= columns[idx].sum(axis=0)
        total -= flat[idx] @ columns[idx]
        covered |= m[best]
        remaining[best] = False
        area = covered.sum() / covered.size
    left = out == -np.inf
    if left.any():
        out[left] = flat[left].mean()
    return out.reshape(shape)


def rank_fast(attr: np.ndarray, masks: np.ndarray, min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """PAIR's ``_xrai_fast`` of a (H, W) float64 attribution and (K, H, W) bool masks: the (H, W) gain map."""
    shape = attr.shape
    flat = attr.reshape(-1)
    m = masks.reshape(len(masks), -1)
    gains = np.array([_mean(flat, mask) for mask in m])
    covered = np.zeros(flat.shape, dtype=bool)
    out = np.full(flat.shape, -np.inf)
    for k in np.argsort(-gains, kind="stable"):
        new = m[k] & ~covered
        if new.sum() < min_pixel_diff:
            continue
        out[new] = flat[new].mean()
        covered |= m[k]
    left = out == -np.inf
    if left.any():
        out[left] = flat[left].mean()
    return out.reshape(shape)


# ---------------------------------------------------------------- the method

def _baselines(req: Request, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(black, white), each shaped like x: through the model's normalisation, else each image's min and max."""
    norm = normalisation_of(req.model, None, None)
    if norm is None:
        lo = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
        hi = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
        return lo.clone(), hi.clone()
    mean, std = (torch.tensor([float(v) for v in t], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
                 for t in norm)
    return ((0.0 - mean) / std).expand_as(x).clone(), ((1.0 - mean) / std).expand_as(x).clone()


def base_attributions(req: Request, targets: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """objective -> (N, 3, H, W): IG from black and from white (trapezoid, ``steps`` points each), averaged;
    signed as the method declares (−L for the loss). One stream of 2 N ``steps`` gradient rows."""
    x = req.x()
    black, white = _baselines(req, x)
    both = dataclasses.replace(req, X=torch.cat([req.X, req.X]), y=torch.cat([req.y, req.y]))
    sums = _fixed(both, torch.cat([x, x]), torch.cat([black, white]), torch.cat([targets, targets]), "trapezoid",
                  steps)
    delta = torch.cat([x - black, x - white])
    n = req.n
    out = {}
    for o, s in sums.items():
        ig = req.signed(o, delta * s)  # the rows ran +L
        out[o] = (ig[:n] + ig[n:]) / 2
    return out


def _check(steps: int, mode: str, area_threshold: float) -> None:
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    if steps < 2:
        raise InvalidInputError(f"steps must be an integer >= 2 (the trapezoid rule's points per baseline), got "
                                f"{steps!r}")
    if not 0.0 <= area_threshold <= 1.0:
        raise InvalidInputError(f"area_threshold must be a number from 0 to 1 (the fraction of the image ranked "
                                f"region by region), got {area_threshold!r}")


def run(req: Request, steps: int = STEPS, mode: str = "full", area_threshold: float = 1.0) -> MethodOutput:
    """attributions[obj] = (N, 1, H, W): each pixel the gain of the region that first covered it (PAIR's map);
    maps[obj] = (N, H, W) those gains less the image's smallest (>= 0)."""
    _check(steps, mode, area_threshold)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    base = base_attributions(req, targets, steps)
    images = pixel_image(req, req.x())
    maps = {o: torch.empty((req.n, *req.X.shape[2:]), dtype=torch.float64) for o in req.objectives}
    for i in range(req.n):
        masks = segments(images[i])
        for o in req.objectives:
            attr = base[o][i].amax(dim=0).double().cpu().numpy()  # PAIR's _attr_aggregation_max
            ranked = (rank_full(attr, masks, area_threshold) if mode == "full" else rank_fast(attr, masks))
            maps[o][i] = torch.from_numpy(ranked)
    attributions = {o: v.to(device=req.device, dtype=req.dtype)[:, None] for o, v in maps.items()}
    shifted = {o: (v - v.amin(dim=(1, 2), keepdim=True)).to(device=req.device, dtype=req.dtype)
               for o, v in maps.items()}  # >= 0, PAIR's order of regions
    return MethodOutput(attributions=attributions, maps=shifted, logits=logits, targets=targets)


METHOD = AttributionMethod(
    name="xrai", title="XRAI", citation="Kapishnikov et al. 2019",
    summary="image regions (Felzenszwalb segments) added greedily by the density of Integrated Gradients' "
            "attribution (black and white baselines) inside them; each pixel gets its region's gain",
    params=(Param("mode", "full", str, "full: every region's gain recomputed after each one added (PAIR's "
                  "default); fast: regions ranked once by their own mean attribution", MODES),
            Param("steps", STEPS, int, "Integrated Gradients' points per baseline, black and white (2 x steps "
                  f"gradient passes; {STEPS}: about 10 s for a 224 px image on a 2-core CPU; PAIR's default: 100)",
                  minimum=2, maximum=limits.MAX_PASSES, costly=True),
            Param("area_threshold", 1.0, float, "full mode: the fraction of the image ranked region by region; "
                  "the rest becomes one region (fast mode ranks all)", minimum=0.0, maximum=1.0)),
    loss_objective="-L", output="layer", run=run, passes=passes, default_view=False, family="region",
)
