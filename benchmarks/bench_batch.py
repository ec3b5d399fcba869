"""Throughput of the batch job against the in-process benchmark: is loading ever the bottleneck?

Run from the repository root::

    .venv/bin/python benchmarks/bench_batch.py [--images 96] [--batch-size 8] [--device cpu|cuda]

It writes a folder of sample JPEGs (``write_sample_folder``), then, round
after round, times

* maps in-process: ``compute_saliency`` on the already decoded, cropped
  and normalised images, batch by batch (the "core" contender of
  ``bench_saliency.py``): the speed of the maps alone;
* maps + numbers in-process: ``job_columns.batch_columns`` on the same tensors,
  the maps and every number the job writes (statistics, agreement,
  probabilities), still without reading a file;
* the job: ``saliency_core.jobs.batch`` into a fresh folder, from JPEG files to
  Parquet (decoding in DataLoader workers, statistics, agreement, writing),
  timed by the job itself from its first batch to its last part;

and reports images/s for each (medians). The job against "maps + numbers"
isolates what loading and writing cost (goal: the job at 90 % or more, so
loading is never the bottleneck); against "maps" it adds the statistics.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe, timed  # this folder is on sys.path when run as a script

from saliency_core.core.gradients import compute_saliency
from saliency_core.inputs.images import load_image
from saliency_core.jobs import batch
from saliency_core.jobs import columns as job_columns
from saliency_core.jobs import processes as job_processes
from saliency_core.jobs.imagefolder import discover, write_sample_folder
from saliency_core.models.loading import load_model, pick_device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the job's default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        folder = write_sample_folder(work / "images", args.images, corrupt=0)
        found = discover(folder)
        model = load_model(None, device)
        x = model.preprocess([load_image(folder / it.key) for it in found.items]).x.to(device)
        y = torch.tensor([it.label if it.label is not None else -1 for it in found.items], device=device)

        labels = [it.label for it in found.items]

        def maps_only() -> None:
            for start in range(0, len(x), args.batch_size):
                compute_saliency(model, x[start:start + args.batch_size], y[start:start + args.batch_size])

        def with_numbers() -> None:
            for start in range(0, len(x), args.batch_size):
                stop = start + args.batch_size
                job_columns.batch_columns(model, x[start:stop], labels[start:stop], opts)

        job_argv = ["--images", str(folder), "--batch-size", str(args.batch_size), "--device", str(device),
                    "--no-progress"] + (["--workers", str(args.workers)] if args.workers is not None else [])
        opts = batch.parse_args([*job_argv, "--out", str(work / "x")])
        workers = args.workers if args.workers is not None else job_processes.default_workers(device, 1)
        maps_only(), with_numbers()  # warm-up
        speed: dict[str, list[float]] = {"maps": [], "numbers": [], "job": []}
        for r in range(args.rounds):
            speed["maps"].append(len(x) / timed(maps_only, device))
            speed["numbers"].append(len(x) / timed(with_numbers, device))
            out = work / f"out{r}"
            speed["job"].append(batch.run(batch.parse_args([*job_argv, "--out", str(out)]))["images_per_s"])
            shutil.rmtree(out)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} images/s" for k, v in speed.items()), flush=True)
        m, n, j = (statistics.median(speed[k]) for k in ("maps", "numbers", "job"))
        print(f"\n{describe(device)}; embedded model, {len(x)} images, batch {args.batch_size}, "
              f"{workers} DataLoader workers, medians of {args.rounds} rounds")
        print("| maps in-process | maps + numbers in-process | job (files to Parquet) | job / maps + numbers "
              "| job / maps |\n|---|---|---|---|---|")
        print(f"| {m:.1f} | {n:.1f} | {j:.1f} | {j / n:.0%} | {j / m:.0%} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
