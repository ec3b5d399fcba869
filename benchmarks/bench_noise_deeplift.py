"""Speed of SmoothGrad², VarGrad and DeepLIFT against Captum for the same result (issue 24).

Run from the repository root::

    .venv/bin/python benchmarks/bench_noise_deeplift.py                  # CPU, batches 1 and 8, 3 rounds
    .venv/bin/python benchmarks/bench_noise_deeplift.py --batches 1 --reps 5

The embedded model (EfficientNet-Lite0, real weights, channels_last as ``load_model`` keeps it on a CPU),
sample photos at 224 px, both objectives (score and loss) per image. Contenders run interleaved, round after
round, in alternating order, and each figure is the median of its rounds, so a busy machine slows all alike;
the last column is the median of each round's ratio (the two calls back to back), the steadier figure when the
machine's load drifts between rounds.

* ours: one ``saliency_core.attribute`` call: both objectives from the same passes.
* Captum, for the same maps: one call per objective, as its API takes them.
  SmoothGrad² / VarGrad: ``NoiseTunnel(Saliency(abs=False))`` with ``nt_type`` "smoothgrad_sq" / "vargrad",
  the same number of samples and σ (the batch's mean σ: timing only), at least as many rows per pass as ours
  (``nt_samples_batch_size`` = our rows per pass / batch, rounded up: 13 at batch 1, 2 samples = 16 rows at
  batch 8, against our 13); the loss through ``log_softmax`` (squares and variances do not see its sign).
  DeepLIFT: ``DeepLift`` on a copy of the model where ``nn.ReLU6`` has Captum's own Rescale rule and the
  activation modules EfficientNet calls twice per block are split per call (made once, not timed); the
  score with ``target=y``; the loss as our maps define it, the logits weighted by their multipliers
  e_y − ∫ softmax (two forward passes and the quadrature, timed), then ``DeepLift``. A check that both give
  the same maps is printed (max |difference| / max |value|).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saliency_core import attribute, sample_by_name
from saliency_core.core.passes import row_bytes, rows_per_pass
from saliency_core.methods.deeplift import mean_softmax
from saliency_core.methods.smoothgrad import noise_scale
from saliency_core.models.loading import load_model
from tests.methods.oracles import LogSoftmax, Weighted, captum_ready  # Captum's adaptations, as the tests make them

PHOTOS = ("coffee", "chelsea", "rocket", "motorcycle", "camera")


def images(n: int, lite0) -> tuple[torch.Tensor, list[int]]:
    """n photos (the samples, mirrored after the first five), normalised, channels_last."""
    photos = [sample_by_name(PHOTOS[i % len(PHOTOS)]) for i in range(n)]
    x = lite0.preprocess([p.image for p in photos]).x
    flip = torch.arange(n) >= len(PHOTOS)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x.contiguous(memory_format=torch.channels_last), [p.label for p in photos]


def contenders(lite0, x: torch.Tensor, y: list[int], samples: int, noise: float, black: torch.Tensor
               ) -> dict[str, dict[str, Callable[[], object]]]:
    from captum.attr import DeepLift, NoiseTunnel, Saliency
    from captum.attr._core import deep_lift

    deep_lift.SUPPORTED_NON_LINEAR[nn.ReLU6] = deep_lift.nonlinear  # Captum's own Rescale rule
    model, target = lite0.model, torch.tensor(y)
    n = x.shape[0]
    per_pass = rows_per_pass(row_bytes(x.shape[1:], x.dtype), x.device)
    sigma = float(noise_scale(x, noise).mean())
    ready = captum_ready(model, x)

    def ours(method: str, **params) -> Callable[[], object]:
        return lambda: attribute(lite0, x, y, method, ("score", "loss"), **params)

    def tunnel(nt_type: str) -> Callable[[], object]:
        def run():
            return [NoiseTunnel(Saliency(f)).attribute(x, nt_type=nt_type, nt_samples=samples,
                                                       nt_samples_batch_size=math.ceil(per_pass / n),
                                                       stdevs=sigma, target=target, abs=False)
                    for f in (model, LogSoftmax(model))]
        return run

    def captum_deeplift():
        score = DeepLift(ready).attribute(x, baselines=black, target=target)
        with torch.no_grad():
            s, s_ref = model(x), model(black)
        w = (F.one_hot(target, s.shape[1]).double() - mean_softmax(s, s_ref)).float()
        loss = DeepLift(Weighted(ready, w)).attribute(x, baselines=black, target=torch.zeros_like(target))
        return score, loss

    return {
        "smoothgrad_sq": {"ours": ours("smoothgrad_sq", samples=samples, noise=noise),
                          "captum": tunnel("smoothgrad_sq")},
        "vargrad": {"ours": ours("vargrad", samples=samples, noise=noise), "captum": tunnel("vargrad")},
        "deeplift": {"ours": ours("deeplift"), "captum": captum_deeplift},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--reps", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--samples", type=int, default=25, help="noisy copies (the dashboard's default, 25)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (a first call pays one-time costs)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")  # Captum announces its hooks on every call
    lite0 = load_model(None, device="cpu")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (lite0.preprocessing.mean, lite0.preprocessing.std))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads, "
          f"{a.samples} samples, {a.warmup} untimed and {a.reps} timed rounds", flush=True)
    rows = []
    for n in (int(b) for b in a.batches.split(",")):
        x, y = images(n, lite0)
        black = ((0 - mean) / std).expand_as(x).contiguous(memory_format=torch.channels_last)
        runs = contenders(lite0, x, y, a.samples, 0.15, black)
        ours_dl = runs["deeplift"]["ours"]()
        theirs_dl = runs["deeplift"]["captum"]()
        for obj, ref in zip(("score", "loss"), theirs_dl, strict=True):
            diff = float((ours_dl.attributions[obj] - ref).abs().max() / ref.abs().max())
            print(f"batch {n}: DeepLIFT {obj} max |ours - Captum| / max |Captum| = {diff:.1e}", flush=True)
        for _ in range(a.warmup):
            for pair in runs.values():
                for run in pair.values():
                    run()
        times: dict[tuple[str, str], list[float]] = {}
        for rep in range(a.reps):
            for method, pair in runs.items():
                order = ("ours", "captum") if rep % 2 == 0 else ("captum", "ours")
                for who in order:
                    start = time.perf_counter()
                    pair[who]()
                    times.setdefault((method, who), []).append(time.perf_counter() - start)
            print(f"batch {n}, round {rep + 1}: "
                  + ", ".join(f"{m} {w} {t[-1]:.2f} s" for (m, w), t in times.items()), flush=True)
        for method in runs:
            ours, theirs = (statistics.median(times[(method, w)]) for w in ("ours", "captum"))
            paired = statistics.median(c / o for o, c in zip(times[(method, "ours")], times[(method, "captum")],
                                                              strict=True))
            rows.append((method, n, theirs, ours, paired))
    print("\n| method | batch | Captum s/call | ours s/call | ours / Captum (medians) | ours / Captum (paired) |")
    print("|---|---|---|---|---|---|")
    for method, n, theirs, ours, paired in rows:
        print(f"| {method} | {n} | {theirs:.2f} | {ours:.2f} | {theirs / ours:.2f}x | {paired:.2f}x |")


if __name__ == "__main__":
    main()
