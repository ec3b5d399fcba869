"""Maps and tables as Plotly figures and downloads (PNG/CSV/JSON with provenance); never computes a map."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 6
