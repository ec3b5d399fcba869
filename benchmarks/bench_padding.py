"""The embedded model as the package builds it against the same weights as ``load_model`` gives them, where the
stride-1 convolutions pad by themselves (``saliency_core.models.loading.fold_symmetric_padding``).

Run from the repository root::

    .venv/bin/python benchmarks/bench_padding.py                   # batches 1 and 8, 5 rounds
    .venv/bin/python benchmarks/bench_padding.py --batches 8 --reps 9

Both modules channels_last on the CPU, the same random 224 px rows. Two kinds of pass, as the methods run
them: a forward pass without gradients (Occlusion, RISE, the metrics) and a gradient row (a forward pass and
the score's and the loss's input gradients, as every gradient method's row). Contenders interleaved round
after round; the medians and their ratio are printed, and whether the logits and gradients are equal bit for
bit (they must be: tests/test_models.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# As dashboard.py sets it on a server: OpenMP threads sleep instead of spinning for cores others hold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe, interleaved_medians  # this folder is on sys.path when run as a script

from saliency_core.core.gradients import forward_and_vjps
from saliency_core.models.loading import load_model, packaged_embedded


def stock_module() -> torch.nn.Module:
    """EfficientNet-Lite0 as efficientnet-lite-pytorch builds it (every pad a ZeroPad2d), the embedded weights."""
    module = packaged_embedded().eval().requires_grad_(False)
    return module.to(memory_format=torch.channels_last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds; the median is reported")
    args = ap.parse_args()
    device = torch.device("cpu")
    folded, stock = load_model().model, stock_module()
    print(describe(device))
    print("| pass | batch | package's module (s) | padding folded (s) | speed-up | equal bit for bit |")
    print("|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        torch.manual_seed(batch)
        x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,))

        def forward(module: torch.nn.Module, x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode():
                return module(x)

        def rows(module: torch.nn.Module, x: torch.Tensor = x, y: torch.Tensor = y):
            return forward_and_vjps(module, x, y, ("score", "loss"))

        a, b = rows(stock), rows(folded)
        same_rows = torch.equal(a.logits, b.logits) and all(torch.equal(a.grads[o], b.grads[o]) for o in a.grads)
        same_forward = torch.equal(forward(stock), forward(folded))
        for name, run, same in (("forward", forward, same_forward), ("gradient row", rows, same_rows)):
            t = interleaved_medians({"stock": lambda run=run: run(stock), "folded": lambda run=run: run(folded)},
                                    device, args.reps, warmup=1)
            print(f"| {name} | {batch} | {t['stock']:.3f} | {t['folded']:.3f} | {t['stock'] / t['folded']:.2f}x | "
                  f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
