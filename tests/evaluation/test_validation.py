"""Bad inputs to the metrics raise InvalidInputError with a message that names the argument."""

import numpy as np
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics.complexity import complexity
from saliency_core.evaluation.metrics.faithfulness_correlation import faithfulness_correlation
from saliency_core.evaluation.metrics.infidelity import infidelity
from saliency_core.evaluation.metrics.pointing_game import pointing_game
from saliency_core.evaluation.metrics.random_logit import random_logit
from saliency_core.evaluation.metrics.relevance_mass import relevance_mass_accuracy
from saliency_core.evaluation.metrics.relevance_rank import relevance_rank_accuracy
from saliency_core.evaluation.metrics.road import road
from saliency_core.evaluation.metrics.sensitivity import sensitivity
from saliency_core.evaluation.metrics.sparseness import sparseness

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1])
MAPS = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
NAN_MAPS = MAPS.clone()
NAN_MAPS[0, 1, 1] = float("nan")
MASK = torch.ones(2, 8, 8, dtype=torch.bool)

MODEL_CASES = {
    "maps of the wrong shape": (lambda net: road(net, X, Y, MAPS[:, :4], percentages=[50]), "maps must have shape"),
    "maps for fewer images": (lambda net: infidelity(net, X, Y, MAPS[:1]), "maps must have shape"),
    "NaN maps": (lambda net: faithfulness_correlation(net, X, Y, NAN_MAPS, subset_size=4, runs=3), "NaN"),
    "images without colour": (lambda net: road(net, X[:, :1], Y, MAPS), "3"),
    "targets of another length": (lambda net: infidelity(net, X, Y[:1], MAPS), "y"),
    "a target past the classes": (lambda net: infidelity(net, X, [0, 99], MAPS), "out of range"),
    "an unknown output": (lambda net: infidelity(net, X, Y, MAPS, output="p"), "output must be one of"),
    "ROAD with no steps": (lambda net: road(net, X, Y, MAPS, steps=0), "steps must be an integer >= 1"),
    "ROAD noise below 0": (lambda net: road(net, X, Y, MAPS, noise=-0.1), "noise must be a finite number >= 0"),
    "ROAD's unknown order": (lambda net: road(net, X, Y, MAPS, orders=("up",)), "orders must be some of"),
    "one run": (lambda net: faithfulness_correlation(net, X, Y, MAPS, runs=1), "runs must be an integer >= 2"),
    "a subset of every pixel": (lambda net: faithfulness_correlation(net, X, Y, MAPS, subset_size=64),
                                "subset_size must be below the image's 64 pixels"),
    "subsets of the wrong shape": (lambda net: faithfulness_correlation(
        net, X, Y, MAPS, runs=3, subset_size=4, subsets=torch.zeros(2, 3, 5, dtype=torch.int64)), "subsets must"),
    "subsets off the image": (lambda net: faithfulness_correlation(
        net, X, Y, MAPS, runs=3, subset_size=4, subsets=torch.full((2, 3, 4), 64)), r"pixel indices in \[0, 64\)"),
    "an unknown baseline": (lambda net: faithfulness_correlation(net, X, Y, MAPS, runs=3, subset_size=4,
                                                                 baseline="purple"), "baseline"),
    "no infidelity samples": (lambda net: infidelity(net, X, Y, MAPS, samples=0), "samples must be an integer"),
    "zero noise std": (lambda net: infidelity(net, X, Y, MAPS, noise_std=0), "noise_std must be a finite number > 0"),
    "a square past the image": (lambda net: infidelity(net, X, Y, MAPS, perturbation="square", patch=9),
                                "patch must fit the image"),
    "an unknown perturbation": (lambda net: infidelity(net, X, Y, MAPS, perturbation="blur"), "perturbation"),
    "an unknown scaling": (lambda net: infidelity(net, X, Y, MAPS, scaling="max"), "scaling"),
    "zero radius": (lambda net: sensitivity(net, X, Y, MAPS, "gradient", radius=0), "radius must be"),
    "infinite radius": (lambda net: sensitivity(net, X, Y, MAPS, "gradient", radius=float("inf")), "radius must"),
    "an unknown relative": (lambda net: sensitivity(net, X, Y, MAPS, "gradient", relative="maybe"), "relative"),
    "an unknown method": (lambda net: sensitivity(net, X, Y, MAPS, "magic", samples=1), "magic"),
    "off classes of the wrong length": (lambda net: random_logit(net, X, Y, MAPS, "gradient",
                                                                  off_classes=torch.tensor([1])), "off_classes"),
    "one class": (lambda net: random_logit(net, X, Y, MAPS, "gradient", classes=1), "classes must be"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_input_to_a_model_metric(net, case):
    call, message = MODEL_CASES[case]
    with pytest.raises(InvalidInputError, match=message):
        call(net)


MAP_CASES = {
    "a map without a batch axis": (lambda: sparseness(MAPS[0]), r"maps must have shape \(N, H, W\)"),
    "NaN maps": (lambda: complexity(NAN_MAPS), "NaN"),
    "a list for maps": (lambda: sparseness([[0.0]]), "maps must be"),
    "text maps": (lambda: complexity(np.array([[["a"]]])), "real numbers"),
    "a mask of another shape": (lambda: pointing_game(MAPS, MASK[:, :4]), "mask must have the maps' shape"),
    "a mask for fewer images": (lambda: relevance_mass_accuracy(MAPS, MASK[:1]), "mask must have the maps' shape"),
    "a float mask": (lambda: relevance_rank_accuracy(MAPS, MASK.double()), "mask must be bool"),
    "a mask of 2s": (lambda: relevance_rank_accuracy(MAPS, MASK.long() * 2), "only 0 and 1"),
    "a list for a mask": (lambda: pointing_game(MAPS, [[True]]), "mask must be"),
    "a negative tolerance": (lambda: pointing_game(MAPS, MASK, tolerance=-1), "tolerance must be"),
}


@pytest.mark.parametrize("case", sorted(MAP_CASES))
def test_bad_input_to_a_map_metric(case):
    call, message = MAP_CASES[case]
    with pytest.raises(InvalidInputError, match=message):
        call()
