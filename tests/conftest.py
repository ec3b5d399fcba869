"""Shared fixtures: the embedded model is loaded once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores here; keep torch from oversubscribing them when tests use threads.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# The suite never reaches the network: tests that download turn this on and serve the file on 127.0.0.1.
os.environ["SALIENCY_ALLOW_DOWNLOAD"] = "0"
os.environ.pop("SALIENCY_WEIGHTS_URL", None)
os.environ.pop("SALIENCY_MODELS_DIR", None)


@pytest.fixture(scope="session")
def lite0():
    from saliency_core.models.loading import load_model

    return load_model(None, device="cpu")
