"""The memory of one computation: rows per pass come from a memory budget and the input's size.

The issue: a custom model with a 2048 px crop and SmoothGrad's 256 samples reached 15.4 GB, because
every pass held 64 noisy copies whatever their size. Now ``saliency_core.core.passes.rows_per_pass`` sizes
every pass the engine runs (gradients, every method, deletion/insertion), and the models folder caps
the crop at 1024 px (``custom_models.MAX_CROP``): one row is the least a pass can hold.
"""

from __future__ import annotations

import pytest
import torch
from hostile import peak_rss_mb

from saliency_core import attribute, compute_saliency
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import faithfulness

CPU = torch.device("cpu")
PASS_MEMORY_ENV = "SALIENCY_PASS_MEMORY_MB"  # spelled out: what an operator sets (saliency_core.core._torch)


@pytest.fixture(autouse=True)
def default_budget(monkeypatch):
    monkeypatch.delenv(PASS_MEMORY_ENV, raising=False)


def test_rows_per_pass_follow_the_input_size_and_dtype():
    from saliency_core.core.passes import row_bytes, rows_per_pass

    at_224 = rows_per_pass(row_bytes((3, 224, 224), torch.float32), CPU)
    assert at_224 == 13  # 2 GB / (602 kB * 256): EfficientNet-Lite0 used 92 MB a row, 1.2 GB for 13
    assert rows_per_pass(row_bytes((3, 224, 224), torch.float64), CPU) == 6
    assert rows_per_pass(row_bytes((3, 224, 224), torch.float32), CPU, backward=False) == 55
    assert rows_per_pass(row_bytes((3, 1024, 1024), torch.float32), CPU) == 1
    assert rows_per_pass(row_bytes((3, 2048, 2048), torch.float32), CPU) == 1  # never fewer than one
    assert rows_per_pass(row_bytes((3, 32, 32), torch.float32), CPU) == 682


def test_the_budget_is_set_by_an_environment_variable(monkeypatch):
    from saliency_core.core import passes
    from saliency_core.core.passes import row_bytes, rows_per_pass

    assert PASS_MEMORY_ENV == passes.PASS_MEMORY_ENV
    monkeypatch.setenv(PASS_MEMORY_ENV, "16384")  # a big GPU's operator: 16 GB a pass
    assert rows_per_pass(row_bytes((3, 224, 224), torch.float32), CPU) == 111
    for bad in ("lots", "0", "-5", "1.5"):
        monkeypatch.setenv(PASS_MEMORY_ENV, bad)
        with pytest.raises(InvalidInputError, match=PASS_MEMORY_ENV):
            rows_per_pass(1000, CPU)


class Recorder(torch.nn.Module):
    """A small ReLU net with a convolutional block that notes the batch size of every forward pass.

    In a class attribute: Grad-CAM and guided backprop run private copies of the module, which share it.
    """

    sizes: list[int] = []  # noqa: RUF012 -- shared on purpose, see above

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
        Recorder.sizes.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Recorder.sizes.append(x.shape[0])
        return self.head(self.features(x))


@pytest.mark.filterwarnings("ignore:Integrated Gradients")
@pytest.mark.parametrize("method, params", [
    ("gradient", {}), ("gradient_x_input", {}), ("smoothgrad", {"samples": 6}),
    ("integrated_gradients", {"steps": 4, "baseline": "dataset_mean"}), ("guided_backprop", {}),
    ("grad_cam", {"layer": "features"}), ("occlusion", {"window": 16, "stride": 16}), ("rise", {"masks": 3}),
    ("kernel_shap", {"samples": 3, "segments": 4}), ("lime", {"samples": 3, "superpixels": "slic", "segments": 4}),
])
def test_every_method_passes_no_more_rows_than_the_budget_allows(monkeypatch, method, params):
    # 1 MB for 3 x 32 x 32 float32 rows (12 kB): 1 MB // (12 kB * 256) = 0, so one row a pass, with or without
    # gradients (12 kB * 64 = 786 kB). Before, SmoothGrad ran 2 x 6 noisy copies in one pass, and the images
    # went through together.
    monkeypatch.setenv(PASS_MEMORY_ENV, "1")
    net = Recorder().eval()
    X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    attribute(net, X, [0, 1], method, **params)
    assert net.sizes and set(net.sizes) == {1}, net.sizes
    net.sizes.clear()
    compute_saliency(net, X, [0, 1])
    assert net.sizes == [1, 1]
    net.sizes.clear()
    faithfulness.deletion_insertion(net, X, [0, 1], torch.rand(2, 32, 32), steps=3, batch_size=64)
    assert set(net.sizes) == {1} and len(net.sizes) == 2 * 2 * 3


def test_a_caller_limit_below_the_budget_still_holds():
    net = Recorder().eval()
    X = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    attribute(net, X, [0], "smoothgrad", samples=7, max_batch=3)
    assert net.sizes[1:] == [3, 3, 1]  # after the clean forward pass of the image itself


# What a SmoothGrad of a 2048 x 2048 input may take above the interpreter's memory before it: one noisy copy
# per pass costs about 1 GB here (the copies, their noise, two gradients and a 4-channel convolution's
# activations, 50-67 MB each). Before, 4 copies went through together: 3.3 GB.
LARGE_INPUT_BOUND_MB = 1400


def test_smoothgrad_of_a_2048_px_input_stays_within_one_row_of_memory():
    code = """
import resource
import torch
from torch import nn
from saliency_core import attribute
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                    nn.Linear(4, 4)).eval()
for p in net.parameters():
    p.requires_grad_(False)
x = torch.rand(1, 3, 2048, 2048)
# Address space capped well above the bound: an unbounded pass fails fast instead of taking the machine.
size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (6 << 30), resource.RLIM_INFINITY))
# --- start
r = attribute(net, x, [0], 'smoothgrad', samples=4)
assert r.maps['score'].shape == (1, 2048, 2048) and bool(torch.isfinite(r.maps['score']).all())
"""
    result = peak_rss_mb(code, timeout=600)
    assert result["out"] is None, result
    used = result["peak_mb"] - result["baseline_mb"]
    assert used < LARGE_INPUT_BOUND_MB, result
