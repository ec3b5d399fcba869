"""The old names still work for one release, each saying what to write instead.

``compute_saliency(methods=)``, ``compute_saliency_maps(method=)`` and
``cascading_randomization(methods=)`` named the objectives. When the old names
go, this file goes with them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_core import compute_saliency, compute_saliency_maps
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.sanity import cascading_randomization

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
Y = [1, 3]


@pytest.fixture
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 5)).eval()


def warned_here(record: pytest.WarningsRecorder) -> bool:
    """The warning names this file: the line a user has to change, not a line inside saliency_core."""
    return [w.filename for w in record if issubclass(w.category, DeprecationWarning)] == [__file__]


# --------------------------------------------------------------------------- keywords


def test_compute_saliency_methods_is_objectives(net):
    new = compute_saliency(net, X, Y, objectives=("loss",))
    with pytest.warns(DeprecationWarning, match=r"write compute_saliency\(objectives=\.\.\.\)") as record:
        old = compute_saliency(net, X, Y, methods=("loss",))
    assert warned_here(record)
    assert list(old.maps) == ["loss"] and torch.equal(old.maps["loss"], new.maps["loss"])
    with pytest.raises(InvalidInputError, match="objectives= only"):
        compute_saliency(net, X, Y, ("score",), methods=("loss",))


def test_compute_saliency_maps_method_is_objective(net):
    y = torch.tensor(Y)
    with pytest.warns(DeprecationWarning, match=r"write compute_saliency_maps\(objective=\.\.\.\)") as record:
        old = compute_saliency_maps(X, y, net, method="loss")
    assert warned_here(record)
    assert torch.equal(old, compute_saliency_maps(X, y, net, "loss"))
    assert torch.equal(compute_saliency_maps(X, y, net), compute_saliency(net, X, y, ("score",)).maps["score"])


def test_cascading_randomization_methods_is_objectives(net):
    new = cascading_randomization(net, X, Y, objectives=("score",), max_stages=2, seed=3)
    with pytest.warns(DeprecationWarning, match=r"write cascading_randomization\(objectives=\.\.\.\)") as record:
        old = cascading_randomization(net, X, Y, methods=("score",), max_stages=2, seed=3)
    assert warned_here(record)
    assert old.objectives == ("score",) and np.array_equal(old.maps["score"], new.maps["score"])
