"""The batch job (python -m saliency_core.batch), its results folders and the Dataset page's views of them."""
