"""saliency_core.serving.compute_cost: every count of rows is the rows the engine really runs, the price is measured
without touching the model, and the budget setting is read strictly.

The counts are checked by running the engine on a tiny network that records each batch it is given, with
or without gradients: an estimate built on counts that drifted from the code would let a heavy link slip
under the budget.
"""

from __future__ import annotations

import math

import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import faithfulness, sanity
from saliency_core.evaluation.method_comparison import compare_methods, forward_passes
from saliency_core.evaluation.method_ranking import ranking_table
from saliency_core.methods.declaration import Passes
from saliency_core.methods.registry import ATTRIBUTION_METHODS, attribute
from saliency_core.serving.compute_cost import (
    CALIBRATION_WORK,
    DEFAULT_CONFIRM_ABOVE_S,
    NOTHING,
    PassCost,
    Work,
    confirm_above_s,
    deletion_insertion_work,
    measure_pass_cost,
    method_work,
    randomisation_work,
    ranking_work,
)

ROWS: list[tuple[int, bool]] = []  # (rows, with gradients) of every forward pass of CountingNet


class CountingNet(torch.nn.Module):
    """Conv-ReLU-conv-ReLU-pool-linear that records each batch it runs (its copies too: the list is global)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = torch.nn.ReLU()
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ROWS.append((int(x.shape[0]), torch.is_grad_enabled()))
        return self.head(self.act2(self.conv2(self.act(self.conv(x)))))


class CountingViT(torch.nn.Module):
    """A two-layer torchvision ViT on 16 px images that records each batch it runs: the attention methods' net."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        torch.manual_seed(0)
        self.vit = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2,
                                                        hidden_dim=16, mlp_dim=32, num_classes=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ROWS.append((int(x.shape[0]), torch.is_grad_enabled()))
        return self.vit(x)


def counted() -> Work:
    """The rows run since the last call, as Work (gradient rows: forward passes with gradients enabled)."""
    work = Work(sum(n for n, g in ROWS if g), sum(n for n, g in ROWS if not g))
    ROWS.clear()
    return work


@pytest.fixture
def net() -> CountingNet:
    ROWS.clear()
    return CountingNet().eval()


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
Y = [1, 3]  # resolved targets, as the pages pass them

SMALL = {
    "gradient": {},
    "gradient_x_input": {"baseline": "dataset_mean"},
    "smoothgrad": {"samples": 3},
    "smoothgrad_sq": {"samples": 3},
    "vargrad": {"samples": 3},
    "integrated_gradients": {"steps": 4, "baseline": "dataset_mean"},
    "blur_ig": {"steps": 4},
    "guided_ig": {"steps": 4, "baseline": "dataset_mean"},
    "expected_gradients": {"samples": 3, "stdevs": 0.1},
    "xrai": {"steps": 2},
    "deeplift": {"baseline": "dataset_mean"},
    "guided_backprop": {},
    "grad_cam": {"layer": "conv2"},
    "grad_cam_plus_plus": {"layer": "conv2"},
    "layer_cam": {"layer": "conv2"},
    "hires_cam": {"layer": "conv2"},
    "score_cam": {"layer": "conv2", "channels": 3},
    "occlusion": {"window": 8, "stride": 6},
    "rise": {"masks": 3},
    "kernel_shap": {"samples": 4, "segments": 4},
    "lime": {"samples": 4, "superpixels": "slic", "segments": 4},
    "attention_rollout": {},
    "chefer_attention": {},
}


def test_every_method_is_counted():
    assert set(SMALL) == set(ATTRIBUTION_METHODS)


@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # 4 steps: a large completeness gap, on purpose
@pytest.mark.parametrize("method", list(SMALL))
def test_a_methods_work_is_the_rows_it_runs(net, method):
    if "attention_blocks" in ATTRIBUTION_METHODS[method].needs:
        net = CountingViT().eval()
    attribute(net, X, Y, method, ("score", "loss"), max_batch=2, **SMALL[method])
    assert counted() == method_work(method, SMALL[method], images=2, size=X.shape[2:])


def test_the_counts_are_the_methods_own():
    assert method_work("smoothgrad", {"samples": 256}) == Work(256, 1)
    assert method_work("integrated_gradients", {"steps": 256}, images=5) == Work(1280, 10)
    assert method_work("smoothgrad") == Work(25, 1)  # the registry's default
    assert method_work("grad_cam", {"layer": "features.6"}) == Work(1, 0)
    # Occlusion's rows are its patch positions, which depend on the image size: 224 px unless told.
    assert method_work("occlusion") == Work(0, 13 * 13 + 1) == method_work("occlusion", size=224)
    assert method_work("occlusion", {"window": 8, "stride": 4}, size=(32, 16)) == Work(0, 7 * 3 + 1)
    assert method_work("rise", {"masks": 4000}) == Work(0, 4001)
    assert method_work("lime") == Work(0, 200)  # the image is its first sample
    # A value the method refuses makes it fail at once: one pass, as the progress bar counts it.
    assert ATTRIBUTION_METHODS["smoothgrad"].cost({"samples": -3}) == Passes()
    assert forward_passes("integrated_gradients", {"steps": 10}) == 12 and forward_passes("gradient", {}) == 1


def test_deletion_and_insertion_are_the_rows_they_run(net):
    maps = {"score": torch.rand(2, 16, 16), "loss": torch.rand(2, 16, 16)}
    faithfulness.deletion_insertion_orders(net, X, Y, maps, steps=3, batch_size=5)
    assert counted() == deletion_insertion_work(orders=3, steps=3, images=2) == Work(0, 36)


@pytest.mark.parametrize(("method", "params"), [("gradient", {}), ("smoothgrad", {"samples": 3})])
def test_the_randomisation_check_is_the_rows_it_runs(net, method, params):
    sanity.cascading_randomization(net, X, Y, max_stages=2, attribution=method, params=params)
    assert counted() == randomisation_work(method, params, stages=2, images=2)


def test_the_methods_ranking_is_the_rows_it_runs(net):
    given = {"gradient": {}, "smoothgrad": {"samples": 2}}
    comparison = compare_methods(net, X[:1], 1, tuple(given), given)
    counted()
    ranking_table(net, X[:1], comparison, steps=3, batch_size=4)
    assert counted() == ranking_work(given, maps=len(comparison.entries()), steps=3)


def test_work_adds_and_multiplies_and_is_priced_per_row():
    work = Work(2, 3) + Work(1, 1) * 2
    assert work == Work(4, 5) and 2 * Work(1, 1) == Work(2, 2)
    assert not NOTHING and Work(0, 1) and Work(1, 0)
    assert Work(3, 3).within(Work(3, 4)) and not Work(4, 0).within(Work(3, 4))
    assert PassCost(gradient_s=0.5, forward_s=0.25).seconds(Work(4, 8)) == pytest.approx(4.0)


def test_one_images_one_pass_maps_are_never_priced_but_smoothgrad_is():
    assert method_work("gradient").within(CALIBRATION_WORK) and method_work("grad_cam").within(CALIBRATION_WORK)
    assert not method_work("smoothgrad").within(CALIBRATION_WORK)


def test_the_price_is_measured_without_touching_the_model(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cost = measure_pass_cost(net, size=16)
    assert 0 < cost.gradient_s < math.inf and 0 < cost.forward_s < math.inf
    assert counted() == Work(12, 12) == CALIBRATION_WORK  # a warm-up and two timed batches of four, each kind
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training and all(p.grad is None for p in net.parameters())


def test_the_budget_setting():
    assert confirm_above_s({}) == DEFAULT_CONFIRM_ABOVE_S == 20.0
    assert confirm_above_s({"SALIENCY_CONFIRM_ABOVE_S": " 45 "}) == 45.0
    assert confirm_above_s({"SALIENCY_CONFIRM_ABOVE_S": "0"}) == 0.0
    assert confirm_above_s({"SALIENCY_CONFIRM_ABOVE_S": "inf"}) == math.inf
    assert confirm_above_s({"SALIENCY_CONFIRM_ABOVE_S": ""}) == DEFAULT_CONFIRM_ABOVE_S
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(InvalidInputError, match="SALIENCY_CONFIRM_ABOVE_S"):
            confirm_above_s({"SALIENCY_CONFIRM_ABOVE_S": bad})
