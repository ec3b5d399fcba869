"""The batch job (python -m saliency_core.batch), its results folders and the Dataset page's views of them."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 7
