"""Maps and tables as Plotly figures and downloads (PNG/CSV/JSON with provenance); never computes a map."""
