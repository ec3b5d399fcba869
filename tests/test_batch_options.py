"""The batch job's command line: a bad option is a usage error (one line, exit status 2), never a traceback,
a run in the wrong folder or gigabytes of memory.

The four cases of the security issue run as real commands, under a 4 GB address-space limit so that an
unchecked one fails fast instead of taking the machine (``--faithfulness-steps 100000000`` grew to 20.6 GB,
``--smoothgrad-samples 1000000000`` asked for 64 GB). The rest are checked through :func:`parse_args`.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from saliency_core.core import limits
from saliency_core.jobs.imagefolder import write_sample_folder
from saliency_core.jobs.options import parse_args
from saliency_core.methods.registry import ATTRIBUTION_METHODS

REPO = Path(__file__).resolve().parents[1]
ADDRESS_SPACE = 4 << 30  # torch, the model and one small batch fit; the issue's allocations do not
UNWRITABLE = "/sys/saliency-dashboard-test/out"  # sysfs refuses mkdir, to root too


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_folder(tmp_path_factory.mktemp("data") / "images", 2, corrupt=0)


def one_line_usage_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    assert "error" in lines[0] and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.parametrize(("args", "says"), [
    (["--out", ""], "--out is empty"),
    (["--out", UNWRITABLE], UNWRITABLE),
    (["--maps", "smoothgrad", "--smoothgrad-samples", "1000000000"], "--smoothgrad-samples must be at most 256"),
    (["--faithfulness", "--faithfulness-steps", "100000000"], "--faithfulness-steps must be from 1 to 50"),
], ids=["empty-out", "unwritable-out", "smoothgrad-samples", "faithfulness-steps"])
def test_the_issue_s_commands_are_one_line_usage_errors(args: list[str], says: str, images: Path, tmp_path: Path):
    """Run from an empty folder: an empty --out wrote the results there and exited 0."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-m", "saliency_core.batch", "--no-progress", "--images", str(images),
                           *out, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          preexec_fn=_limited)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert says in one_line_usage_error(proc.stderr)
    assert not any(cwd.iterdir()) and not (tmp_path / "out").exists()  # nothing written anywhere


BASE = ["--images", "data", "--out", "results/x"]


def _bad(option: str, value: str, maps: str | None = None) -> list[str]:
    return [*BASE, *(["--maps", maps] if maps else []), option, value]


# Every numeric option of the job, just past each end of its range, and values that are no number at all.
BAD = [
    *(_bad("--batch-size", v) for v in ("0", str(limits.MAX_BATCH_SIZE + 1), "1e9")),
    *(_bad("--workers", v) for v in ("-1", str(limits.MAX_WORKERS + 1))),
    *(_bad("--faithfulness-steps", v) for v in ("0", str(limits.MAX_FAITHFULNESS_STEPS + 1))),
    *(_bad("--part-size", v) for v in ("0", str(limits.MAX_PART_SIZE + 1))),
    *(_bad("--smoothgrad-samples", v, "smoothgrad") for v in ("0", "257", "1e9")),
    *(_bad("--smoothgrad-noise", v, "smoothgrad") for v in ("-0.1", "1.5", "nan", "inf", "1e308")),
    *(_bad("--smoothgrad-seed", v, "smoothgrad") for v in ("-1", str(2**31))),
    *(_bad("--integrated-gradients-steps", v, "integrated_gradients") for v in ("1", "257")),
]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a[len(BASE):]))
def test_every_numeric_option_out_of_range_is_a_one_line_usage_error(argv: list[str], capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    line = one_line_usage_error(capsys.readouterr().err)
    assert argv[-2] in line, line  # names the option


def test_each_cap_itself_is_accepted():
    opts = parse_args([*BASE, "--batch-size", str(limits.MAX_BATCH_SIZE), "--workers", str(limits.MAX_WORKERS),
                       "--faithfulness", "--faithfulness-steps", str(limits.MAX_FAITHFULNESS_STEPS),
                       "--part-size", str(limits.MAX_PART_SIZE), "--maps", "smoothgrad,integrated_gradients",
                       "--smoothgrad-samples", "256", "--smoothgrad-noise", "1", "--smoothgrad-seed", str(2**31 - 1),
                       "--integrated-gradients-steps", "256"])
    assert opts.params_for("smoothgrad") == {"samples": 256, "noise": 1.0, "seed": 2**31 - 1}
    assert opts.params_for("integrated_gradients")["steps"] == 256
    assert (opts.batch_size, opts.workers, opts.faithfulness_steps, opts.part_size) == (
        limits.MAX_BATCH_SIZE, limits.MAX_WORKERS, limits.MAX_FAITHFULNESS_STEPS, limits.MAX_PART_SIZE)
    assert parse_args([*BASE, "--workers", "0"]).workers == 0


def test_the_job_and_the_dashboard_read_the_same_caps():
    """One cap per parameter (``Param.maximum``, declared by its method): the dashboard's number inputs stop where
    the job's options do."""
    from pages.ui import method_params

    numbers = [(m, p) for m in ATTRIBUTION_METHODS.values() for p in m.params if p.kind in (int, float)]
    assert numbers
    for method, p in numbers:
        assert method_params.upper_bound(p) == p.maximum is not None, (method.name, p.name)
        assert math.isfinite(p.maximum)
    faithfulness_page = (REPO / "pages" / "faithfulness.py").read_text()
    assert 'slider("Steps", 5, limits.MAX_FAITHFULNESS_STEPS' in faithfulness_page


@pytest.mark.parametrize("case", ["empty", "blank", "file", "under-a-file", "images-empty"])
def test_out_and_images_must_name_a_folder_the_job_can_use(case: str, tmp_path: Path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    argv = {"empty": ["--images", "data", "--out", ""],
            "blank": ["--images", "data", "--out", "  "],
            "file": ["--images", "data", "--out", str(a_file)],
            "under-a-file": ["--images", "data", "--out", str(a_file / "results")],
            "images-empty": ["--images", "", "--out", str(tmp_path / "out")]}[case]
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    line = one_line_usage_error(capsys.readouterr().err)
    assert ("--images" if case == "images-empty" else "--out") in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder (the /sys case covers root)")
def test_a_folder_this_user_may_not_write_in_is_a_usage_error(tmp_path: Path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(SystemExit) as exit_:
            parse_args(["--images", "data", "--out", str(locked / "out")])
    finally:
        locked.chmod(0o700)
    assert exit_.value.code == 2
    assert "may not write" in one_line_usage_error(capsys.readouterr().err)
