"""Speed of the CAM variants against pytorch-grad-cam, and Score-CAM's time per map by its channel cap.

Run from the repository root::

    .venv/bin/python benchmarks/bench_cam.py                       # CPU: batches 1 and 8, 3 rounds
    .venv/bin/python benchmarks/bench_cam.py --batches 1 --reps 5 --methods score_cam
    .venv/bin/python benchmarks/bench_cam.py --agreement --caps 16,32,64,128

On the embedded model (EfficientNet-Lite0, real weights, its registered
layer ``_blocks.15``: 320 channels at 7 × 7), for each method and batch,
the contenders run interleaved, round after round, and the median time of
each is reported. Both produce the same result, both maps (score and
−L = log p_y) of every image of the batch:

* core: ``saliency_core.attribute(model, x, y, method, ("score", "loss"))``
  (its model as ``load_model`` gives it: channels_last on the CPU);
* pytorch-grad-cam (grad-cam 1.5.7): its class called twice, once with
  ``ClassifierOutputTarget(y)`` and once with a log-softmax target, as a
  user would, on a copy of the same module (frozen weights; the input gets
  ``requires_grad`` so that its hooks see a gradient), maps min-max scaled
  as it returns them. Score-CAM: given, through its ``reshape_transform``,
  the same channels as the core's cap (the ``channels`` most varying
  feature maps), so that both run the same masked copies; its own chunk
  of 16 copies per pass.

Then Score-CAM alone: seconds for both maps of one 224 px image (the
coffee photo) at several caps, the last the paper's every channel. With
``--agreement``, instead: how far each cap's maps are from the paper's
(every channel), as Pearson's r over the pixels, on each bundled photo.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

# pytorch-grad-cam's Score-CAM draws a tqdm bar per image; tqdm reads this when imported.
os.environ.setdefault("TQDM_DISABLE", "1")
# As dashboard.py sets it on a server: OpenMP threads sleep instead of spinning for cores others hold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe, interleaved_medians  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.inputs.samples import sample_images
from saliency_core.methods import score_cam
from saliency_core.models.loading import load_model

METHODS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "hires_cam", "score_cam")
LAYER = "_blocks.15"


class LogProb:
    """pytorch-grad-cam target for one image's (C,) logits: log p_y = −L."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(output, dim=-1)[..., self.category]


def oracle_class(method: str):
    import pytorch_grad_cam as pgc

    return {"grad_cam": pgc.GradCAM, "grad_cam_plus_plus": pgc.GradCAMPlusPlus, "layer_cam": pgc.LayerCAM,
            "hires_cam": pgc.HiResCAM, "score_cam": pgc.ScoreCAM}[method]


def images(model, n: int) -> tuple[torch.Tensor, list[int]]:
    samples = (sample_images() * n)[:n]
    return model.preprocess([s.image for s in samples]).x, [s.label for s in samples]


def most_varying(module: torch.nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    acts = []
    handle = module.get_submodule(LAYER).register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        module(x)
    handle.remove()
    return score_cam.chosen_channels(acts[0], k)


def contenders(model, method: str, x: torch.Tensor, y: list[int], channels: int) -> dict:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    params = {"channels": channels} if method == "score_cam" else {}
    twin = copy.deepcopy(model.model).eval()
    kwargs = {}
    if method == "score_cam":
        chosen = most_varying(twin, x, channels)
        kwargs["reshape_transform"] = lambda a: torch.gather(a, 1, chosen[:, :, None, None].expand(-1, -1,
                                                                                                     *a.shape[2:]))
    cam = oracle_class(method)(model=twin, target_layers=[twin.get_submodule(LAYER)], **kwargs)
    score_targets = [ClassifierOutputTarget(c) for c in y]
    loss_targets = [LogProb(c) for c in y]

    def theirs() -> None:
        cam(input_tensor=x.clone().requires_grad_(True), targets=score_targets)
        cam(input_tensor=x.clone().requires_grad_(True), targets=loss_targets)

    def ours() -> None:
        attribute(model, x, y, method, ("score", "loss"), **params)

    return {"pytorch-grad-cam": theirs, "core": ours}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def agreement(model, caps: list[int]) -> None:
    """Pearson's r of each cap's maps with the paper's (every channel), per bundled photo and objective."""
    print("| photo | objective | " + " | ".join(f"{c} channels" for c in caps) + " |")
    print("|---|---|" + "---|" * len(caps))
    for sample in sample_images():
        x = model.preprocess([sample.image]).x
        paper = attribute(model, x, [sample.label], "score_cam", ("score", "loss"), channels=score_cam.MAX_CHANNELS)
        capped = {c: attribute(model, x, [sample.label], "score_cam", ("score", "loss"), channels=c) for c in caps}
        for o in ("score", "loss"):
            cells = " | ".join(f"{pearson(capped[c].maps[o], paper.maps[o]):.2f}" for c in caps)
            print(f"| {sample.name} | {o} | {cells} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--channels", type=int, default=score_cam.DEFAULT_CHANNELS, help="Score-CAM's cap in the table")
    ap.add_argument("--caps", default="16,32,48,64,2048", help="Score-CAM caps timed alone (2048: every channel)")
    ap.add_argument("--agreement", action="store_true", help="only Score-CAM's capped maps against the paper's")
    args = ap.parse_args(argv)
    device = torch.device("cpu")
    model = load_model(None, device)
    if args.agreement:
        agreement(model, [int(c) for c in args.caps.split(",") if int(c) < score_cam.MAX_CHANNELS])
        return 0
    print(f"{describe(device)}; load average {os.getloadavg()[0]:.1f} at the start")
    print("| method | batch | pytorch-grad-cam images/s | core images/s | core / pytorch-grad-cam |")
    print("|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        x, y = images(model, batch)
        for method in args.methods.split(","):
            t = interleaved_medians(contenders(model, method, x, y, args.channels), device, args.reps, args.warmup)
            name = f"{method} ({args.channels} channels)" if method == "score_cam" else method
            print(f"| {name} | {batch} | {batch / t['pytorch-grad-cam']:.2f} | {batch / t['core']:.2f} | "
                  f"{t['pytorch-grad-cam'] / t['core']:.2f}x |", flush=True)
    x, y = images(model, 1)
    print("\n| Score-CAM channels | seconds for both maps of one 224 px image (median) |")
    print("|---|---|")
    for cap in (int(c) for c in args.caps.split(",")):
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            r = attribute(model, x, y, "score_cam", ("score", "loss"), channels=cap)
            times.append(time.perf_counter() - start)
        print(f"| {cap} ({r.params['channels']} used) | {statistics.median(times):.1f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
