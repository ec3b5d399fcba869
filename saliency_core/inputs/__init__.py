"""Bytes to validated images: decoding, .npz batches, the bundled samples, preprocessing, the upload store."""
