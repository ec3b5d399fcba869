"""Models: the registry and loading, the team's own model files (checked before use), weights on demand."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 3
