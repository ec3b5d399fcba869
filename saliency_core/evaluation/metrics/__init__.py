"""Evaluation metrics of saliency maps, one module each; :data:`METRICS` collects their declarations.

Every metric takes maps (N, H, W) of images X (N, 3, H, W) for targets y; those that run the model
perturb the output the map explains (s_y for the score; for the loss, −L = log p_y where the method's
``loss_objective`` is "-L", else L: :func:`~saliency_core.evaluation.metrics._common.output_for`), share
one clean pass (``clean=``, :func:`~saliency_core.evaluation.metrics._common.clean_pass`) and batch the
perturbed copies under the memory budget. Cost per image, in forward rows (F) and attribution calls (A):

=========================  ==============================================  ======  =============================
metric                     paper                                           better  cost per image
=========================  ==============================================  ======  =============================
road_morf, road_lerf       Rong et al., ICML 2022 (ROAD)                   lower,  F = steps + 1 (each order),
                                                                           higher  a sparse solve per row
faithfulness_correlation   Bhatt, Weller & Moura, IJCAI 2020               higher  F = runs + 1
infidelity                 Yeh et al., NeurIPS 2019                        lower   F = samples + 1
max_sensitivity,           Yeh et al., NeurIPS 2019                        lower   A = samples (one run
avg_sensitivity                                                                    gives both)
sparseness                 Chalasani et al., ICML 2020 (Gini index)        higher  none (the map alone)
complexity                 Bhatt, Weller & Moura, IJCAI 2020 (entropy)     lower   none
random_logit               Sixt, Granz & Landgraf, ICML 2020 (SSIM)        lower   A = 1
pointing_game              Zhang et al., IJCV 2018                         higher  none (needs a mask)
relevance_mass_accuracy    Arras, Osman & Samek, Information Fusion 2022   higher  none (needs a mask)
relevance_rank_accuracy    Arras, Osman & Samek, Information Fusion 2022   higher  none (needs a mask)
=========================  ==============================================  ======  =============================

Several metrics at once: :func:`saliency_core.evaluation.metrics.evaluate.evaluate` (one clean pass, one ROAD
run for both orders, one sensitivity run for max and average). Seeded draws are keyed on each image
(:func:`~saliency_core.evaluation.metrics._common.image_seeds`: the seed and a sha256 of the image), so an
image's value does not depend on the batch it comes in.

Defaults: ROAD steps 9 (10 %..90 %), noise 0.01; faithfulness correlation 100 runs of 224 pixels;
infidelity 50 Gaussian perturbations (std 0.1), optimal scaling; sensitivity 10 samples, radius 0.2.
"""

from __future__ import annotations

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import (
    complexity,
    faithfulness_correlation,
    infidelity,
    pointing_game,
    random_logit,
    relevance_mass,
    relevance_rank,
    road,
    sensitivity,
    sparseness,
)
from saliency_core.evaluation.metrics.declaration import Metric, MetricCost

#: Every metric, in the order a table lists them.
METRICS: list[Metric] = [
    *road.METRICS,
    faithfulness_correlation.METRIC,
    infidelity.METRIC,
    *sensitivity.METRICS,
    sparseness.METRIC,
    complexity.METRIC,
    random_logit.METRIC,
    pointing_game.METRIC,
    relevance_mass.METRIC,
    relevance_rank.METRIC,
]

#: name -> metric, built from :data:`METRICS`.
EVALUATION_METRICS: dict[str, Metric] = {m.name: m for m in METRICS}


def get_metric(name: object) -> Metric:
    """The metric called ``name``; InvalidInputError listing the known ones for any other value."""
    found = EVALUATION_METRICS.get(name) if isinstance(name, str) else None
    if found is None:
        raise InvalidInputError(f"Unknown metric {name!r}. Known metrics: {', '.join(EVALUATION_METRICS)}.")
    return found


__all__ = ["EVALUATION_METRICS", "METRICS", "Metric", "MetricCost", "get_metric"]
