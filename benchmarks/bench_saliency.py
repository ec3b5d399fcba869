"""Speed of both saliency maps: the seed's way, Captum, saliency_core, and the ceiling.

Run from the repository root::

    .venv/bin/python benchmarks/bench_saliency.py                 # CPU (and CUDA when present)
    .venv/bin/python benchmarks/bench_saliency.py --device cuda --agreement

For every model and batch size, the contenders run interleaved, round after
round, and the median time of each is reported, so a noisy machine slows all
of them alike. A "map" is one image's score map or loss map, so one image
gives two maps. The ceiling is 2/3 of the fastest forward-only throughput
measured in the same run: both maps need one forward and two input-gradient
backward passes, about three forwards' worth of work.

Contenders (all compute both maps for the whole batch):

* seed: the cs231n way: weights trainable, ``X.requires_grad_()``, one
  forward and ``.backward()`` per method, gradients flowing into the weights.
* captum: ``captum.attr.Saliency`` called once per method (score; per-example
  cross-entropy), as a user would.
* core: ``saliency_core.compute_saliency``: one forward, two input VJPs.

Precision on CUDA: "exact" runs everything with TF32 off; "fast" runs
everything under float16 autocast in channels_last; the comparison is
always at equal precision. On CPU both modes are float32, so only "exact" runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saliency_core.core.gradients import compute_saliency
from saliency_core.models.loading import load_model

MODELS = ("squeezenet1_1", "efficientnet_lite0", "resnet50")


def build_model(name: str, device: torch.device) -> torch.nn.Module:
    """Real weights for the embedded model; random ones for torchvision (same speed, no download)."""
    if name == "efficientnet_lite0":
        return load_model(name, device, channels_last=False).model
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    fast = precision == "fast"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = fast
    try:
        with torch.autocast("cuda", dtype=torch.float16) if fast else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def seed_way(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    trainable = copy.deepcopy(model)
    for p in trainable.parameters():
        p.requires_grad_(True)

    def run(X: torch.Tensor, y: torch.Tensor) -> None:
        for method in ("score", "loss"):
            x = X.clone().requires_grad_(True)
            trainable.zero_grad(set_to_none=True)
            logits = trainable(x)
            if method == "score":
                logits.gather(1, y[:, None]).sum().backward()
            else:
                F.cross_entropy(logits.float(), y, reduction="sum").backward()
            x.grad.abs().amax(dim=1)

    return run


def captum_way(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    from captum.attr import Saliency

    score = Saliency(model)
    loss = Saliency(lambda x: -F.log_softmax(model(x).float(), dim=1))

    def run(X: torch.Tensor, y: torch.Tensor) -> None:
        score.attribute(X, target=y, abs=True).amax(dim=1)
        loss.attribute(X, target=y, abs=True).amax(dim=1)

    return run


def core_way(model: torch.nn.Module, precision: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def run(X: torch.Tensor, y: torch.Tensor) -> None:
        compute_saliency(model, X, y, ("score", "loss"), precision=precision)

    return run


def forward_only(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def run(X: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            model(X)

    return run


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(contenders: dict[str, Callable[[], None]], device: torch.device, reps: int,
                        warmup: int) -> dict[str, float]:
    """Median seconds of each contender over ``reps`` rounds that run every contender once, after ``warmup``."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(warmup):
        for fn in contenders.values():
            timed(fn, device)
    for _ in range(reps):
        for key, fn in contenders.items():
            times[key].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_case(name: str, device: torch.device, batch: int, precision: str, reps: int, warmup: int) -> dict:
    base = build_model(name, device)
    channels_last = device.type == "cpu" or precision == "fast"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(base).to(memory_format=fmt)
    other = copy.deepcopy(base).to(memory_format=torch.contiguous_format if channels_last else torch.channels_last)
    torch.manual_seed(1)
    X = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=fmt)
    X_other = X.contiguous(memory_format=torch.contiguous_format if channels_last else torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    runners = {
        "seed": (seed_way(model), X),
        "captum": (captum_way(model), X),
        "core": (core_way(model, precision), X),
        "forward": (forward_only(model), X),
        "forward_other_layout": (forward_only(other), X_other),
    }
    contenders = {key: (lambda f=f, x=x: f(x, y)) for key, (f, x) in runners.items()}
    with precision_context(device, precision):
        med = interleaved_medians(contenders, device, reps, warmup)
    maps = {k: 2 * batch / med[k] for k in ("seed", "captum", "core")}
    fwd = max(batch / med["forward"], batch / med["forward_other_layout"])
    ceiling = 2 / 3 * fwd  # maps/s: 2 maps per image, 3 forward-equivalents per image
    return {
        "model": name, "device": device.type, "batch": batch, "precision": precision, **maps,
        "forward_img_s": fwd, "ceiling": ceiling,
        "core_vs_captum": maps["core"] / maps["captum"], "core_vs_seed": maps["core"] / maps["seed"],
        "core_vs_ceiling": maps["core"] / ceiling,
    }


def bench_methods(device: torch.device, batch: int, reps: int, warmup: int) -> list[dict]:
    """SmoothGrad (25 samples) and Integrated Gradients (32 Gauss-Legendre steps, zero baseline), both
    objectives, embedded model: ``saliency_core.attribute`` (one forward, two VJPs per row) against Captum's
    ``NoiseTunnel(Saliency)`` and ``IntegratedGradients`` called once per objective at the same settings,
    with the same rows per forward pass (64). Interleaved rounds; images/s from the medians."""
    import warnings

    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    from saliency_core import attribute

    loaded = load_model("efficientnet_lite0", device)
    model = loaded.model
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    torch.manual_seed(1)
    X = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    sigma = float(0.15 * (X.amax() - X.amin()))

    def log_probs(x: torch.Tensor) -> torch.Tensor:  # target column: -L, the per-image loss objective
        return F.log_softmax(model(x).float(), dim=1)

    def captum_smoothgrad() -> None:
        for forward in (model, log_probs):
            NoiseTunnel(Saliency(forward)).attribute(X, nt_type="smoothgrad", nt_samples=25, stdevs=sigma,
                                                     nt_samples_batch_size=max(1, 64 // batch), target=y,
                                                     abs=False)

    def captum_ig() -> None:
        for forward in (model, log_probs):
            IntegratedGradients(forward).attribute(X, baselines=0.0, target=y, n_steps=32, method="gausslegendre",
                                                   internal_batch_size=64)

    def core_smoothgrad() -> None:
        attribute(loaded, X, y, method="smoothgrad", objectives=("score", "loss"), samples=25, noise=0.15,
                  max_batch=64)

    def core_ig() -> None:
        attribute(loaded, X, y, method="integrated_gradients", objectives=("score", "loss"), steps=32,
                  rule="gauss_legendre", baseline="dataset_mean", max_batch=64)

    contenders = {"captum smoothgrad": captum_smoothgrad, "core smoothgrad": core_smoothgrad,
                  "captum integrated_gradients": captum_ig, "core integrated_gradients": core_ig}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IG's completeness warning, Captum's requires_grad notice
        med = interleaved_medians(contenders, device, reps, warmup)
    return [{"method": m, "batch": batch, "captum": batch / med[f"captum {m}"], "core": batch / med[f"core {m}"],
             "ratio": med[f"captum {m}"] / med[f"core {m}"]} for m in ("smoothgrad", "integrated_gradients")]


def agreement(device: torch.device) -> list[str]:
    """Fast vs exact maps on the samples with real weights: Spearman per image."""
    from scipy.stats import spearmanr

    from saliency_core.inputs.samples import sample_images

    m = load_model(None, device)
    samples = sample_images()
    batch = m.preprocess([s.image for s in samples])
    y = [s.label for s in samples]
    exact = compute_saliency(m, batch.x, y, precision="exact")
    fast = compute_saliency(m, batch.x, y, precision="fast")
    lines = []
    for method in ("score", "loss"):
        rhos = [spearmanr(exact.maps[method][i].flatten().cpu(), fast.maps[method][i].flatten().cpu())[0]
                for i in range(len(samples))]
        lines.append(f"| {m.name} | {method} | " + " | ".join(f"{s.name} {r:.4f}" for s, r in zip(samples, rhos,
                                                                                                     strict=True))
                     + f" | min {min(rhos):.4f} |")
    return lines


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "all"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--cpu-batches", default="1,8")
    ap.add_argument("--cuda-batches", default="1,25,256")
    ap.add_argument("--reps", type=int, default=0, help="timed rounds (default 7 on CPU, 15 on CUDA)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--agreement", action="store_true", help="also report fast-vs-exact Spearman on the samples")
    ap.add_argument("--methods", action="store_true",
                    help="only SmoothGrad and Integrated Gradients against Captum (embedded model)")
    ap.add_argument("--method-batches", default="1,4")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))

    devices = []
    if args.device in ("cpu", "all") or (args.device == "auto" and not torch.cuda.is_available()):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    if args.methods:
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        for device in devices:
            reps = args.reps or 3
            print(f"\n### {device.type}: {describe(device)}; median of {reps} interleaved rounds, both objectives\n")
            print("| method | batch | Captum images/s | core images/s | core / Captum |\n|---|---|---|---|---|")
            for batch in (int(b) for b in args.method_batches.split(",")):
                for r in bench_methods(device, batch, reps, max(1, args.warmup - 1)):
                    print(f"| {r['method']} | {batch} | {r['captum']:.2f} | {r['core']:.2f} | {r['ratio']:.2f}x |",
                          flush=True)
        return 0

    header = ("| model | batch | precision | seed maps/s | Captum maps/s | core maps/s | forward img/s | "
              "ceiling maps/s | core / Captum | core / seed | core / ceiling |")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for device in devices:
        batches = [int(b) for b in (args.cpu_batches if device.type == "cpu" else args.cuda_batches).split(",")]
        precisions = ["exact"] if device.type == "cpu" else ["exact", "fast"]
        reps = args.reps or (7 if device.type == "cpu" else 15)
        print(f"\n### {device.type}: {describe(device)}; median of {reps} interleaved rounds\n")
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for name in args.models.split(","):
            for batch in batches:
                for precision in precisions:
                    r = bench_case(name, device, batch, precision, reps, args.warmup)
                    print(f"| {r['model']} | {batch} | {precision} | {r['seed']:.1f} | {r['captum']:.1f} | "
                          f"{r['core']:.1f} | {r['forward_img_s']:.1f} | {r['ceiling']:.1f} | "
                          f"{r['core_vs_captum']:.2f}x | {r['core_vs_seed']:.2f}x | {r['core_vs_ceiling']:.0%} |",
                          flush=True)
        if args.agreement:
            print("\nfast vs exact, Spearman per image (embedded model, real weights):\n")
            print("| model | method | per image | min |\n|---|---|---|---|")
            for line in agreement(device):
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
