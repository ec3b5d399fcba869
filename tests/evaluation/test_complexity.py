"""Complexity (entropy of fractional contributions) against Quantus 0.6.0 and its extremes."""

import math

import numpy as np
import pytest
import quantus
from conftest import quantus_arrays

from saliency_core.evaluation.metrics.complexity import complexity


def test_complexity_equals_quantus_on_gradient_maps(data):
    X, y, maps = data
    x, yy, a = quantus_arrays(X, y, maps)
    theirs = quantus.Complexity(normalise=False, abs=True, disable_warnings=True)(
        model=None, x_batch=x, y_batch=yy, a_batch=a.copy())
    np.testing.assert_allclose(complexity(maps), theirs, atol=1e-5)


def test_a_constant_map_has_the_most_entropy_and_one_pixel_none():
    spike = np.zeros((1, 5, 6))
    spike[0, 1, 1] = 3.0
    assert complexity(np.full((1, 5, 6), 0.5))[0] == pytest.approx(math.log(30))
    assert complexity(spike)[0] == 0.0


def test_an_all_zero_map_is_undefined():
    assert math.isnan(complexity(np.zeros((1, 4, 4)))[0])
