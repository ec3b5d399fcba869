"""Bytes to validated images: decoding, .npz batches, the bundled samples, preprocessing, the upload store."""

#: This layer's rank: it imports only from layers of lower rank (tests/test_layers.py, docs/architecture.svg).
LAYER = 2
