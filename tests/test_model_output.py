"""Models that fail only on real images: every forward's output is checked, and the error names the model.

The load check runs a black and a grey image, both constant. The models here (TorchScript, as a team
would save them) behave on those and turn treacherous on any textured image: one raises, one returns NaN,
one returns 8 logits for its 4 classes. Before, the dashboard showed Streamlit's generic error box and the
batch job printed a traceback, or wrote 4-class results computed over 8 logits with exit code 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from saliency_core import attribute, compute_saliency
from saliency_core.errors import ModelOutputError, ModelUnavailableError, SaliencyError
from saliency_core.evaluation import faithfulness, sanity
from saliency_core.models.loading import load_model

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "blue", "grey"]
SIDECAR = {"title": "Treacherous net", "classes": CLASSES, "resize": 36, "crop": 32, "mean": [0.5, 0.5, 0.5],
           "std": [0.25, 0.25, 0.25]}
RAISES, NAN, WIDE = 0, 1, 2
#: stem -> (behaviour on textured images, what the error must say)
TREACHEROUS = {
    "raises": (RAISES, "failed (RuntimeError: kaboom on textured input)"),
    "nan": (NAN, "returned NaN or infinite logits for"),
    "wide": (WIDE, "returned 8 logits per image, but it has 4 classes"),
}


class Treacherous(nn.Module):
    """A small ReLU CNN with 4 classes; on an image that is not constant (any real one) it misbehaves."""

    def __init__(self, mode: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        textured = x.flatten(2).std(dim=2).amax(dim=1) > 1e-3
        if bool(textured.any()):
            if self.mode == 0:
                raise RuntimeError("kaboom on textured input")
            if self.mode == 1:
                return out.masked_fill(textured[:, None], float("nan"))
            return torch.cat([out, out], dim=1)
        return out


def write_treacherous(folder: Path) -> Path:
    """custom:raises, custom:nan and custom:wide, TorchScript with sidecars, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (mode, _) in TREACHEROUS.items():
        torch.jit.script(Treacherous(mode).eval()).save(str(folder / f"{stem}.pt"))
        (folder / f"{stem}.json").write_text(json.dumps({**SIDECAR, "title": title(stem)}))
    return folder


def title(stem: str) -> str:
    """How errors name the model ``custom:<stem>``: its sidecar's title and its name."""
    return f"Treacherous {stem}"


@pytest.fixture(scope="module")
def treacherous_dir(tmp_path_factory) -> Path:
    return write_treacherous(tmp_path_factory.mktemp("treacherous"))


@pytest.fixture
def models_dir(treacherous_dir, monkeypatch) -> Path:
    monkeypatch.setenv("SALIENCY_MODELS_DIR", str(treacherous_dir))
    return treacherous_dir


def textured(n: int = 1) -> torch.Tensor:
    """(n, 3, 32, 32) noise, normalised as the sidecar says: what a real photo looks like to these models."""
    return (torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) - 0.5) / 0.25


@pytest.mark.parametrize("stem", list(TREACHEROUS))
def test_they_pass_the_load_check(models_dir, stem):
    model = load_model(f"custom:{stem}", "cpu")  # the premise of the attack
    with torch.no_grad():
        assert model.model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


ENTRY_POINTS = {
    "compute_saliency": lambda m, x: compute_saliency(m, x, [-1]),
    "gradient": lambda m, x: attribute(m, x, [0], "gradient"),
    "gradient_x_input": lambda m, x: attribute(m, x, [0], "gradient_x_input"),
    "smoothgrad": lambda m, x: attribute(m, x, [0], "smoothgrad", samples=2),
    "integrated_gradients": lambda m, x: attribute(m, x, [0], "integrated_gradients", steps=2),
    "occlusion": lambda m, x: attribute(m, x, [0], "occlusion", window=16, stride=16),
    "rise": lambda m, x: attribute(m, x, [0], "rise", masks=2),
    "kernel_shap": lambda m, x: attribute(m, x, [0], "kernel_shap", samples=2),
    "lime": lambda m, x: attribute(m, x, [0], "lime", samples=2, superpixels="slic"),
    "deletion_insertion": lambda m, x: faithfulness.deletion_insertion(m, x, [0], torch.rand(1, 32, 32), steps=2),
    "randomisation": lambda m, x: sanity.cascading_randomization(m, x, [0], max_stages=2),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("stem", list(TREACHEROUS))
def test_every_forward_on_a_real_image_is_checked_and_names_the_model(models_dir, stem, entry):
    model = load_model(f"custom:{stem}", "cpu")
    with pytest.raises(ModelOutputError) as caught:
        ENTRY_POINTS[entry](model, textured())
    message = str(caught.value)
    assert f"{title(stem)} (custom:{stem})" in message and TREACHEROUS[stem][1] in message, message
    assert "\n" not in message and "Traceback" not in message
    assert isinstance(caught.value, ModelUnavailableError) and isinstance(caught.value, SaliencyError)


class Bare(nn.Module):
    """The same treachery as a plain module: Grad-CAM and guided backprop run private copies of it."""

    def __init__(self, mode: int) -> None:
        super().__init__()
        self.inner = Treacherous(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("method, params", [("guided_backprop", {}), ("grad_cam", {"layer": "inner.features"}),
                                            ("deeplift", {"baseline": "dataset_mean"})])  # its own two passes
@pytest.mark.parametrize("stem", ["raises", "nan"])
def test_the_methods_with_private_copies_check_too(stem, method, params):
    net = Bare(TREACHEROUS[stem][0]).eval()
    attribute(net, torch.zeros(1, 3, 32, 32), [0], method, **params)  # fine on a constant image
    with pytest.raises(ModelOutputError, match=r"the model \(Bare\)") as caught:
        attribute(net, textured(), [0], method, **params)
    assert TREACHEROUS[stem][1] in str(caught.value)


def test_check_logits_says_what_was_wrong():
    from saliency_core.core.model_output import OutputCheck, check_logits

    check = OutputCheck("My net", 4)
    good = torch.zeros(3, 4)
    assert check_logits(good, 3, check) is good
    for out, said in [((1, 2), "returned tuple instead of a tensor of logits"),
                      (torch.zeros(3, 4, 1), "a (3, 4, 1) float32 tensor for 3 image(s) instead of (3, 4) float"),
                      (torch.zeros(2, 4), "a (2, 4) float32 tensor for 3 image(s)"),
                      (torch.zeros(3, 4, dtype=torch.int64), "int64 tensor"),
                      (torch.zeros(3, 5), "returned 5 logits per image, but it has 4 classes"),
                      (torch.tensor([[0.0] * 4, [float("inf")] * 4, [0.0] * 4]), "infinite logits for 1 of 3")]:
        with pytest.raises(ModelOutputError, match=r"^My net ") as caught:
            check_logits(out, 3, check)
        assert said in str(caught.value)
    half = torch.tensor([[float("inf"), 0, 0, 0]], dtype=torch.float16)
    with pytest.raises(ModelOutputError, match='"exact" may work'):
        check_logits(half, 1, check)


def test_out_of_memory_in_the_model_still_reaches_the_chunking():
    class Hungry(nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    with pytest.raises(torch.OutOfMemoryError):
        compute_saliency(Hungry(), textured(), [0])


# --------------------------------------------------------------------------- the batch job


def _run_job(models: Path, images: Path, out: Path, model: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", SALIENCY_MODELS_DIR=str(models),
               PYTHONWARNINGS="ignore::FutureWarning")  # torch.jit.load's deprecation notice, not the job's
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "saliency_core.batch", "--no-progress", "--images", str(images),
                           "--out", str(out), "--model", model, "--workers", "0", "--batch-size", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three textured 40 x 40 images in class folders 0 and 1 (labels the 4-class models have)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, label in enumerate((0, 1, 1)):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / str(label) / f"{i}.png")
    return root


@pytest.mark.parametrize("stem", list(TREACHEROUS))
def test_the_batch_job_stops_with_one_line_naming_the_model(treacherous_dir, photos, tmp_path, stem):
    from saliency_core.jobs.results import read_manifest

    out = tmp_path / "out"
    proc = _run_job(treacherous_dir, photos, out, f"custom:{stem}")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert line.startswith("error: ") and f"{title(stem)} (custom:{stem})" in line, line
    assert TREACHEROUS[stem][1] in line, line
    assert "in a batch of 2 image(s)" in line and "0.png" in line, line
    assert not list(out.glob("results/part-*.parquet"))  # nothing computed over the wrong logits is written
    (run,) = read_manifest(out)["runs"]
    assert run["status"] == "stopped" and TREACHEROUS[stem][1] in run["reason"], run
