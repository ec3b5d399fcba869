"""The page-level analysis: both maps, probabilities and the loss decomposition."""

from __future__ import annotations

import numpy as np
import torch

from saliency_core.analysis import analyse, signed_channel_max
from saliency_core.gradients import compute_saliency
from saliency_core.images import sample_by_name


def test_analysis_matches_the_engine_and_resolves_targets(lite0):
    coffee, chelsea = sample_by_name("coffee"), sample_by_name("chelsea")
    out = analyse(lite0, [coffee.image, chelsea.image, coffee.image], [None, None, 500],
                  labels=[coffee.label, None, coffee.label])
    assert [a.target for a in out[:1]] == [967]  # auto with a label: the label
    assert out[1].target == out[1].prediction and out[1].target_auto  # auto without: top-1
    assert out[2].target == 500 and not out[2].target_auto
    batch = lite0.preprocess([chelsea.image])
    ref = compute_saliency(lite0, batch.x, torch.tensor([out[1].target]))
    expected = ref.maps["loss"][0].numpy()
    # Batch of 3 vs batch of 1: CPU kernels may sum in another order, so a
    # few near-zero pixels differ in the last bits; compare against the scale.
    np.testing.assert_allclose(out[1].maps["loss"], expected, rtol=1e-4, atol=1e-5 * expected.max())
    np.testing.assert_array_equal(out[1].display, batch.display[0])
    a = out[0]
    assert abs(a.probs.sum() - 1) < 1e-5 and a.top_k(5)[0][1] == "espresso"
    np.testing.assert_allclose(a.terms["target"] + a.terms["others"], a.gradients["loss"], rtol=1e-5, atol=1e-8)


def test_signed_channel_max_keeps_the_sign_of_the_largest_magnitude():
    v = np.array([[[1.0, -1.0]], [[-3.0, 0.5]], [[2.0, 0.2]]])  # (3, 1, 2)
    np.testing.assert_array_equal(signed_channel_max(v), [[-3.0, -1.0]])
