"""SmoothGrad²: the mean squared input gradient over noisy copies of the image (Hooker et al. 2019).

Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods
in Deep Neural Networks", NeurIPS 2019 (SG-SQ):
``attribution = (1/S) Σ_s (∇f(x + σ z_s))²``, element by element, over the
same noisy copies as SmoothGrad (:mod:`saliency_core.methods.smoothgrad`:
same ``samples``, ``noise`` and ``seed``, same copies), as Captum's
``NoiseTunnel(Saliency(abs=False), nt_type="smoothgrad_sq")``. Both
objectives come from the same passes. Squares do not depend on the sign of
the objective, so the loss is L, as for SmoothGrad.
"""

from __future__ import annotations

import torch

from saliency_core.methods._common import MethodOutput, Request, add_rows_per_image
from saliency_core.methods.declaration import AttributionMethod
from saliency_core.methods.smoothgrad import NOISE_PARAMS, noisy_gradients, passes


def run(req: Request, samples: int = 25, noise: float = 0.15, seed: int = 0) -> MethodOutput:
    """attributions[obj] = mean over ``samples`` noisy copies of (d f / dx)²; (N, 3, H, W) >= 0."""
    sums = {obj: torch.zeros(req.X.shape, device=req.device, dtype=req.dtype) for obj in req.objectives}

    def consume(start: int, stop: int, grads: dict[str, torch.Tensor]) -> None:
        for obj, g in grads.items():
            add_rows_per_image(sums[obj], start, stop, samples, g.square())

    logits, targets = noisy_gradients(req, samples, noise, seed, consume)
    return MethodOutput(attributions={obj: s / samples for obj, s in sums.items()}, logits=logits, targets=targets)


METHOD = AttributionMethod(
    name="smoothgrad_sq", title="SmoothGrad²", citation="Hooker et al. 2019",
    summary="the mean squared gradient over SmoothGrad's noisy copies; sign-free, so the loss is L",
    params=NOISE_PARAMS,
    loss_objective="L", output="input", run=run, passes=passes, default_view=False,
)
