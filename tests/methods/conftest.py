"""Fixtures of the method tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def nets():
    import torchvision

    torch.manual_seed(0)
    return {
        "resnet18": torchvision.models.resnet18(weights=None).eval(),
        "squeezenet1_1": torchvision.models.squeezenet1_1(weights=None).eval(),
    }
