"""What a shared server needs: sign-in decisions, the compute queue and budget, bounded caches, memory."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 5
