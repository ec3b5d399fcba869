"""The batch job's ``--metrics`` options: names and their expansion, each metric's parameters with its caps, and
``--boxes`` / ``--masks``; every bad value is a usage error (one line, exit status 2) before the model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from saliency_core.core import limits
from saliency_core.evaluation.metrics import METRICS
from saliency_core.jobs import metric_specs
from saliency_core.jobs.imagefolder import write_sample_folder
from saliency_core.jobs.options import parse_args
from tests.test_batch_options import ADDRESS_SPACE, REPO, _limited, one_line_usage_error

BASE = ["--images", "data", "--out", "results/x"]


def test_metric_names_and_the_three_that_name_several():
    opts = parse_args([*BASE, "--metrics", "sparseness,road,sensitivity, road_morf"])
    assert opts.metrics == ("road_morf", "road_lerf", "max_sensitivity", "avg_sensitivity", "sparseness")
    assert metric_specs.parse_metrics("localisation") == ("pointing_game", "relevance_mass_accuracy",
                                                           "relevance_rank_accuracy")
    assert set(metric_specs.parse_metrics(",".join(m.name for m in METRICS))) == {m.name for m in METRICS}
    assert parse_args([*BASE, "--metrics", "road_lerf"]).metrics == ("road_lerf",)


def test_parameters_are_recorded_with_their_defaults_and_only_for_metrics_asked_for():
    opts = parse_args([*BASE, "--metrics", "road,sparseness,infidelity", "--road-steps", "4",
                       "--infidelity-perturbation", "square", "--infidelity-patch", "32"])
    config = opts.config()
    assert config["metrics"] == ["road_morf", "road_lerf", "infidelity", "sparseness"]
    assert config["metric_params"] == {
        "road": {"steps": 4, "noise": 0.01, "seed": 0},
        "infidelity": {"perturbation": "square", "samples": 50, "noise_std": 0.1, "patch": 32,
                       "baseline": "dataset_mean", "scaling": "optimal", "seed": 0}}
    plain = parse_args(BASE).config()
    assert "metrics" not in plain and "metric_params" not in plain  # older results folders still match


def _bad(*args: str) -> list[str]:
    return [*BASE, *args]


def _cap(owner: str, name: str) -> float:
    param = next(p for p in metric_specs.owners()[owner].params if p.name == name)
    return metric_specs.cap(name, param.maximum)


# Just past each end of every costly parameter's range, seeds, bad choices and names, and every mix-up.
BAD = [
    (_bad("--metrics", ""), "--metrics"),
    (_bad("--metrics", "road,gini"), "--metrics"),
    (_bad("--metrics", "sparseness", "--road-steps", "3"), "--road-steps"),
    (_bad("--metrics", "road", "--road-steps", "0"), "--road-steps"),
    (_bad("--metrics", "road", "--road-steps", str(int(_cap("road", "steps")) + 1)), "--road-steps"),
    (_bad("--metrics", "road", "--road-noise", "nan"), "--road-noise"),
    (_bad("--metrics", "road", "--road-seed", str(limits.MAX_SEED + 1)), "--road-seed"),
    (_bad("--metrics", "road", "--road-seed", "-1"), "--road-seed"),
    (_bad("--metrics", "sensitivity", "--sensitivity-samples", "1000000000"), "--sensitivity-samples"),
    (_bad("--metrics", "sensitivity", "--sensitivity-relative", "maybe"), "--sensitivity-relative"),
    (_bad("--metrics", "infidelity", "--infidelity-samples", str(int(_cap("infidelity", "samples")) + 1)),
     "--infidelity-samples"),
    (_bad("--metrics", "faithfulness_correlation", "--faithfulness-correlation-runs", "1"),
     "--faithfulness-correlation-runs"),
    (_bad("--metrics", "faithfulness_correlation", "--faithfulness-correlation-subset-size", "10001"),
     "--faithfulness-correlation-subset-size"),
    (_bad("--metrics", "pointing_game", "--pointing-game-tolerance", "51"), "--pointing-game-tolerance"),
    (_bad("--metrics", "pointing_game"), "--boxes"),
    (_bad("--metrics", "sparseness", "--masks", "m"), "--masks"),
    (_bad("--metrics", "localisation", "--masks", "m", "--boxes", "b.csv"), "--boxes"),
    (_bad("--metrics", "localisation", "--boxes", "/no/such/boxes.csv"), "--boxes"),
]


@pytest.mark.parametrize(("argv", "says"), BAD, ids=lambda a: " ".join(a[len(BASE):]) if isinstance(a, list) else "")
def test_every_bad_metric_option_is_a_one_line_usage_error(argv: list[str], says: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    line = one_line_usage_error(capsys.readouterr().err)
    assert says in line, line


def test_each_metric_cap_itself_is_accepted():
    opts = parse_args([*BASE, "--metrics", "road,sensitivity,pointing_game", "--road-steps",
                       str(int(_cap("road", "steps"))), "--road-seed", str(limits.MAX_SEED), "--sensitivity-samples",
                       str(int(_cap("sensitivity", "samples"))), "--boxes", str(REPO / "tests" / "conftest.py")])
    assert opts.metric_params_for("road")["steps"] == _cap("road", "steps")
    assert opts.metric_params_for("road")["seed"] == limits.MAX_SEED
    assert opts.config()["boxes"]["sha256"] and opts.config()["metric_params"]["pointing_game"] == {"tolerance": 0.0}


def test_every_costly_metric_parameter_has_a_cap():
    for metric in METRICS:
        for p in metric.params:
            if p.costly or p.name == "seed":
                assert metric_specs.cap(p.name, p.maximum) is not None, (metric.name, p.name)


def test_a_billion_sensitivity_samples_is_refused_as_a_command(tmp_path: Path):
    """As a real command under a 4 GB address-space limit: refused before torch allocates anything for it."""
    images = write_sample_folder(tmp_path / "images", 1, corrupt=0)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "saliency_core.batch", "--no-progress", "--images", str(images),
                           "--out", str(tmp_path / "out"), "--metrics", "sensitivity", "--sensitivity-samples",
                           "1000000000"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limited)
    assert ADDRESS_SPACE and proc.returncode == 2, proc.stderr[-3000:]
    assert "--sensitivity-samples must be at most" in one_line_usage_error(proc.stderr)
    assert not (tmp_path / "out").exists()
