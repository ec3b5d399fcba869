"""Judging maps: statistics, agreement, deletion/insertion, randomisation, the Methods page's comparison and ranking."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 5
