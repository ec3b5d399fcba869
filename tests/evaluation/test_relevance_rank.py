"""Relevance rank accuracy against Quantus 0.6.0, and its known answers."""

import math

import numpy as np
import quantus
from conftest import quantus_arrays
from test_pointing_game import masks

from saliency_core.evaluation.metrics.relevance_rank import relevance_rank_accuracy


def test_relevance_rank_equals_quantus(data):
    X, y, maps = data
    x, yy, a = quantus_arrays(X, y, maps)
    m = masks(maps.shape)
    theirs = quantus.RelevanceRankAccuracy(normalise=False, abs=False, disable_warnings=True)(
        model=None, x_batch=x, y_batch=yy, a_batch=a, s_batch=m[:, None].astype(float))
    np.testing.assert_allclose(relevance_rank_accuracy(maps, m), theirs, atol=1e-12)


def test_a_map_equal_to_the_mask_is_perfect_and_its_complement_scores_zero():
    m = masks((3, 16, 16), seed=4)
    assert relevance_rank_accuracy(m.astype(float), m).tolist() == [1.0, 1.0, 1.0]
    assert relevance_rank_accuracy((~m).astype(float), m).tolist() == [0.0, 0.0, 0.0]


def test_ties_are_broken_by_position():
    m = np.zeros((1, 2, 2), dtype=bool)
    m[0, 0, 0] = True
    assert relevance_rank_accuracy(np.ones((1, 2, 2)), m).tolist() == [1.0]  # (0, 0) ranks first
    m = np.zeros((1, 2, 2), dtype=bool)
    m[0, 1, 1] = True
    assert relevance_rank_accuracy(np.ones((1, 2, 2)), m).tolist() == [0.0]


def test_an_empty_mask_is_undefined():
    assert math.isnan(relevance_rank_accuracy(np.ones((1, 4, 4)), np.zeros((1, 4, 4), bool))[0])
