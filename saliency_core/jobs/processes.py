"""The batch job's processes: its torchrun ranks, its DataLoader workers, and how it is stopped.

Used by :mod:`saliency_core.jobs.batch`. The model's weights are downloaded once for
all ranks (:func:`fetch_weights_once`); a worker dies with the job (:func:`die_with_job`);
SIGTERM becomes :class:`Stopped` in the job's main thread, so the run can record
that it stopped and why (:func:`stop_reason`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from saliency_core.errors import ModelUnavailableError, SaliencyError
from saliency_core.models.loading import download_weights, pick_device


@dataclass
class Ranks:
    """This process's place among the job's processes (one, without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list[object]:
        if not self.distributed:
            return [value]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def start_ranks(device: str) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group when launched by it; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", ranks.local_rank % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ranks.distributed and not dist.is_initialized():
        # NCCL between GPUs; gloo for CPU ranks (and for the small objects exchanged here).
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return ranks, dev


class DownloadLog:
    """Log lines on stderr while a model's weights download: the start, every 10 %, the end."""

    def __init__(self, model: str) -> None:
        self.model, self.shown = model, -1

    def __call__(self, done: int, total: int) -> None:
        tenth = done * 10 // total if total else 0
        if tenth > self.shown:
            self.shown = tenth
            size = f"{done / 1e6:.0f} of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB"
            print(f"downloading the weights of {self.model}: {size}", file=sys.stderr, flush=True)


def fetch_weights_once(model: str, ranks: Ranks) -> None:
    """Put ``model``'s weights into the checkpoint cache (if it has any to download) before any rank loads it.

    Rank 0 downloads while the other ranks wait; then the first rank of each
    other machine, for machines that don't share rank 0's checkpoint folder
    (where they do, the file is there and nothing is fetched). Without this,
    every rank fetched the same file at once. A rank that fails tells the
    others, and every rank raises its error (ModelUnavailableError), so none
    waits for one that gave up. Follows ``SALIENCY_ALLOW_DOWNLOAD``.
    """
    for fetches in (ranks.rank == 0, ranks.local_rank == 0 and ranks.rank != 0):
        problem = None
        if fetches:
            try:
                download_weights(model, DownloadLog(model))
            except SaliencyError as exc:
                problem = str(exc)
        problems = [p for p in ranks.gather(problem) if p]
        if problems:
            raise ModelUnavailableError(str(problems[0]))


def default_workers(device: torch.device, world: int) -> int:
    """DataLoader workers per rank when --workers is not given.

    On a GPU the CPU cores are free to decode: share them among the ranks
    (at most 8 each). On the CPU, torch's intra-op threads already use the
    cores for the model, and worker processes competing with them made the
    job slower on a 2-core machine (``benchmarks/RESULTS.md``), so only
    cores left over get workers.
    """
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return max(0, min(8, cores - torch.get_num_threads() * world) // max(1, world))
    return max(0, min(8, cores // max(1, world)))


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_job(job_pid: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: end this worker process as soon as the job process ``job_pid`` dies.

    Why: torch's worker notices a dead parent only between items, and then, on its way out, joins its
    queue's feeder thread, which is blocked for good writing a batch of crops into a full pipe that
    nobody reads (the worker holds the pipe's read end too, so the write never fails). A job killed
    with SIGKILL runs no clean-up, so its workers lived on. On Linux the kernel kills this worker when
    the thread that forked it (the one iterating the loader, for the whole loop) dies; elsewhere, or
    if prctl fails, a daemon thread polls the parent's pid.
    """
    del worker_id
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the job's handler (forked with it) is for the job's thread
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != job_pid:  # the job died between the fork and the prctl: no signal will come
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == job_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-job", daemon=True).start()


class Stopped(BaseException):
    """Raised in the job's main thread by SIGTERM (see :func:`main`), so that the run records that it stopped.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_stopped(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
    raise Stopped(signum)


def stop_reason(exc: BaseException) -> str:
    if isinstance(exc, Stopped):
        return signal.Signals(exc.signum).name
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT (Ctrl-C)"
    return f"{type(exc).__name__}: {exc}"[:500]
