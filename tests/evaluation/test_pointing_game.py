"""Pointing game against Quantus 0.6.0, and its known answers."""

import math

import numpy as np
import quantus
from conftest import quantus_arrays

from saliency_core.evaluation.metrics.pointing_game import pointing_game


def masks(shape, seed=0):
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, dtype=bool)
    for i in range(shape[0]):
        top, left = rng.integers(0, shape[1] - 6, 2)
        m[i, top:top + 6, left:left + 6] = True
    return m


def test_pointing_game_equals_quantus(data):
    X, y, maps = data
    x, yy, a = quantus_arrays(X, y, maps)
    m = masks(maps.shape)
    m[0] = np.asarray(maps[0]) == np.asarray(maps[0]).max()  # one sure hit
    theirs = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)(
        model=None, x_batch=x, y_batch=yy, a_batch=a, s_batch=m[:, None].astype(float))
    ours = pointing_game(maps, m)
    np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=float))
    assert ours[0] == 1.0


def test_a_map_equal_to_the_mask_hits_and_its_complement_misses():
    m = masks((3, 16, 16), seed=1)
    assert pointing_game(m.astype(float), m).tolist() == [1.0, 1.0, 1.0]
    assert pointing_game((~m).astype(float), m).tolist() == [0.0, 0.0, 0.0]


def test_the_tolerance_counts_a_maximum_near_the_mask():
    m = np.zeros((1, 16, 16), dtype=bool)
    m[0, 4:8, 4:8] = True
    a = np.zeros((1, 16, 16))
    a[0, 4, 10] = 1.0  # 3 px right of the mask's edge
    assert pointing_game(a, m).tolist() == [0.0]
    assert pointing_game(a, m, tolerance=3).tolist() == [1.0]
    assert pointing_game(a, m, tolerance=2.9).tolist() == [0.0]


def test_an_empty_mask_is_undefined():
    assert math.isnan(pointing_game(np.ones((1, 4, 4)), np.zeros((1, 4, 4), bool))[0])
