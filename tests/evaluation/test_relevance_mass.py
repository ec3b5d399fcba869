"""Relevance mass accuracy against Quantus 0.6.0, and its known answers."""

import math

import numpy as np
import quantus
from conftest import quantus_arrays
from test_pointing_game import masks

from saliency_core.evaluation.metrics.relevance_mass import relevance_mass_accuracy


def test_relevance_mass_equals_quantus(data):
    X, y, maps = data
    x, yy, a = quantus_arrays(X, y, maps)
    m = masks(maps.shape)
    theirs = quantus.RelevanceMassAccuracy(normalise=False, abs=False, disable_warnings=True)(
        model=None, x_batch=x, y_batch=yy, a_batch=a, s_batch=m[:, None].astype(float))
    np.testing.assert_allclose(relevance_mass_accuracy(maps, m), theirs, atol=1e-12)


def test_a_map_inside_the_mask_scores_one_and_a_constant_map_the_mask_share():
    m = masks((2, 16, 16), seed=2)
    assert relevance_mass_accuracy(m * 3.0, m).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(relevance_mass_accuracy(np.ones((2, 16, 16)), m), 36 / 256)


def test_an_empty_mask_or_a_zero_map_is_undefined():
    m = masks((1, 16, 16))
    assert math.isnan(relevance_mass_accuracy(np.ones((1, 16, 16)), np.zeros_like(m))[0])
    assert math.isnan(relevance_mass_accuracy(np.zeros((1, 16, 16)), m)[0])
