"""Hostile datasets on disk: named pipes, sockets and devices named like images, directory-link loops;
and telling a live batch run from a dead one.

Anything here that could hang (opening a FIFO blocks until a writer comes;
a walk through link loops never ends) runs in a subprocess with a timeout,
or under ``signal.alarm``, so that a regression fails instead of hanging
the suite.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saliency_core.errors import InvalidImageError
from saliency_core.inputs import image_bytes
from saliency_core.jobs import results
from tests import hostile

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, /dev and /proc as on Linux")


def jpeg(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def python(code: str, timeout: float) -> dict:
    """Run ``code`` in a fresh interpreter (it prints one JSON line last); fail, not hang, past ``timeout``."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s (hung)")
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- not regular files


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a socket, a folder and a character device (a link to /dev/zero), each named like an image."""
    root = tmp_path / "d"
    root.mkdir()
    os.mkfifo(root / "fifo.jpg")
    os.mkfifo(root / "fifo.npz")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.jpg"))
    (root / "folder.jpg").mkdir()
    os.symlink("/dev/zero", root / "zero.jpg")
    os.symlink(root / "fifo.jpg", root / "link_to_fifo.jpg")
    yield {p.name: p for p in root.iterdir()}
    sock.close()


EXPECTED = {"fifo.jpg": "named pipe", "fifo.npz": "named pipe", "socket.jpg": "socket", "folder.jpg": "folder",
            "zero.jpg": "character device", "link_to_fifo.jpg": "named pipe"}


def test_every_dataset_reader_refuses_what_is_not_a_regular_file(odd_files: dict[str, Path]):
    """read_item_bytes, load_image(path), the batch job's ImageDataset: each says what the file is.

    Before the fix, opening the FIFO blocked for good and /dev/zero was read until memory ran out: each
    call runs under a 10 s alarm, in a subprocess whose address space is capped 1 GB above its start.
    """
    paths = {name: str(p) for name, p in odd_files.items()}
    out = python(f"""
        import json, resource, signal
        from saliency_core.jobs.imagefolder import Discovery, ImageDataset, Item, read_item_bytes
        from saliency_core.inputs.images import load_image
        from saliency_core.models.registry import REGISTRY
        paths = {paths!r}
        vsz = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vsz + (1 << 30), resource.RLIM_INFINITY))

        class Hung(Exception):
            pass

        def alarm(*_):
            raise Hung()

        signal.signal(signal.SIGALRM, alarm)

        def outcome(call):
            signal.alarm(10)
            try:
                call()
                return "read"
            except Hung:
                return "hung"
            except BaseException as exc:
                return f"{{type(exc).__name__}}: {{exc}}"
            finally:
                signal.alarm(0)

        prep = REGISTRY["efficientnet_lite0"].preprocessing
        result = {{}}
        for name, path in paths.items():
            target = path + "#0" if name.endswith(".npz") else path
            root, rel = path.rsplit("/", 1)
            dataset = ImageDataset(Discovery(root, "folder", (), ()), [Item(rel, None, None)], prep)
            result[name] = {{
                "read_item_bytes": outcome(lambda: read_item_bytes(target)),
                "load_image": outcome(lambda: load_image(path)),
                "ImageDataset": outcome(lambda: (_ for _ in ()).throw(RuntimeError(dataset[0]["error"]))
                                        if dataset[0]["error"] else None),
            }}
        print(json.dumps(result))
        """, timeout=180)
    wrong = []
    for name, by_reader in out.items():
        if name.endswith(".npz"):
            by_reader.pop("load_image")  # an npz is not an image file for load_image anyway
            by_reader.pop("ImageDataset")
        wrong += [(name, reader, outcome[:120]) for reader, outcome in by_reader.items()
                  if EXPECTED[name] not in outcome or "not a regular file" not in outcome]
    assert not wrong


def test_a_file_swapped_for_a_fifo_after_the_stat_is_caught_on_the_open_descriptor(
        odd_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stat saw a regular file; by the open, a FIFO stands there. O_NONBLOCK keeps the open from
    blocking, and fstat on the descriptor tells what was opened."""
    regular = tmp_path / "regular.jpg"
    regular.write_bytes(jpeg(0))
    real_stat = os.stat
    monkeypatch.setattr(image_bytes.os, "stat", lambda p, *a, **k: real_stat(regular) if str(p).endswith(
        "fifo.jpg") else real_stat(p, *a, **k))

    def hung(*_):
        raise TimeoutError("the open blocked")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(InvalidImageError, match="named pipe"):
            image_bytes.read_regular_file(odd_files["fifo.jpg"], 1 << 20)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_read_regular_file_reads_files_and_links_to_them(tmp_path: Path):
    data = jpeg(1)
    (tmp_path / "a.jpg").write_bytes(data)
    os.symlink("a.jpg", tmp_path / "b.jpg")
    assert image_bytes.read_regular_file(tmp_path / "b.jpg", len(data)) == data
    with pytest.raises(InvalidImageError, match="limit"):
        image_bytes.read_regular_file(tmp_path / "a.jpg", len(data) - 1)
    with pytest.raises(FileNotFoundError):
        image_bytes.read_regular_file(tmp_path / "missing.jpg", 100)


def test_batch_job_lists_a_fifo_as_unreadable_instead_of_hanging(tmp_path: Path):
    """Two JPEGs and a FIFO named x.jpg: the job used to block opening the FIFO, with nothing written."""
    images = hostile.fifo_dataset(tmp_path / "images", [jpeg(1), jpeg(2)])
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "saliency_core.batch", "--no-progress", "--images", str(images), "--out", str(out),
           "--workers", "1"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the batch job hung on the FIFO (no exit in 240 s)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 images and 1 unreadable files" in proc.stderr, proc.stderr[-3000:]
    res = results.load_results(out)
    assert sorted(res.results["key"]) == ["n07920052/good_0.jpg", "n07920052/good_1.jpg"]
    assert list(res.errors["key"]) == ["n07920052/x.jpg"]
    assert "named pipe" in res.errors["error"].iloc[0]
    assert results.run_status(res.manifest["runs"][-1]) == "complete"


# --------------------------------------------------------------------------- directory links


IMAGES = {"n07920052/a.jpg": jpeg(1), "n07920052/b.jpg": jpeg(2), "281/c.jpg": jpeg(3), "d.jpg": jpeg(4)}


def discover_keys(root: Path, timeout: float = 120) -> list[str]:
    return python(f"""
        import json
        from saliency_core.jobs.imagefolder import discover
        found = discover({str(root)!r})
        print(json.dumps([[it.key, it.label] for it in found.items]))
        """, timeout=timeout)


def test_one_link_to_the_root_counts_every_image_once(tmp_path: Path):
    """`ln -s . DIR/loop` made each of 4 images count 41 times (164 rows)."""
    root = hostile.symlink_loops(tmp_path / "images", IMAGES, loops=1, up=False)
    found = discover_keys(root)
    assert len(found) == len(IMAGES) and sorted(key for key, _ in found) == sorted(IMAGES)
    assert dict(found)["n07920052/a.jpg"] == 967 and dict(found)["281/c.jpg"] == 281


def test_two_links_to_the_root_finish_quickly(tmp_path: Path):
    """Two such links visited 1.13 million folders in 45 s without finishing."""
    root = hostile.symlink_loops(tmp_path / "images", IMAGES, loops=2)
    assert sorted(key for key, _ in discover_keys(root, timeout=60)) == sorted(IMAGES)


def test_links_are_followed_once_and_real_names_win(tmp_path: Path):
    root = tmp_path / "images"
    for rel, data in IMAGES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    elsewhere = tmp_path / "elsewhere" / "n01440764"
    elsewhere.mkdir(parents=True)
    (elsewhere / "e.jpg").write_bytes(jpeg(5))
    os.symlink(root, elsewhere / "back_to_the_dataset")  # a loop through the outside folder
    os.symlink("n07920052", root / "aaa_alias")  # sorts before the real folder: the real name still wins
    os.symlink("../n07920052/a.jpg", root / "281" / "a_again.jpg")  # a file seen under its real name
    os.symlink("a.jpg", root / "n07920052" / "0_first.jpg")  # sorts first; a.jpg is still the one kept
    os.symlink(elsewhere, root / "n01440764")  # outside the tree: followed (once)
    os.symlink(elsewhere, root / "n01443537")  # the same outside folder again: not followed
    os.symlink(tmp_path / "elsewhere" / "n01440764" / "e.jpg", root / "e_link.jpg")  # reached above first
    os.link(root / "d.jpg", root / "281" / "hard.jpg")  # a hard link is a name of its own: kept
    assert dict(discover_keys(root, timeout=60)) == {
        "n07920052/a.jpg": 967, "n07920052/b.jpg": 967, "281/c.jpg": 281, "d.jpg": None, "281/hard.jpg": 281,
        "n01440764/e.jpg": 0}


def test_a_dangling_link_named_like_an_image_is_an_unreadable_item(tmp_path: Path):
    from saliency_core.jobs.imagefolder import discover

    root = tmp_path / "images"
    root.mkdir()
    os.symlink(tmp_path / "gone.jpg", root / "dangling.jpg")
    assert [it.key for it in discover(root).items] == ["dangling.jpg"]


# --------------------------------------------------------------------------- which runs are alive


def _start_time(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()[19]


def test_run_status_tells_a_live_run_from_a_dead_one():
    me = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
          "process_start": _start_time(os.getpid())}
    assert results.run_status(me) == "running"
    assert results.run_status({**me, "process_start": str(int(me["process_start"]) + 1)}) == "stopped"  # pid reused
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert results.run_status({**me, "pid": dead.pid, "process_start": None}) == "stopped"
    assert results.run_status({**me, "host": "another-machine"}) == "unknown"
    assert results.run_status({"status": "complete"}) == "complete"
    assert results.run_status({"status": "stopped", "reason": "SIGTERM"}) == "stopped"
    assert results.run_status({"status": "running"}) == "unknown"  # written before runs recorded their process
    assert results.run_status({}) == "unknown"


# --------------------------------------------------------------------------- saved maps named by the rows


def test_saved_maps_are_read_only_from_regular_files_in_the_maps_folder(tmp_path: Path):
    import pandas as pd

    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "maps").mkdir()
    rows = pd.DataFrame({"key": ["a.jpg", "b.jpg", "c.jpg"], "target": [1, 1, 1], "prediction": [1, 1, 1],
                         "score_max": [2.0, 2.0, 2.0], "maps_index": [0, 0, 0],
                         "maps_file": ["part-0.npz", "part-1.npz", "../outside.npz"]})
    rows.to_parquet(out / "results" / "part-000-r0000-00000.parquet", index=False)
    maps = {"keys": np.array(["a.jpg"]), "score": np.ones((1, 4, 4), np.float16)}
    np.savez(out / "maps" / "part-0.npz", **maps)
    np.savez(out / "outside.npz", **maps)
    os.mkfifo(out / "maps" / "part-1.npz")
    folder = results.load_results(out)
    np.testing.assert_array_equal(folder.saved_maps("a.jpg")["score"], np.full((4, 4), 2.0, np.float32))

    def hung(*_):
        raise TimeoutError("reading the maps blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        assert folder.saved_maps("b.jpg") is None  # a FIFO where the part should be
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert folder.saved_maps("c.jpg") is None  # a path out of the maps folder
