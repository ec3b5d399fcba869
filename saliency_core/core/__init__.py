"""The engine's base: the one forward + VJP core (gradients), the one argument check (arguments), model output
checks, baselines, limits, shared helpers."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 1
