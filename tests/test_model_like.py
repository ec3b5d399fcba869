"""saliency_core.core._torch: the one place that says what the engine accepts as a model."""

from __future__ import annotations

import pytest
import torch

from saliency_core.core.model_access import LoadedModelLike, module_for, preprocessing_of, require_eval, unwrap_module
from saliency_core.errors import InvalidInputError


def test_a_loaded_model_and_a_bare_module_resolve_the_same_way(lite0):
    assert isinstance(lite0, LoadedModelLike)
    assert unwrap_module(lite0) is lite0.model
    assert module_for(lite0, "exact") is lite0.model  # on CPU both modes run the model as loaded
    assert preprocessing_of(lite0) is lite0.preprocessing

    bare = torch.nn.Linear(3, 2).eval()
    assert not isinstance(bare, LoadedModelLike)
    assert unwrap_module(bare) is bare and module_for(bare, "fast") is bare
    assert preprocessing_of(bare) is None


def test_anything_else_is_refused_by_name():
    for junk in (object(), "resnet18", None):
        with pytest.raises(InvalidInputError, match=r"torch\.nn\.Module or a LoadedModel"):
            unwrap_module(junk)


def test_train_mode_anywhere_is_refused_without_touching_the_mode():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).eval()
    require_eval(model)
    model[1].train()
    with pytest.raises(InvalidInputError, match="eval mode"):
        require_eval(model)
    assert model[1].training and not model[0].training
