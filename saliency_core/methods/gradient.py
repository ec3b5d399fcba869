"""Gradient: the input gradient of the score or the loss (Simonyan, Vedaldi & Zisserman 2014).

Exactly :func:`saliency_core.core.gradients.compute_saliency`: one forward pass,
one input-VJP per objective. The loss objective is +L, as on today's pages
(the map, |gradient| reduced over channels, does not depend on the sign).
"""

from __future__ import annotations

from saliency_core.core.gradients import compute_saliency
from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.declaration import AttributionMethod


def run(req: Request) -> MethodOutput:
    r = compute_saliency(req.model, req.X, req.y, req.objectives, reduction=req.reduction,
                         precision=req.precision, max_batch=req.max_batch)
    req.report(req.n, req.n)
    return MethodOutput(attributions={obj: req.signed(obj, g) for obj, g in r.gradients.items()}, maps=r.maps,
                        logits=r.logits, targets=r.targets)


METHOD = AttributionMethod(
    name="gradient", title="Gradient", citation="Simonyan, Vedaldi & Zisserman 2014",
    summary="the input gradient of the objective",
    params=(),
    loss_objective="L", output="input", run=run,  # one pass per image, shown by default, needs nothing
)
