"""VarGrad: the variance of the input gradient over noisy copies of the image (Adebayo et al. 2018).

Adebayo, Gilmer, Goodfellow & Kim, "Local Explanation Methods for Deep
Neural Networks Lack Sensitivity to Parameter Values", ICLR Workshop 2018:
``attribution = (1/S) Σ_s (g_s − ḡ)²`` with ``g_s = ∇f(x + σ z_s)`` and ``ḡ``
their mean, element by element, over the same noisy copies as SmoothGrad
(:mod:`saliency_core.methods.smoothgrad`). The population variance (÷ S, not
S − 1), as Captum's ``NoiseTunnel(Saliency(abs=False), nt_type="vargrad")``;
Captum computes it as E[g²] − E[g]², which cancels where the variance is
small against the mean: here the rows' moments are merged chunk by chunk
(Chan, Golub & LeVeque's pairwise update), which does not. Both objectives
come from the same passes; the variance does not depend on the sign of the
objective, so the loss is L.
"""

from __future__ import annotations

import torch

from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.declaration import AttributionMethod
from saliency_core.methods.smoothgrad import NOISE_PARAMS, noisy_gradients, passes


class Moments:
    """Per-image running count, mean and sum of squared deviations (M2) of (S, 3, H, W) gradient rows.

    Rows arrive image-major in chunks (:func:`saliency_core.methods._common.gradient_rows`); each image's
    part of a chunk is merged with the pairwise update, in a fixed order (the same bits on any device).
    """

    def __init__(self, like: torch.Tensor) -> None:
        self.count = [0] * like.shape[0]
        self.mean = torch.zeros_like(like)
        self.m2 = torch.zeros_like(like)

    def add(self, start: int, stop: int, per_image: int, rows: torch.Tensor) -> None:
        """Merge rows start..stop (row r belongs to image r // per_image)."""
        r = start
        while r < stop:
            n = r // per_image
            end = min(stop, (n + 1) * per_image)
            part = rows[r - start:end - start]
            k, before = end - r, self.count[n]
            total = before + k
            part_mean = part.mean(dim=0)
            delta = part_mean - self.mean[n]
            self.mean[n] += delta * (k / total)
            self.m2[n] += (part - part_mean).square().sum(dim=0) + delta.square() * (before * k / total)
            self.count[n] = total
            r = end

    def variance(self) -> torch.Tensor:
        """(N, 3, H, W) population variance, M2 / count."""
        counts = torch.tensor(self.count, device=self.m2.device, dtype=self.m2.dtype).view(-1, 1, 1, 1)
        return self.m2 / counts


def run(req: Request, samples: int = 25, noise: float = 0.15, seed: int = 0) -> MethodOutput:
    """attributions[obj] = variance over ``samples`` noisy copies of d f / dx; (N, 3, H, W) >= 0."""
    moments = {obj: Moments(torch.zeros(req.X.shape, device=req.device, dtype=req.dtype)) for obj in req.objectives}

    def consume(start: int, stop: int, grads: dict[str, torch.Tensor]) -> None:
        for obj, g in grads.items():
            moments[obj].add(start, stop, samples, g)

    logits, targets = noisy_gradients(req, samples, noise, seed, consume)
    return MethodOutput(attributions={obj: m.variance() for obj, m in moments.items()}, logits=logits,
                        targets=targets)


METHOD = AttributionMethod(
    name="vargrad", title="VarGrad", citation="Adebayo et al. 2018",
    summary="the variance of the gradient over SmoothGrad's noisy copies (÷ S); sign-free, so the loss is L",
    params=NOISE_PARAMS,
    loss_objective="L", output="input", run=run, passes=passes, default_view=False,
)
