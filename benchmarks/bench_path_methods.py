"""Blur IG, Guided IG, Expected Gradients and XRAI against their oracle libraries, for the same work: both
objectives.

Run from the repository root::

    .venv/bin/python benchmarks/bench_path_methods.py                  # batches 1 and 8, 3 rounds
    .venv/bin/python benchmarks/bench_path_methods.py --batches 1 --reps 1
    .venv/bin/python benchmarks/bench_path_methods.py --methods xrai --xrai-steps 8
    .venv/bin/python benchmarks/bench_path_methods.py --methods guided_ig --guided-steps 8

On the embedded model (EfficientNet-Lite0, channels_last as ``load_model`` gives it) and the bundled photos,
each contender computes the score and the loss (−L = log p_y) maps of every image of the batch:

* Blur IG: ``saliency_core.attribute(..., "blur_ig", steps=S)`` against PAIR's ``saliency.core.BlurIG``
  (``saliency==0.2.1``), which takes one HWC image and one objective per call: called per image and per
  objective, its ``call_model_function`` running the same model on the same pixels (PAIR blurs the pixel
  image, given in float64 as the tests do, or its finite difference over grad_step loses two digits; the model
  normalises and runs in float32), ``batch_size`` 8 path points per pass (the core's CPU chunk). Same steps,
  max_sigma 50 and grad_step 0.01: the same result (the largest difference is reported).
* Guided IG: ``attribute(..., "guided_ig", steps=S)`` against PAIR's ``saliency.core.GuidedIG`` (``saliency==0.2.1``),
  one CHW image and one objective per call (its ``call_model_function`` runs the model on one row, s_y or
  −cross_entropy as the core computes them), from the same black baseline in the model's input space, same
  steps, fraction 0.25 and max_dist 0.02. The core runs every image's two paths in one batch per step. Its
  float32 convolutions round a row by its place in the batch, and the path's choice of features amplifies a last
  bit (tests/methods/test_guided_ig.py), so the maps can part: the largest difference is reported as measured,
  the equality is the tests'. PAIR 0.2.1 calls ``np.quantile(interpolation=)``, gone in numpy 2.4: its module
  gets a numpy that takes the old name.
* Expected Gradients: ``attribute(..., "expected_gradients", samples=K)`` against Captum's ``GradientShap``
  with the same references (each image's four blurs, as the method's default) and the same number of
  samples, per image (its baselines are shared by a call's inputs) and per objective. The draws differ (each
  side draws its own α and reference), so the work is the same, not the maps.
* XRAI: ``attribute(..., "xrai", steps=S, mode=M)`` against PAIR's ``saliency.core.XRAI`` computing everything
  itself, per image and per objective: its IG from the black and the white pixel image (``baselines=[0, 1]``,
  S points each, ``batch_size`` 8, the same model through ``call_model_function`` on the pixels), its
  Felzenszwalb segments of the pixel image, its ranking in mode M. PAIR weights IG's points 1/S, the core's
  trapezoid halves the ends: the same rows, not the same IG, so the maps are not compared here
  (``tests/methods/test_xrai.py`` gives PAIR the core's IG and segments and gets the same maps).

Steps and samples are below the dashboard's defaults (64 and 32) to keep a round short; both sides scale
with them alike. Each round runs every contender once, in turn; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

# As dashboard.py sets it on a server: OpenMP threads sleep instead of spinning for cores others hold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe, interleaved_medians  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.core import baselines as baseline_images
from saliency_core.inputs.samples import sample_images
from saliency_core.methods.declaration import AttributionWarning
from saliency_core.methods.expected_gradients import BLUR_FACTORS
from saliency_core.models.loading import load_model
from tests.methods.oracles import OldQuantileNumpy  # PAIR's Guided IG on numpy 2.4, as the tests run it

OBJECTIVES = ("score", "loss")


def objective(logits: torch.Tensor, y: int, name: str) -> torch.Tensor:
    return logits[:, y] if name == "score" else F.log_softmax(logits, dim=1)[:, y]


def images(model, n: int) -> tuple[torch.Tensor, list[int]]:
    samples = (sample_images() * n)[:n]
    return model.preprocess([s.image for s in samples]).x, [s.label for s in samples]


def pair_blur_ig(model, x: torch.Tensor, y: list[int], steps: int) -> dict[str, list[np.ndarray]]:
    import saliency.core as pair

    # float64 pixels, as in tests/methods/test_blur_ig.py: PAIR's finite difference over grad_step 0.01 loses two
    # digits in float32; the model still runs in float32.
    mean = torch.tensor(model.preprocessing.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std, dtype=torch.float64).view(1, 3, 1, 1)
    out: dict[str, list[np.ndarray]] = {o: [] for o in OBJECTIVES}
    for i, target in enumerate(y):
        pixels = (x[i:i + 1].double() * std + mean)[0].permute(1, 2, 0).numpy()
        for name in OBJECTIVES:
            def call(batch, call_model_args=None, expected_keys=None, name=name, target=target):
                p = torch.tensor(np.asarray(batch), dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_(True)
                f = objective(model.model(((p - mean) / std).float()), target, name)
                (grad,) = torch.autograd.grad(f.sum(), p)
                return {pair.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

            out[name].append(pair.BlurIG().GetMask(pixels, call, None, max_sigma=50, steps=steps, grad_step=0.01,
                                                   batch_size=8))
    return out


def pair_guided_ig(model, x: torch.Tensor, y: list[int], steps: int) -> dict[str, list[np.ndarray]]:
    import saliency.core as pair
    import saliency.core.guided_ig as pair_guided

    pair_guided.np = OldQuantileNumpy("numpy")
    black = baseline_images.make_baseline(x[:1], "black", mean=model.preprocessing.mean,
                                          std=model.preprocessing.std)[0].double().numpy()
    out: dict[str, list[np.ndarray]] = {o: [] for o in OBJECTIVES}
    for i, target in enumerate(y):
        image = x[i].double().numpy()
        for name in OBJECTIVES:
            def call(batch, call_model_args=None, expected_keys=None, name=name, target=target):
                rows = torch.tensor(np.asarray(batch), dtype=torch.float32).requires_grad_(True)
                logits = model.model(rows)
                f = (logits[:, target] if name == "score"
                     else -F.cross_entropy(logits, torch.full((rows.shape[0],), target), reduction="none"))
                (grad,) = torch.autograd.grad(f.sum(), rows)
                return {pair.INPUT_OUTPUT_GRADIENTS: grad.numpy()}

            out[name].append(pair.GuidedIG().GetMask(image, call, None, x_baseline=black, x_steps=steps,
                                                     fraction=0.25, max_dist=0.02))
    return out


def captum_eg(model, x: torch.Tensor, y: list[int], samples: int) -> None:
    from captum.attr import GradientShap

    sigma = baseline_images.resolve_blur_sigma(x.shape)
    for i, target in enumerate(y):
        xi = x[i:i + 1]
        refs = torch.cat([baseline_images.gaussian_blur(xi, f * sigma) for f in BLUR_FACTORS])
        for name in OBJECTIVES:
            shap = GradientShap(lambda inp, n=name, t=target: objective(model.model(inp), t, n))
            shap.attribute(xi, baselines=refs, n_samples=samples, stdevs=0.0)


def pair_xrai(model, x: torch.Tensor, y: list[int], steps: int, mode: str) -> None:
    import saliency.core as pair

    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    params = pair.XRAIParameters(steps=steps, algorithm=mode)
    for i, target in enumerate(y):
        pixels = (x[i:i + 1] * std + mean)[0].permute(1, 2, 0).numpy()
        black, white = np.zeros_like(pixels), np.ones_like(pixels)
        for name in OBJECTIVES:
            def call(batch, call_model_args=None, expected_keys=None, name=name, target=target):
                p = torch.tensor(np.asarray(batch), dtype=torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
                f = objective(model.model((p - mean) / std), target, name)
                (grad,) = torch.autograd.grad(f.sum(), p)
                return {pair.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

            pair.XRAI().GetMask(pixels, call, baselines=[black, white], batch_size=8, extra_parameters=params)


def relative(ours: torch.Tensor, theirs: list[np.ndarray], hwc: bool = True) -> float:
    """max |ours − theirs| / max |theirs| over the batch; PAIR's maps are in pixel units, the core's in the
    model's input units: one image's gradient w.r.t. pixels is 1/std times the normalised one, and the path
    difference std times: the products agree."""
    ref = torch.from_numpy(np.stack(theirs)).double()
    ref = ref.permute(0, 3, 1, 2) if hwc else ref
    return float((ours.double() - ref).abs().max() / ref.abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=16, help="Blur IG's steps on both sides")
    ap.add_argument("--samples", type=int, default=16, help="Expected Gradients' samples on both sides")
    ap.add_argument("--guided-steps", type=int, default=8, help="Guided IG's steps on both sides")
    ap.add_argument("--xrai-steps", type=int, default=16, help="XRAI's IG points per baseline on both sides")
    ap.add_argument("--xrai-mode", default="full", choices=("full", "fast"))
    ap.add_argument("--methods", default="blur_ig,guided_ig,expected_gradients,xrai", help="which of them to run")
    args = ap.parse_args(argv)
    methods = set(args.methods.split(","))
    warnings.simplefilter("ignore", AttributionWarning)
    device = torch.device("cpu")
    model = load_model(None, device)
    print(f"{describe(device)}; load average {os.getloadavg()[0]:.1f} at the start")
    print("| method | batch | oracle | oracle images/s | core images/s | core / oracle | max difference |")
    print("|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        x, y = images(model, batch)
        kept: dict[str, object] = {}

        def ours_blur(x=x, y=y, kept=kept) -> None:
            kept["core"] = attribute(model, x, y, "blur_ig", OBJECTIVES, steps=args.steps)

        def theirs_blur(x=x, y=y, kept=kept) -> None:
            kept["pair"] = pair_blur_ig(model, x, y, args.steps)

        if "blur_ig" in methods:
            t = interleaved_medians({"core": ours_blur, "oracle": theirs_blur}, device, args.reps, args.warmup)
            diff = max(relative(kept["core"].attributions[o], kept["pair"][o]) for o in OBJECTIVES)
            print(f"| blur_ig ({args.steps} steps) | {batch} | PAIR saliency 0.2.1 | {batch / t['oracle']:.3f} | "
                  f"{batch / t['core']:.3f} | {t['oracle'] / t['core']:.2f}x | {diff:.1e} |", flush=True)

        def ours_guided(x=x, y=y, kept=kept) -> None:
            kept["core"] = attribute(model, x, y, "guided_ig", OBJECTIVES, steps=args.guided_steps)

        def theirs_guided(x=x, y=y, kept=kept) -> None:
            kept["pair"] = pair_guided_ig(model, x, y, args.guided_steps)

        if "guided_ig" in methods:
            t = interleaved_medians({"core": ours_guided, "oracle": theirs_guided}, device, args.reps, args.warmup)
            diff = {o: relative(kept["core"].attributions[o], kept["pair"][o], hwc=False) for o in OBJECTIVES}
            print(f"| guided_ig ({args.guided_steps} steps) | {batch} | PAIR saliency 0.2.1 | "
                  f"{batch / t['oracle']:.3f} | {batch / t['core']:.3f} | {t['oracle'] / t['core']:.2f}x | "
                  f"score {diff['score']:.1e}, −L {diff['loss']:.1e} |", flush=True)

        def ours_eg(x=x, y=y) -> None:
            attribute(model, x, y, "expected_gradients", OBJECTIVES, samples=args.samples)

        def theirs_eg(x=x, y=y) -> None:
            captum_eg(model, x, y, args.samples)

        if "expected_gradients" in methods:
            t = interleaved_medians({"core": ours_eg, "oracle": theirs_eg}, device, args.reps, args.warmup)
            print(f"| expected_gradients ({args.samples} samples) | {batch} | Captum GradientShap | "
                  f"{batch / t['oracle']:.3f} | {batch / t['core']:.3f} | {t['oracle'] / t['core']:.2f}x | "
                  "other draws |", flush=True)

        def ours_xrai(x=x, y=y) -> None:
            attribute(model, x, y, "xrai", OBJECTIVES, steps=args.xrai_steps, mode=args.xrai_mode)

        def theirs_xrai(x=x, y=y) -> None:
            pair_xrai(model, x, y, args.xrai_steps, args.xrai_mode)

        if "xrai" in methods:
            t = interleaved_medians({"core": ours_xrai, "oracle": theirs_xrai}, device, args.reps, args.warmup)
            print(f"| xrai ({args.xrai_mode}, {args.xrai_steps} steps per baseline) | {batch} | PAIR saliency 0.2.1 | "
                  f"{batch / t['oracle']:.3f} | {batch / t['core']:.3f} | {t['oracle'] / t['core']:.2f}x | "
                  "other IG weights |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
