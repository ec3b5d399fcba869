"""RISE (Petsiuk, Das & Saenko 2018): the paper's estimator, computed here from the same masks with one forward pass
per masked image, gives the method's map once its mean level is taken off (the method's documented difference),
for the score and the loss (−L), on a small CNN and on the embedded model. The masks are the paper's
construction; the map is reproducible, independent of the batch, and runs on the team's own compiled models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import resize

from saliency_core import attribute
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from saliency_core.methods.rise import Masks
from tests.methods.perturbation_cases import (
    OBJECTIVES,
    assert_matches,
    check_on_own_models,
    check_progress,
    oracle_function,
    own_models,  # noqa: F401 -- fixture
    small_cnn,
    small_coffee,
    smooth_images,
)


def paper_estimator(model, x: torch.Tensor, target: int, objective: str, masks: torch.Tensor, keep: float):
    """S = 1/(N p) Σ_i f(x ⊙ M_i) M_i for one image x (1, 3, H, W) and masks (N, H, W), each masked image through
    the model on its own (float64 sums); and the mean of f over the masks."""
    f = oracle_function(getattr(model, "model", model), objective)  # a LoadedModel's module
    with torch.no_grad():
        values = torch.stack([f(x * m[None, None].to(x.dtype))[0, target] for m in masks]).double()
    m = masks.double()
    return (values[:, None, None] * m).sum(dim=0) / (len(masks) * keep), values.mean()


def check_against_the_paper(model, x, y, masks, grid, keep, seed, **kw):
    r = attribute(model, x, y, "rise", OBJECTIVES, masks=masks, grid=grid, keep=keep, seed=seed, **kw)
    drawn = Masks(masks, tuple(x.shape[2:]), grid, keep, seed).take(torch.arange(masks), torch.device("cpu"),
                                                                     torch.float32)
    for n, target in enumerate(y):
        coverage = drawn.double().sum(dim=0) / (masks * keep)
        for obj in OBJECTIVES:
            s, mean = paper_estimator(model, x[n:n + 1], int(target), obj, drawn, keep)
            assert_matches(r.attributions[obj][n:n + 1, 0], (s - mean * coverage)[None])
            assert torch.equal(r.attributions[obj][n, 0], r.attributions[obj][n, 1])
    return r


def test_the_paper_estimator_less_its_level_on_a_small_cnn():
    check_against_the_paper(small_cnn(), smooth_images(2, 30), [1, 3], masks=40, grid=5, keep=0.4, seed=3,
                            max_batch=7)


def test_the_paper_estimator_less_its_level_on_the_embedded_model(lite0):
    check_against_the_paper(lite0, small_coffee(lite0, 64), [967], masks=24, grid=7, keep=0.5, seed=0)


def test_the_masks_are_the_papers_upsampled_shifted_grids():
    """Each mask is its s × s grid resized bilinearly (scikit-image, as the authors' code; at the border the edge
    is repeated, where their code reflects) to (s + 1)·C and cropped at its offset."""
    size, grid, keep = (30, 26), 4, 0.5
    made = Masks(20, size, grid, keep, seed=11)
    assert made.cell == (8, 7)
    drawn = made.take(torch.arange(20), torch.device("cpu"), torch.float64).numpy()
    for i in range(20):
        up = resize(made.grids[i].numpy().astype(np.float64), ((grid + 1) * 8, (grid + 1) * 7), order=1,
                    mode="edge", anti_aliasing=False)
        dy, dx = (int(v) for v in made.offsets[i])
        assert 0 <= dy < 8 and 0 <= dx < 7
        np.testing.assert_allclose(drawn[i], up[dy:dy + size[0], dx:dx + size[1]], atol=1e-12)
    many = Masks(2000, (32, 32), 7, 0.3, seed=1)
    assert abs(float(many.grids.mean()) - 0.3) < 0.01


def test_same_seed_same_map_and_an_image_does_not_depend_on_its_batch():
    net, x = small_cnn(), smooth_images(3, 32)
    together = attribute(net, x, [0, 1, 2], "rise", OBJECTIVES, masks=20, seed=5, max_batch=6)
    alone = attribute(net, x[1:2], [1], "rise", OBJECTIVES, masks=20, seed=5)
    other = attribute(net, x[1:2], [1], "rise", OBJECTIVES, masks=20, seed=6)
    for obj in OBJECTIVES:
        torch.testing.assert_close(together.attributions[obj][1:2], alone.attributions[obj], rtol=1e-5, atol=1e-7)
        assert not torch.allclose(other.attributions[obj], alone.attributions[obj])


def test_runs_on_torchscript_and_export_models(own_models):  # noqa: F811 -- the fixture
    check_on_own_models(own_models, "rise", {"masks": 16, "grid": 4})


def test_its_cost_is_the_rows_it_runs():
    assert ATTRIBUTION_METHODS["rise"].cost({"masks": 4000}).forward == 4001
    check_progress("rise", {"masks": 12})


@pytest.mark.parametrize("keep", [0.0, 1.5])
def test_a_keep_probability_outside_0_to_1_is_refused(keep):
    from saliency_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="keep"):
        attribute(small_cnn(), smooth_images(1, 32), [0], "rise", masks=2, keep=keep)
