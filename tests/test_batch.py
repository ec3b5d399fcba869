"""The batch job: one process, torchrun with two gloo ranks, a killed and restarted run.

The dataset is ``write_sample_folder``: 12 JPEGs of the sample photos in
WordNet-id, class-index and root folders, one truncated JPEG and a README.
Every number the job writes is checked against ``saliency_core.analyse``
and ``saliency_core.evaluation.stats`` computed here, image by image.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import agreement, stats
from saliency_core.evaluation.analysis import analyse
from saliency_core.inputs.images import load_image
from saliency_core.jobs.batch import main, parse_args
from saliency_core.jobs.dataset_view import most_disagreeing, numeric_columns, per_class
from saliency_core.jobs.imagefolder import ShardSampler, discover, label_of_folder, read_item_bytes, write_sample_folder
from saliency_core.jobs.results import (
    done_keys,
    load_parquet_bytes,
    load_results,
    read_manifest,
    run_status,
    this_process,
)

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 12
# Batches of different sizes and thread counts change float32 rounding a little.
RTOL, ATOL = 1e-4, 1e-7
ID_COLUMNS = ["key", "path", "sha256", "width", "height", "label", "label_source", "label_name", "label_wnid",
              "target", "target_source", "target_name", "prediction", "prediction_name", "correct", "model"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def run_job(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saliency_core.batch", "--no-progress", *args], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600, check=check)


def run_torchrun(nproc: int, *args: str, script: Path | None = None) -> subprocess.CompletedProcess:
    """The job under torchrun; ``script``: a file that runs it instead of ``-m saliency_core.batch``."""
    program = [str(script)] if script else ["-m", "saliency_core.batch"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *program, "--no-progress", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_folder(tmp_path_factory.mktemp("data") / "images", N_IMAGES)


@pytest.fixture(scope="module")
def single(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, two DataLoader workers, maps saved."""
    out = tmp_path_factory.mktemp("single") / "out"
    proc = run_job("--images", str(dataset), "--out", str(out), "--batch-size", "5", "--workers", "2",
                   "--save-maps", "--part-size", "5")
    assert "12 images and 1 unreadable files" in proc.stderr, proc.stderr
    return out


def assert_same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a["key"]) == list(b["key"])
    pd.testing.assert_frame_equal(a[ID_COLUMNS].reset_index(drop=True), b[ID_COLUMNS].reset_index(drop=True))
    for col in numeric_columns(a):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=RTOL, atol=ATOL, err_msg=col)


# --------------------------------------------------------------------------- discovery


def test_discovery_reads_labels_from_wnid_and_index_folders(dataset: Path):
    found = discover(dataset)
    assert found.kind == "folder" and found.ignored == ("README.txt",)
    assert len(found.items) == N_IMAGES + 1  # the truncated JPEG is listed; reading it fails later
    by_key = {it.key: it for it in found.items}
    assert by_key["n07920052/coffee_000.jpg"].label == 967 and by_key["n07920052/coffee_000.jpg"].label_source == "wnid"
    assert by_key["281/chelsea_001.jpg"].label == 281 and by_key["281/chelsea_001.jpg"].label_source == "index"
    assert by_key["rocket_002.jpg"].label is None
    assert [it.key for it in found.items] == sorted(by_key)


def test_folder_names():
    assert label_of_folder("n01440764") == (0, "wnid")
    assert label_of_folder("n15075141") == (999, "wnid")
    assert label_of_folder("n99999999") == (None, None)  # looks like a wnid, is not an ImageNet-1k class
    assert label_of_folder("999") == (999, "index")
    assert label_of_folder("1000") == (None, None)
    assert label_of_folder("cats") == (None, None)


def test_discover_refuses_a_missing_path(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="neither a folder"):
        discover(tmp_path / "nope")


@pytest.mark.parametrize("n", [0, 1, 7, 12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_sampler_gives_every_item_to_exactly_one_rank(n: int, world: int):
    shares = [list(ShardSampler(n, r, world)) for r in range(world)]
    flat = sorted(i for share in shares for i in share)
    assert flat == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_options_are_checked():
    assert parse_args(["--images", "a", "--out", "b", "--maps", "loss"]).maps == ("loss",)
    for bad in (["--maps", "score,grad"], ["--batch-size", "0"], ["--maps", ""]):
        with pytest.raises(SystemExit):
            parse_args(["--images", "a", "--out", "b", *bad])


# --------------------------------------------------------------------------- one process


def test_every_readable_image_once_and_the_corrupt_one_in_errors(single: Path, dataset: Path):
    res = load_results(single)
    assert len(res.results) == N_IMAGES and res.results["key"].is_unique
    assert list(res.errors["key"]) == ["n07920052/broken_0.jpg"]
    assert "truncated" in res.errors["error"].iloc[0]
    assert done_keys(single) == set(res.results["key"]) | {"n07920052/broken_0.jpg"}
    m = res.manifest
    assert m["model"]["name"] == "efficientnet_lite0" and "mean=[0.5, 0.5, 0.5]" in m["model"]["preprocessing"]
    assert m["dataset"] == {"root": str(dataset.resolve()), "kind": "folder", "images": N_IMAGES + 1,
                            "labelled": N_IMAGES, "ignored_files": 1}
    assert m["runs"][-1]["status"] == "complete" and m["totals"] == {"images": N_IMAGES, "errors": 1}
    assert "torch" in m["versions"] and "saliency_core.batch" in m["runs"][-1]["command"]
    assert m["runs"][-1]["user"] == getpass.getuser()  # who computed it


def test_numbers_equal_saliency_core_image_by_image(single: Path, lite0):
    res = load_results(single)
    rows = res.results
    labels = [None if pd.isna(v) else int(v) for v in rows["label"]]
    images = [load_image(p) for p in rows["path"]]
    ref = analyse(lite0, images, [None] * len(images), labels)
    for i, a in enumerate(ref):
        row = rows.iloc[i]
        assert row["target"] == a.target and row["prediction"] == a.prediction
        assert row["target_source"] == ("prediction" if labels[i] is None else "label")
        assert row["sha256"] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        expected = {"prob_target": a.target_prob, "loss": -np.log(a.target_prob)}
        for m in ("score", "loss"):
            expected |= {f"{m}_{k}": v for k, v in stats.summarize(a.maps[m]).items()}
        expected |= {f"agree_{k}": v for k, v in agreement.agreement(a.maps["score"], a.maps["loss"]).items()}
        for col, value in expected.items():
            np.testing.assert_allclose(row[col], value, rtol=RTOL, atol=ATOL, err_msg=f"{row['key']} {col}")
        saved = res.saved_maps(row["key"])
        for m in ("score", "loss"):  # float16 of map / max: 3 significant digits
            np.testing.assert_allclose(saved[m], a.maps[m], rtol=2e-3, atol=a.maps[m].max() * 1e-3)
    assert rows.loc[rows["label"].isna(), "correct"].isna().all()
    known = rows[rows["label"].notna()]
    assert (known["correct"] == (known["label"] == known["prediction"])).all()


def test_a_second_run_skips_everything(single: Path, dataset: Path):
    before = load_results(single).results
    proc = run_job("--images", str(dataset), "--out", str(single), "--batch-size", "5", "--save-maps",
                   "--part-size", "5")
    assert "0 images and 0 unreadable files" in proc.stderr and "13 already done" in proc.stderr
    assert_same_results(load_results(single).results, before)


def test_other_options_on_the_same_folder_are_refused(single: Path, dataset: Path):
    proc = run_job("--images", str(dataset), "--out", str(single), "--reduction", "l2", check=False)
    assert proc.returncode == 2 and "other options" in proc.stderr and "reduction" in proc.stderr


# --------------------------------------------------------------------------- torchrun and restarts


@pytest.mark.slow  # real processes: torchrun, kills
def test_torchrun_two_ranks_equals_one_process(single: Path, dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = run_torchrun(2, "--images", str(dataset), "--out", str(out), "--batch-size", "3", "--workers", "1",
                        "--save-maps")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = load_results(out)
    assert res.results["key"].is_unique and len(res.results) == N_IMAGES
    assert set(res.results["rank"]) == {0, 1}
    assert list(res.errors["key"]) == ["n07920052/broken_0.jpg"]
    assert_same_results(res.results, load_results(single).results)
    assert res.manifest["runs"][-1]["world_size"] == 2


# Runs the job with the sha256 check of downloads off: the test serves random weights, not torchvision's file.
_UNCHECKED_DOWNLOADS = """
import runpy
from saliency_core.models import weights_download as downloads
downloads.sha256_prefix = lambda name: None
runpy.run_module("saliency_core.batch", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow  # two torchrun jobs
@pytest.mark.parametrize("served", [True, False], ids=["served", "missing"])
def test_torchrun_ranks_fetch_the_weights_once(served: bool, tmp_path: Path, monkeypatch):
    from tests.test_downloads import random_checkpoint, serve_weights

    name = "squeezenet1_1-b8a52dc0.pth"
    images = tmp_path / "images.npz"
    np.savez(images, X=np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8), y=np.array([0, 1]))
    script = tmp_path / "job.py"
    script.write_text(_UNCHECKED_DOWNLOADS)
    # Slow to answer, so that every rank would ask while rank 0 waits for its answer.
    with serve_weights(files={name: random_checkpoint()} if served else {}, delay_s=2.0) as server:
        monkeypatch.setenv("SALIENCY_WEIGHTS_URL", server.url)
        monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "1")
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        proc = run_torchrun(2, "--images", str(images), "--out", str(tmp_path / "out"), "--model", "squeezenet1_1",
                            "--device", "cpu", "--workers", "0", script=script)
    assert server.requests == [f"/models/{name}"], proc.stderr[-3000:]  # once, by rank 0
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    if served:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(load_results(tmp_path / "out").results) == 2
        assert sorted(os.listdir(checkpoints)) == [name]
    else:  # every rank says why and ends; none waits for the other
        assert proc.returncode != 0
        assert proc.stderr.count("error: SqueezeNet 1.1 (the cs231n model): downloading") == 2, proc.stderr[-3000:]
        assert "HTTP 404" in proc.stderr and os.listdir(checkpoints) == []


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of a process from ``/proc/<pid>/stat``; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return fields[0], int(fields[1]), fields[19]


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` now, each with its start time (so that a reused pid is not taken for it)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[1], []).append((int(entry.name), st[2]))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            found[child] = start
            todo.append(child)
    return found


def _running(pid: int, start: str) -> bool:
    """Whether that process still runs; a zombie counts as gone (its parent is dead, init reaps it)."""
    st = _stat(pid)
    return st is not None and st[2] == start and st[0] != "Z"


def _survivors(tree: dict[int, str], within_s: float) -> list[int]:
    """The processes of ``tree`` still running after waiting up to ``within_s`` for them to end."""
    deadline = time.monotonic() + within_s
    while (left := [pid for pid, start in tree.items() if _running(pid, start)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _end_job(proc: subprocess.Popen, tree: dict[int, str]) -> None:
    """Kill the job and every process recorded of it (and any it started since), whatever state it is in."""
    if proc.poll() is None:
        tree = tree | _descendants(proc.pid)
        proc.kill()
        proc.wait(timeout=60)
    for pid, start in tree.items():
        if _running(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # real processes: torchrun, kills
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_killed_run_leaves_no_process_and_restarts_without_duplicates(single: Path, dataset: Path,
                                                                      tmp_path: Path):
    """SIGKILL a run mid-job: none of its processes may outlive it, and a restart finishes the rest.

    13 files in batches of 2 are 7 batches; one worker prefetches 4 of them ahead, so when the first
    part appears the worker is mid-prefetch. Each batch (two 224x224 crops, about 300 kB) is larger
    than a pipe holds, so its queue is full while the job computes: the case where a worker of an
    unfixed job lived on for good, blocked writing to a pipe nobody reads.
    """
    out = tmp_path / "out"
    log = tmp_path / "job.log"
    args = [sys.executable, "-m", "saliency_core.batch", "--no-progress", "--images", str(dataset), "--out",
            str(out), "--batch-size", "2", "--part-size", "2", "--workers", "1"]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    tree: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while not list((out / "results").glob("part-*.parquet")):
            assert proc.poll() is None, f"the job ended before its first part: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the job wrote no part in 300 s"
            time.sleep(0.05)
        tree = _descendants(proc.pid)
        proc.kill()
        proc.wait(timeout=60)
        assert tree, "the job had no DataLoader worker when it was killed"
        left = _survivors(tree, within_s=10)
        assert not left, f"processes of the killed job still run 10 s later: {left}"
    finally:  # whatever failed above, leave nothing of this job running
        _end_job(proc, tree)
    done = done_keys(out)
    assert 0 < len(done) < N_IMAGES + 1, "the job was not stopped midway"
    killed = load_results(out).manifest["runs"][0]
    assert killed["status"] == "running" and killed["pid"] == proc.pid  # all it could write
    assert run_status(killed) == "stopped"  # its process is gone

    again = run_job("--images", str(dataset), "--out", str(out), "--batch-size", "2", "--part-size", "2")
    assert f"{len(done)} already done" in again.stderr
    res = load_results(out)
    assert res.results["key"].is_unique and len(res.results) == N_IMAGES and len(res.errors) == 1
    assert_same_results(res.results, load_results(single).results)
    runs = res.manifest["runs"]
    assert [r["status"] for r in runs] == ["stopped", "complete"]  # the restart marked the killed run
    assert runs[0]["reason"] == "killed or crashed (found by run 1)"


def _start_job(out: Path, dataset: Path, log: Path) -> subprocess.Popen:
    """The job in batches of 2, one worker, started and waited for until its first part is written."""
    args = [sys.executable, "-m", "saliency_core.batch", "--no-progress", "--images", str(dataset), "--out",
            str(out), "--batch-size", "2", "--part-size", "2", "--workers", "1"]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 300
    try:
        while not list((out / "results").glob("part-*.parquet")):
            assert proc.poll() is None, f"the job ended before its first part: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the job wrote no part in 300 s"
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait(timeout=60)
        raise
    return proc


@pytest.mark.slow  # real processes: torchrun, kills
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_sigterm_records_a_stopped_run_and_ends_every_process(dataset: Path, tmp_path: Path):
    out, log = tmp_path / "out", tmp_path / "job.log"
    proc = _start_job(out, dataset, log)
    tree = _descendants(proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        left = _survivors(tree, within_s=10)
        assert not left, f"processes of the stopped job still run 10 s later: {left}"
    finally:
        _end_job(proc, tree)
    assert "stopped by SIGTERM" in log.read_text()
    run = load_results(out).manifest["runs"][0]
    assert run["status"] == "stopped" and run["reason"] == "SIGTERM" and run_status(run) == "stopped"


def _tiny_npz(path: Path) -> Path:
    np.savez(path, X=np.random.default_rng(4).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8),
             y=np.array([1, 967]))
    return path


@pytest.mark.parametrize("error, reason", [(KeyboardInterrupt(), "SIGINT (Ctrl-C)"),
                                           (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory")])
def test_an_interrupted_or_failed_run_records_why_it_stopped(error: BaseException, reason: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    from saliency_core.jobs import batch

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(batch, "batch_columns", fail)
    argv = ["--images", str(_tiny_npz(tmp_path / "two.npz")), "--out", str(tmp_path / "out"), "--workers", "0",
            "--no-progress"]
    if isinstance(error, KeyboardInterrupt):
        assert main(argv) == 128 + signal.SIGINT
    else:
        with pytest.raises(RuntimeError):
            main(argv)
    run = read_manifest(tmp_path / "out")["runs"][0]
    assert run["status"] == "stopped" and run["reason"] == reason and run_status(run) == "stopped"


def test_a_second_run_on_a_folder_a_live_run_writes_is_refused(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    live = {"run": 0, "started": "2026-01-01T00:00:00+00:00", "status": "running", **this_process()}
    (out / "manifest.json").write_text(json.dumps({"runs": [live]}))
    assert run_status(live) == "running"  # this very process
    argv = ["--images", str(_tiny_npz(tmp_path / "two.npz")), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(argv) == 2
    assert json.loads((out / "manifest.json").read_text())["runs"] == [live]  # nothing written


# --------------------------------------------------------------------------- npz input, reading results


def test_npz_input(tmp_path: Path, lite0):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(3, 40, 50, 3), dtype=np.uint8)
    y = np.array([1, 2, 967])
    path = tmp_path / "batch.npz"
    np.savez(path, X=X, y=y)
    assert main(["--images", str(path), "--out", str(tmp_path / "out"), "--workers", "0", "--no-progress"]) == 0
    rows = load_results(tmp_path / "out").results
    assert list(rows["key"]) == ["batch.npz#0", "batch.npz#1", "batch.npz#2"]
    assert list(rows["label"]) == [1, 2, 967] and set(rows["label_source"]) == {"npz"}
    ref = analyse(lite0, [load_image(read_item_bytes(p)) for p in rows["path"]], [None] * 3, [1, 2, 967])
    np.testing.assert_allclose(rows["score_max"], [a.maps["score"].max() for a in ref], rtol=RTOL)


def test_uploaded_parquet_and_tables(single: Path):
    part = sorted((single / "results").glob("part-*.parquet"))[0]
    res = load_parquet_bytes(part.read_bytes())
    assert len(res.results) == 5 and res.root is None and res.saved_maps(res.results["key"][0]) is None
    with pytest.raises(InvalidInputError, match="not a Parquet"):
        load_parquet_bytes(b"PK\x03\x04 nope")
    buf = io.BytesIO()
    pd.DataFrame({"a": [1]}).to_parquet(buf)
    with pytest.raises(InvalidInputError, match="not written by the batch job"):
        load_parquet_bytes(buf.getvalue())

    rows = load_results(single).results
    table = per_class(rows)
    assert table["images"].sum() == N_IMAGES and table["target"].is_unique
    coffee = table.set_index("target").loc[967]
    assert coffee["images"] == 3 and coffee["accuracy"] == rows.loc[rows["target"] == 967, "correct"].mean()
    worst = most_disagreeing(rows, 4)
    assert list(worst["agree_spearman"]) == sorted(rows["agree_spearman"])[:4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_job_equals_cpu_job(single: Path, dataset: Path, tmp_path: Path):
    proc = run_job("--images", str(dataset), "--out", str(tmp_path / "cuda"), "--device", "cuda",
                   "--batch-size", "5", check=False)
    assert proc.returncode == 0, proc.stderr
    a, b = load_results(tmp_path / "cuda").results, load_results(single).results
    assert list(a["key"]) == list(b["key"]) and (a["target"] == b["target"]).all()
    np.testing.assert_allclose(a["score_max"], b["score_max"], rtol=1e-2)


def test_faithfulness_columns_equal_deletion_insertion(tmp_path: Path, lite0):
    from saliency_core.core import gradients
    from saliency_core.evaluation import faithfulness

    rng = np.random.default_rng(1)
    path = tmp_path / "two.npz"
    np.savez(path, X=rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8), y=np.array([5, 967]))
    out = tmp_path / "out"
    assert main(["--images", str(path), "--out", str(out), "--workers", "0", "--no-progress", "--faithfulness",
                 "--faithfulness-steps", "4"]) == 0
    rows = load_results(out).results
    x = lite0.preprocess([load_image(read_item_bytes(p)) for p in rows["path"]]).x
    res = gradients.compute_saliency(lite0, x, [5, 967])
    for m in ("score", "loss"):
        ref = faithfulness.deletion_insertion(lite0, x, res.targets, res.maps[m], steps=4)
        np.testing.assert_allclose(rows[f"{m}_deletion_auc"], ref.deletion_auc, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rows[f"{m}_insertion_auc"], ref.insertion_auc, rtol=1e-4, atol=1e-6)
    rand = faithfulness.deletion_insertion(lite0, x, res.targets, None, steps=4, order="random")
    np.testing.assert_allclose(rows["random_deletion_auc"], rand.deletion_auc, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def l2_fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A one-image job with --reduction l2, --precision fast and --faithfulness: (out, the keyword
    arguments of every faithfulness.deletion_insertion call it made)."""
    from saliency_core.evaluation import faithfulness

    tmp = tmp_path_factory.mktemp("l2_fast")
    path = tmp / "one.npz"
    np.savez(path, X=np.random.default_rng(2).integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8),
             y=np.array([967]))
    calls: list[dict] = []
    real = faithfulness.deletion_insertion

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(faithfulness, "deletion_insertion", spy)
        assert main(["--images", str(path), "--out", str(tmp / "out"), "--workers", "0", "--no-progress",
                     "--maps", "score", "--reduction", "l2", "--precision", "fast", "--faithfulness",
                     "--faithfulness-steps", "2"]) == 0
    return tmp / "out", calls


def test_manifest_defines_the_maps_by_the_reduction_used(l2_fast_run: tuple[Path, list[dict]]):
    from saliency_core.figures.provenance import map_definitions

    definitions = load_results(l2_fast_run[0]).manifest["definitions"]
    assert definitions["score"] == map_definitions(("score",), "l2")["score"]
    assert "L2" in definitions["score"] and "max" not in definitions["score"]
    assert "loss" not in definitions  # only the maps this run made


def test_faithfulness_runs_in_the_precision_of_the_maps(l2_fast_run: tuple[Path, list[dict]]):
    out, calls = l2_fast_run
    assert [c.get("order", "map") for c in calls] == ["map", "random"]
    assert [c.get("precision") for c in calls] == ["fast", "fast"]
    assert load_results(out).results[["score_deletion_auc", "random_insertion_auc"]].notna().all().all()


@pytest.mark.slow  # real processes: torchrun, kills
def test_two_nodes_through_torchrun_rendezvous(single: Path, dataset: Path, tmp_path: Path):
    """Two torchrun launches that meet through c10d rendezvous, as two machines would."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test",
           "-m", "saliency_core.batch", "--no-progress", "--images", str(dataset), "--out", str(out),
           "--batch-size", "4"]
    nodes = [subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    res = load_results(out)
    assert res.results["key"].is_unique and len(res.results) == N_IMAGES and set(res.results["rank"]) == {0, 1}
    assert_same_results(res.results, load_results(single).results)
