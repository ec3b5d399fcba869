"""SmoothGrad: the mean input gradient over noisy copies of the image (Smilkov et al. 2017).

``attribution = (1/S) Σ_s ∇f(x + σ z_s)``, with ``z_s ~ N(0, I)`` and
``σ = noise × (max(x) − min(x))`` per image (in the model's input space).
Channels are reduced after averaging (the signed mean, then |·| per
channel), as in Captum's ``NoiseTunnel(Saliency(abs=False), "smoothgrad")``.
The loss objective is +L, as for the plain gradient (the map does not
depend on the sign).

Reproducible: ``z_s`` comes from a private CPU generator seeded with
(``seed``, s), never from torch's global generator, so the same call gives
the same noise in any thread and on any device; every image of a batch
gets the same ``z_s`` (scaled by its own σ), so an image's map does not
depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from saliency_core.core import limits
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    add_rows_per_image,
    clean_forward,
    gradient_rows,
    resolve_targets,
)
from saliency_core.methods.declaration import AttributionMethod, Param, Passes

#: The most noise the dashboard and the batch job take: σ beyond the image's whole value range is noise.
MAX_NOISE = 1.0


def standard_noise(seed: int, sample: int, shape: tuple[int, ...]) -> torch.Tensor:
    """z_sample: standard normal noise of ``shape``, float32 on CPU, a function of (seed, sample) only."""
    state = np.random.SeedSequence([int(seed), int(sample)]).generate_state(1, np.uint64)[0]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state))
    return torch.randn(shape, generator=g, dtype=torch.float32)


def noise_scale(x: torch.Tensor, noise: float) -> torch.Tensor:
    """(N,) σ = noise × (max − min) of each image of ``x`` (N, 3, H, W)."""
    return noise * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))


def noisy_copies(X: torch.Tensor, sample: int, noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """x + σ z_sample for every image of X (N, 3, H, W): the inputs of noise sample ``sample``."""
    z = standard_noise(seed, sample, tuple(X.shape[1:])).to(device=X.device, dtype=X.dtype)
    return X + noise_scale(X, noise).view(-1, 1, 1, 1) * z


def passes(samples: int = 25, **_params: object) -> Passes:
    """Per image: the clean forward pass (its top-1), then one gradient row per noisy copy."""
    return Passes(gradient=samples, forward=1)


#: The noise parameters, shared by every method that averages over these noisy copies (SmoothGrad,
#: SmoothGrad², VarGrad): the same samples, noise and seed give the same copies in each.
NOISE_PARAMS = (
    Param("samples", 25, int, "noisy copies averaged", minimum=1, maximum=limits.MAX_PASSES, costly=True),
    Param("noise", 0.15, float, "σ as a fraction of the image's value range", minimum=0.0, maximum=MAX_NOISE),
    Param("seed", 0, int, "seed of the noise (a private generator: same seed, same map)", minimum=0,
          maximum=limits.MAX_SEED),
)


def noisy_gradients(req: Request, samples: int, noise: float, seed: int,
                    consume: Callable[[int, int, dict[str, torch.Tensor]], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """The input gradients at every noisy copy x + σ z_s of every image, handed to ``consume`` as they come.

    Rows are image-major (row r is copy r % samples of image r // samples),
    the gradients are of s_y and +L (:func:`saliency_core.methods._common.gradient_rows`);
    ``consume(start, stop, {objective: (stop - start, 3, H, W)})`` accumulates
    them. The target is the clean image's top-1, not each copy's.

    Returns (logits (N, C) of the clean images, targets (N,)).
    """
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)  # the clean image's top-1, not each noisy copy's
    x = req.x()
    sigma = noise_scale(x, noise)
    shape = tuple(x.shape[1:])

    def build(start: int, stop: int) -> torch.Tensor:
        rows = range(start, stop)
        n = torch.tensor([r // samples for r in rows], device=req.device)
        drawn = {s: standard_noise(seed, s, shape) for s in {r % samples for r in rows}}  # shared by images
        z = torch.stack([drawn[r % samples] for r in rows]).to(req.device, req.dtype)
        return x[n] + sigma[n].view(-1, 1, 1, 1) * z

    gradient_rows(req, samples, targets, build, consume)
    return logits, targets


def run(req: Request, samples: int = 25, noise: float = 0.15, seed: int = 0) -> MethodOutput:
    """attributions[obj] = mean over ``samples`` noisy copies of d f / dx; (N, 3, H, W) signed."""
    sums = {obj: torch.zeros(req.X.shape, device=req.device, dtype=req.dtype) for obj in req.objectives}

    def consume(start: int, stop: int, grads: dict[str, torch.Tensor]) -> None:
        for obj, g in grads.items():
            add_rows_per_image(sums[obj], start, stop, samples, g)

    logits, targets = noisy_gradients(req, samples, noise, seed, consume)  # rows of +L: signed as declared below
    return MethodOutput(attributions={obj: req.signed(obj, s / samples) for obj, s in sums.items()}, logits=logits,
                        targets=targets)


METHOD = AttributionMethod(
    name="smoothgrad", title="SmoothGrad", citation="Smilkov et al. 2017",
    summary="the mean signed gradient at x + N(0, σ²), σ = noise × (max − min of x); channels reduced after",
    params=NOISE_PARAMS,
    loss_objective="L", output="input", run=run, passes=passes, default_view=False,
)
