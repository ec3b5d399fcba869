"""Saliency for a whole dataset: ``python -m saliency_core.batch --images DIR --out OUT``.

One process on a laptop::

    python -m saliency_core.batch --images val/ --out results/val

Every GPU of a machine, or many machines, with PyTorch's own launcher::

    torchrun --nproc-per-node 8 -m saliency_core.batch --images val/ --out results/val
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m saliency_core.batch --images val/ --out results/val

A torchvision model's weights not yet cached are downloaded by rank 0 while the
other ranks wait, then every rank loads them from the cache
(:func:`saliency_core.jobs.processes.fetch_weights_once`).

Each rank takes every world-th image that is not written yet (see
:class:`saliency_core.jobs.imagefolder.ShardSampler`), feeds it through a
``DataLoader`` whose worker processes decode and crop, computes the maps
``--maps`` asks for (any attribution method of either objective, named
by :mod:`saliency_core.jobs.map_specs`; the score and loss gradients by default,
from one forward pass per batch), their statistics and the agreement of
every two on the device (:mod:`saliency_core.evaluation.tensor_stats`), and writes its own Parquet parts
(:mod:`saliency_core.jobs.results`). Files that cannot be read land in the
errors table with the reason; they never stop the job. Stopped and started
again with the same options, the job skips everything already written.

Each run records in the manifest its process (pid, host, start time) and
ends as "complete", or as "stopped" with the reason when it is stopped by
SIGTERM, Ctrl-C or an error. A run killed outright (SIGKILL, out of memory)
can't write that: :func:`saliency_core.jobs.results.run_status` tells it from a
live one by its process, and the next run on the same ``--out`` marks it
"stopped" (and refuses to start while a live one writes there).
"""

from __future__ import annotations

import functools
import getpass
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from saliency_core.errors import ModelOutputError, SaliencyError
from saliency_core.figures.provenance import package_versions
from saliency_core.inputs.preprocessing import normalize
from saliency_core.jobs import map_specs, metric_specs, results
from saliency_core.jobs.columns import batch_columns, check_maps_apply, rows_frame
from saliency_core.jobs.imagefolder import (
    Discovery,
    ImageDataset,
    ShardSampler,
    collate,
    discover,
    item_path,
)
from saliency_core.jobs.localisation import Objects, load_objects
from saliency_core.jobs.metric_columns import check_metrics_apply, object_masks
from saliency_core.jobs.options import Options, parse_args, recorded_config
from saliency_core.jobs.processes import (
    Ranks,
    Stopped,
    default_workers,
    die_with_job,
    fetch_weights_once,
    raise_stopped,
    start_ranks,
    stop_reason,
)
from saliency_core.methods.registry import get_method
from saliency_core.models.loading import load_model
from saliency_core.models.registry import LoadedModel

__all__ = ["Options", "main", "parse_args", "run"]


class _Progress:
    """A tqdm bar on rank 0 (images/s and time left) when wanted, else nothing."""

    def __init__(self, total: int, ranks: Ranks, enabled: bool | None) -> None:
        self.bar = None
        if ranks.rank == 0 and enabled is not False:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, disable=None if enabled is None else False,
                            desc="saliency" if ranks.world == 1 else f"saliency, rank 0 of {ranks.world}")

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _folder_problem(out: Path, opts: Options) -> str | None:
    """On rank 0: make ``out`` and clear what a stopped run left; why the job can't go on there, or None."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*/.part-*.tmp"):  # left by a run stopped while writing
            stale.unlink(missing_ok=True)
    except OSError as exc:  # parse_args checked permissions, which root passes even where it can't write
        return f"--out {out}: the results folder can't be made or written ({exc.strerror or exc})"
    earlier = results.read_manifest(out)
    old = recorded_config(earlier["config"]) if isinstance(earlier.get("config"), dict) else None  # older names too
    live = [r for r in earlier.get("runs", []) if results.run_status(r) == "running"]
    if old is not None and old != opts.config():
        new = opts.config()
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in dict.fromkeys([*new, *old])
                         if old.get(k) != new.get(k))
        return (f"{out} holds results made with other options ({diff}). Use a new --out folder, "
                "or the same options to finish that run.")
    if live:
        r = live[-1]
        return (f"{out} is being written by run {r.get('run')} (pid {r.get('pid')} on {r.get('host')}, "
                f"started {r.get('started')}). Wait for it to finish, or stop it, then run this again.")
    return None


def _prepare_out(opts: Options, ranks: Ranks, discovery: Discovery, model: LoadedModel, objects: Objects | None
                 ) -> tuple[int, set[str]]:
    """Check the folder against the options, read what is done, record this run; returns (run, done keys)."""
    out = Path(opts.out)
    problem = _folder_problem(out, opts) if ranks.rank == 0 else None
    problem = ranks.broadcast(problem)
    if problem:
        raise SaliencyError(problem)
    done = results.done_keys(out)  # every rank reads the same parts before anyone writes
    ranks.barrier()
    run = 0
    if ranks.rank == 0:
        manifest = results.read_manifest(out)
        runs = manifest.get("runs", [])
        run = len(runs)
        for r in runs:  # killed outright (SIGKILL, out of memory), they could not say so themselves
            if r.get("status") == "running" and results.run_status(r) == "stopped":
                r.update(status="stopped", reason=f"killed or crashed (found by run {run})")
        prep = model.preprocessing
        manifest.update({
            "tool": "saliency_core.batch",
            "config": opts.config(),
            "model": {"name": model.name, "title": model.spec.title, "weights": model.spec.weights,
                      "preprocessing": prep.describe(), "resize": prep.resize, "crop": prep.crop,
                      "mean": list(prep.mean), "std": list(prep.std), "interpolation": prep.interpolation},
            "dataset": {"root": discovery.root, "kind": discovery.kind, "images": len(discovery.items),
                        "labelled": sum(it.label is not None for it in discovery.items),
                        "ignored_files": len(discovery.ignored)},
            "definitions": {
                **map_specs.definitions(opts.specs, opts.reduction, _params_as_run(opts, model)),
                "target": "the true label where known, else the model's top-1 prediction (target_source)",
                "maps": "maps/<part>.npz: each map divided by its own max, float16; scale in <map>_max",
                **metric_specs.definitions(opts.metrics, opts.used_metric_params()),
                **({"object_share": "the share of the model's crop the object (box or mask) covers; NaN without one"}
                   if objects is not None else {}),
            },
            **({"objects": objects.summary} if objects is not None else {}),
            "versions": package_versions(),
        })
        runs.append({"run": run, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "command": shlex.join([sys.executable, "-m", "saliency_core.batch", *sys.argv[1:]]),
                     "user": _os_user(), "world_size": ranks.world, "device": str(model.device),
                     "already_done": len(done),
                     "status": "running", **results.this_process()})
        manifest["runs"] = runs
        results.write_manifest(out, manifest)
    return int(ranks.broadcast(run)), done


def _os_user() -> str | None:
    """Who ran the job: the operating-system account (the dashboard records its signed-in user instead)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a uid without a passwd entry (some containers) and no LOGNAME/USER
        return None


def _params_as_run(opts: Options, model: LoadedModel) -> dict[str, dict[str, object]]:
    """The methods' parameters with the model's defaults named (Grad-CAM's layer: ``Param.default_for``)."""
    params = opts.used_params()
    for method, values in params.items():
        for p in get_method(method).params:
            if p.default_for is not None and values.get(p.name) is None:
                params[method] = values = {**values, p.name: p.default_for(model)}
    return params


def run(opts: Options) -> dict:
    """Run the job on this rank; returns the summary (complete on rank 0)."""
    ranks, device = start_ranks(opts.device)
    try:
        return _run(opts, ranks, device)
    finally:
        if ranks.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _record_stop(out: str, run_id: int, exc: BaseException) -> None:
    """Mark the run "stopped" with the reason; never raises (the error that stopped it matters more)."""
    try:
        manifest = results.read_manifest(out)
        manifest["runs"][run_id].update(status="stopped", reason=stop_reason(exc), finished=datetime.now(
            timezone.utc).isoformat(timespec="seconds"))
        manifest["totals"] = results.row_counts(out)
        results.write_manifest(out, manifest)
    except Exception:  # results.run_status still finds its process gone
        pass


def _run(opts: Options, ranks: Ranks, device: torch.device) -> dict:
    discovery = discover(opts.images)
    objects = load_objects(opts.boxes, opts.masks, discovery)  # a bad CSV or mask file costs no model load
    fetch_weights_once(opts.model, ranks)
    model = load_model(opts.model, device, allow_download=False)  # every rank from the cache, filled just now
    check_maps_apply(model, opts)  # before the folder is touched: a wrong layer is the user's error
    check_metrics_apply(model, opts)
    run_id, done = _prepare_out(opts, ranks, discovery, model, objects)
    try:
        return _compute(opts, ranks, device, discovery, model, run_id, done, objects)
    except BaseException as exc:
        if ranks.rank == 0:
            _record_stop(opts.out, run_id, exc)
        raise


def _compute(opts: Options, ranks: Ranks, device: torch.device, discovery: Discovery, model: LoadedModel,
             run_id: int, done: set[str], objects: Objects | None = None) -> dict:
    pending = [it for it in discovery.items if it.key not in done]
    dataset = ImageDataset(discovery, pending, model.preprocessing, objects=objects)
    sampler = ShardSampler(len(pending), ranks.rank, ranks.world)
    workers = opts.workers if opts.workers is not None else default_workers(device, ranks.world)
    # "fork" on Linux, as Python before 3.14 does by default: die_with_job compares the worker's parent
    # with this process, which a forkserver would stand between.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=opts.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        prefetch_factor=4 if workers else None, persistent_workers=False,
        worker_init_fn=functools.partial(die_with_job, os.getpid()),
        multiprocessing_context="fork" if workers and sys.platform.startswith("linux") else None)
    progress = _Progress(len(sampler), ranks, opts.progress)
    rows: list[pd.DataFrame] = []
    errors: list[dict] = []
    maps: dict[str, list[np.ndarray]] = {}
    seq, buffered, counts = 0, 0, {"images": 0, "errors": 0}

    def flush() -> None:
        nonlocal seq, buffered
        if not buffered:
            return
        name = f"part-{run_id:03d}-r{ranks.rank:04d}-{seq:05d}"
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        shard = None
        if opts.save_maps and len(frame):
            shard = {"keys": frame["key"].to_numpy(dtype=str), **{m: np.concatenate(v) for m, v in maps.items()}}
            frame["maps_file"] = f"{name}.npz"
            frame["maps_index"] = np.arange(len(frame), dtype=np.int64)
        results.write_part(opts.out, name, frame, pd.DataFrame(errors, columns=list(results.ERROR_COLUMNS)), shard)
        rows.clear(), errors.clear(), maps.clear()
        seq, buffered = seq + 1, 0

    start = time.perf_counter()
    for records in loader:
        good = [r for r in records if r["error"] is None]
        for r in records:
            if r["error"] is not None:
                item = pending[r["index"]]
                errors.append({"key": item.key, "path": item_path(discovery, item), "error": r["error"],
                               "rank": ranks.rank, "run": run_id})
        if good:
            items = [pending[r["index"]] for r in good]
            x = normalize(np.stack([r["crop"] for r in good]), model.preprocessing, device)
            masks, share = (object_masks([r["mask"] for r in good], model.preprocessing.crop) if objects is not None
                            else (None, None))
            try:
                cols, batch_maps = batch_columns(model, x, [it.label for it in items], opts,
                                                 [r["sha256"] for r in good], masks)
            except ModelOutputError as exc:
                raise ModelOutputError(_on_images(exc, [item_path(discovery, it) for it in items])) from exc
            if share is not None:
                cols["object_share"] = share
            rows.append(rows_frame(items, good, cols, model, ranks, run_id, discovery))
            for m, v in batch_maps.items():
                maps.setdefault(m, []).append(v)
        counts["images"] += len(good)
        counts["errors"] += len(records) - len(good)
        buffered += len(records)
        progress.update(len(records))
        if buffered >= opts.part_size:
            flush()
    flush()
    progress.close()
    seconds = time.perf_counter() - start
    per_rank = ranks.gather({"rank": ranks.rank, "images": counts["images"], "errors": counts["errors"],
                             "seconds": seconds, "workers": workers, "device": str(device)})
    ranks.barrier()
    summary = {"run": run_id, "world_size": ranks.world, "skipped_as_done": len(done),
               "images": sum(p["images"] for p in per_rank), "errors": sum(p["errors"] for p in per_rank),
               "seconds": max(p["seconds"] for p in per_rank), "per_rank": per_rank}
    summary["images_per_s"] = summary["images"] / summary["seconds"] if summary["seconds"] > 0 else None
    if ranks.rank == 0:
        manifest = results.read_manifest(opts.out)
        manifest["runs"][run_id].update(status="complete", finished=datetime.now(timezone.utc).isoformat(
            timespec="seconds"), **{k: summary[k] for k in ("images", "errors", "seconds", "images_per_s")})
        manifest["totals"] = results.row_counts(opts.out)
        results.write_manifest(opts.out, manifest)
    return summary


def _on_images(exc: ModelOutputError, paths: list[str]) -> str:
    """``exc``'s message with the images it happened on, for a one-line error that says where to look.

    A model at fault stops the job (exit status 2, the run "stopped"): its
    output on these images says it can't be trusted on the others either,
    and the errors table is for files that could not be read. What is
    written stays; the same command finishes the job once the model is fixed.
    """
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return f"{exc} (in a batch of {len(paths)} image(s): {shown}; the results written so far are kept)"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Exit status 0, 2 for a user error, 128 + signal when stopped by SIGTERM or Ctrl-C."""
    opts = parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        summary = run(opts)
    except SaliencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Stopped, KeyboardInterrupt) as exc:
        print(f"stopped by {stop_reason(exc)}; run the same command again to finish: what is written is kept.",
              file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if int(os.environ.get("RANK", "0")) == 0:
        rate = summary["images_per_s"]
        print(f"{summary['images']} images and {summary['errors']} unreadable files in {summary['seconds']:.1f} s"
              f"{f' ({rate:.1f} images/s)' if rate else ''} on {summary['world_size']} rank(s); "
              f"{summary['skipped_as_done']} already done. Results in {opts.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
