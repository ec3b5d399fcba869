"""Sparseness (Gini index) against Quantus 0.6.0 and its extremes."""

import math

import numpy as np
import pytest
import quantus
from conftest import quantus_arrays

from saliency_core.evaluation.metrics.sparseness import sparseness


def test_sparseness_equals_quantus_on_gradient_maps(data):
    X, y, maps = data
    x, yy, a = quantus_arrays(X, y, maps)
    theirs = quantus.Sparseness(normalise=False, abs=True, disable_warnings=True)(
        model=None, x_batch=x, y_batch=yy, a_batch=a.copy())
    # Quantus adds 1e-7 to every value first (these gradient maps are ~1e-3, so it shows): like with like.
    np.testing.assert_allclose(sparseness(maps + 1e-7), theirs, atol=1e-10)
    assert not np.allclose(sparseness(maps), theirs, atol=1e-6)


def test_a_constant_map_scores_zero_and_one_pixel_scores_the_maximum():
    n = 5 * 6
    flat = np.full((1, 5, 6), 2.0)
    spike = np.zeros((1, 5, 6))
    spike[0, 2, 3] = 4.0
    assert sparseness(flat)[0] == pytest.approx(0.0, abs=1e-12)
    assert sparseness(spike)[0] == pytest.approx((n - 1) / n)


def test_an_all_zero_map_is_undefined():
    assert math.isnan(sparseness(np.zeros((1, 4, 4)))[0])
