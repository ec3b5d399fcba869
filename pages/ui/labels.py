"""What the dashboard calls things: the labels of objectives, reductions, precisions, agreement scores and
the metrics that run the model."""

from __future__ import annotations

from saliency_core.evaluation import metric_table
from saliency_core.evaluation.metrics import get_metric

COLORSCALES = ["hot", "viridis", "inferno", "gray", "turbo", "jet"]  # "hot" is what cs231n draws with
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "npz"]
# The objectives, named by their plain gradient (the cs231n maps): the Objective picker and the gradient's maps.
OBJECTIVE_LABELS = {"score": "Score gradient  ∂s_y/∂x", "loss": "Loss gradient  ∂L/∂x"}
# Short enough for the sidebar's select (the paper that reduces with max is named in the select's help).
REDUCTION_LABELS = {"max": "max |g| over RGB", "mean_abs": "mean |g| over RGB", "l2": "L2 norm over RGB"}
# The method families (saliency_core.methods.declaration.FAMILIES) as the sidebar's Family choice names them;
# a family not listed here is shown by its key.
FAMILY_LABELS = {"gradient": "Gradient", "path": "Path integral", "reference": "Reference difference",
                 "region": "Region", "perturbation": "Perturbation", "CAM": "Class activation map",
                 "attention": "Attention"}
AGREEMENT_LABELS = {"pearson": "Pearson r", "spearman": "Spearman ρ", "cosine": "cosine similarity",
                    "ssim": "SSIM", "iou_top1": "IoU of top 1 %", "iou_top5": "IoU of top 5 %",
                    "iou_top10": "IoU of top 10 %"}
PRECISION_LABELS = {"exact": "exact (strict float32)", "fast": "fast (float16 autocast on GPU)"}


def metric_label(name: str) -> str:
    """A metric that runs the model as a picker lists it: its title and its cost per map at its defaults."""
    m, cost = get_metric(name), metric_table.metric_cost([name])
    parts = [f"{cost.forward} forward pass{'es' if cost.forward > 1 else ''}"] if cost.forward else []
    if cost.attributions:
        parts.append(f"{cost.attributions} map{'s' if cost.attributions > 1 else ''} recomputed")
    return f"{m.title} ({', '.join(parts)})"
