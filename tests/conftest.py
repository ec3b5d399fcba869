"""Shared fixtures: the embedded model is loaded once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores here; keep torch from oversubscribing them when tests use threads.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def lite0():
    from saliency_core.models import load_model

    return load_model(None, device="cpu")
