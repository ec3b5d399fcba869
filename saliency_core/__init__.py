"""Gradient saliency for ImageNet classifiers: score- and loss-gradient maps.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", ICLR
Workshop 2014. This package never imports Streamlit: it serves the
dashboard, notebooks and batch jobs alike.
"""

from saliency_core.core.gradients import SaliencyResult, compute_saliency, compute_saliency_maps, loss_decomposition
from saliency_core.errors import (
    InvalidImageError,
    InvalidInputError,
    ModelUnavailableError,
    SaliencyError,
    UnknownModelError,
    UnknownSampleError,
)
from saliency_core.inputs.images import load_image
from saliency_core.inputs.samples import sample_by_name, sample_images
from saliency_core.methods.registry import ATTRIBUTION_METHODS, AttributionResult, attribute
from saliency_core.models.loading import list_models, load_model
from saliency_core.models.registry import DEFAULT_MODEL

__all__ = [
    "ATTRIBUTION_METHODS",
    "DEFAULT_MODEL",
    "AttributionResult",
    "InvalidImageError",
    "InvalidInputError",
    "ModelUnavailableError",
    "SaliencyError",
    "SaliencyResult",
    "UnknownModelError",
    "UnknownSampleError",
    "attribute",
    "compute_saliency",
    "compute_saliency_maps",
    "list_models",
    "load_image",
    "load_model",
    "loss_decomposition",
    "sample_by_name",
    "sample_images",
]
