"""Gradient × input: gradient ⊙ (x − x′) (Shrikumar et al. 2016, "Not Just a Black Box").

With the default baseline x′ = 0 ("dataset_mean": 0 after normalisation) this is Captum's ``InputXGradient``. The
loss objective is used as −L (the log-probability of the target), so that
positive attributions are evidence *for* the target, as for the score.
"""

from __future__ import annotations

import torch

from saliency_core.core.gradients import compute_saliency
from saliency_core.methods._common import MethodOutput, Request, make_baseline
from saliency_core.methods.declaration import AttributionMethod, baseline_param


def run(req: Request, baseline: str | torch.Tensor = "dataset_mean") -> MethodOutput:
    """attributions[obj] = d f / dx ⊙ (x − x′), f = s_y or −L; (N, 3, H, W) signed."""
    reference, used = make_baseline(req, baseline)
    r = compute_saliency(req.model, req.X, req.y, req.objectives, reduction=req.reduction,
                         precision=req.precision, max_batch=req.max_batch)
    delta = req.x() - reference
    attributions = {obj: req.signed(obj, g * delta) for obj, g in r.gradients.items()}  # the gradients are of +L
    req.report(req.n, req.n)
    return MethodOutput(attributions=attributions, logits=r.logits, targets=r.targets, used=used)


METHOD = AttributionMethod(
    name="gradient_x_input", title="Gradient × input", citation="Shrikumar et al. 2016",
    summary="gradient ⊙ (x − x′)",
    params=(baseline_param("dataset_mean"),),
    loss_objective="-L", output="input", run=run, needs=frozenset({"baseline"}),
)
