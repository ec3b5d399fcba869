"""The old names still work for one release, each saying what to write instead.

``compute_saliency(methods=)``, ``compute_saliency_maps(method=)`` and
``cascading_randomization(methods=)`` named the objectives; the baseline
"zeros" meant two different images (black pixels for deletion/insertion where
the normalisation was known, 0 after normalisation for attribution): each old
use must give exactly the image it gave. The batch job's ``--methods`` is now
``--maps``, and a results folder whose manifest records the old names still
resumes. When the old names go, this file goes with them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saliency_core import attribute, compute_saliency, compute_saliency_maps
from saliency_core.core.baselines import make_baseline
from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.faithfulness import deletion_insertion
from saliency_core.evaluation.sanity import cascading_randomization
from saliency_core.jobs.batch import main
from saliency_core.jobs.options import parse_args, recorded_config
from saliency_core.jobs.results import MANIFEST, RESULTS, load_results, read_manifest

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
Y = [1, 3]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 5)).eval()


def normalised(net: torch.nn.Module) -> SimpleNamespace:
    """A LoadedModel-like model: the module and its normalisation (what "black" needs)."""
    return SimpleNamespace(model=net, preprocessing=SimpleNamespace(mean=MEAN, std=STD),
                           module_for=lambda precision: net)


def warned_here(record: pytest.WarningsRecorder) -> bool:
    """The warning names this file: the line a user has to change, not a line inside saliency_core."""
    return [w.filename for w in record if issubclass(w.category, DeprecationWarning)] == [__file__]


# --------------------------------------------------------------------------- keywords


def test_compute_saliency_methods_is_objectives(net):
    new = compute_saliency(net, X, Y, objectives=("loss",))
    with pytest.warns(DeprecationWarning, match=r"write compute_saliency\(objectives=\.\.\.\)") as record:
        old = compute_saliency(net, X, Y, methods=("loss",))
    assert warned_here(record)
    assert list(old.maps) == ["loss"] and torch.equal(old.maps["loss"], new.maps["loss"])
    with pytest.raises(InvalidInputError, match="objectives= only"):
        compute_saliency(net, X, Y, ("score",), methods=("loss",))


def test_compute_saliency_maps_method_is_objective(net):
    y = torch.tensor(Y)
    with pytest.warns(DeprecationWarning, match=r"write compute_saliency_maps\(objective=\.\.\.\)") as record:
        old = compute_saliency_maps(X, y, net, method="loss")
    assert warned_here(record)
    assert torch.equal(old, compute_saliency_maps(X, y, net, "loss"))
    assert torch.equal(compute_saliency_maps(X, y, net), compute_saliency(net, X, y, ("score",)).maps["score"])


def test_cascading_randomization_methods_is_objectives(net):
    new = cascading_randomization(net, X, Y, objectives=("score",), max_stages=2, seed=3)
    with pytest.warns(DeprecationWarning, match=r"write cascading_randomization\(objectives=\.\.\.\)") as record:
        old = cascading_randomization(net, X, Y, methods=("score",), max_stages=2, seed=3)
    assert warned_here(record)
    assert old.objectives == ("score",) and np.array_equal(old.maps["score"], new.maps["score"])


# --------------------------------------------------------------------------- the baseline "zeros"


@pytest.mark.filterwarnings("ignore:Integrated Gradients")  # its completeness gap at 4 steps
@pytest.mark.parametrize("method", ["gradient_x_input", "integrated_gradients"])
def test_attributions_zeros_is_the_dataset_mean_even_where_black_is_known(net, method):
    """Attribution's "zeros" was 0 after normalisation, also for a model whose black pixels are known."""
    params = {"steps": 4} if method == "integrated_gradients" else {}
    for model in (net, normalised(net)):
        new = attribute(model, X, Y, method, baseline="dataset_mean", **params)
        with pytest.warns(DeprecationWarning, match='write baseline="dataset_mean"') as record:
            old = attribute(model, X, Y, method, baseline="zeros", **params)
        assert warned_here(record)
        assert old.params == new.params and old.params["baseline"] == "dataset_mean"
        for objective in ("score", "loss"):
            assert torch.equal(old.attributions[objective], new.attributions[objective])
    black = attribute(normalised(net), X, Y, method, baseline="black", **params)
    assert not torch.equal(black.attributions["score"], new.attributions["score"])  # another image


def test_deletions_zeros_is_black_where_the_normalisation_is_known_else_the_dataset_mean(net):
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    for model, meant in ((normalised(net), "black"), (net, "dataset_mean")):
        new = deletion_insertion(model, X, Y, maps, 4, meant)
        with pytest.warns(DeprecationWarning, match=f'write baseline="{meant}"') as record:
            old = deletion_insertion(model, X, Y, maps, 4, "zeros")
        assert warned_here(record)
        assert old.baseline == meant
        np.testing.assert_array_equal(old.deletion, new.deletion)
        np.testing.assert_array_equal(old.insertion, new.insertion)
    with pytest.warns(DeprecationWarning):
        assert torch.equal(make_baseline(X, "zeros", mean=MEAN, std=STD), make_baseline(X, "black", mean=MEAN,
                                                                                         std=STD))
    with pytest.warns(DeprecationWarning):
        assert torch.equal(make_baseline(X, "zeros"), torch.zeros_like(X))


# --------------------------------------------------------------------------- the batch job


def test_methods_is_the_old_name_of_maps(capsys):
    opts = parse_args(["--images", "a", "--out", "b", "--methods", "loss,smoothgrad:score"])
    assert opts.maps == ("loss", "smoothgrad:score")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--methods is deprecated, use --maps" in err[0], err
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--images", "a", "--out", "b", "--methods", "loss", "--maps", "score"])
    assert exit_.value.code == 2 and "give --maps only" in capsys.readouterr().err


def test_an_old_baseline_value_on_the_command_line(capsys):
    opts = parse_args(["--images", "a", "--out", "b", "--maps", "integrated_gradients",
                       "--integrated-gradients-baseline", "zeros"])
    assert opts.params_for("integrated_gradients")["baseline"] == "dataset_mean"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--integrated-gradients-baseline zeros is deprecated, use dataset_mean" in err[0], err


def test_an_old_manifests_config_reads_as_todays():
    # The rule as the old job ran it by default (the adaptive rule is today's default): a fixed rule records
    # exactly what it did then, so the old folder reads as this command's.
    new = parse_args(["--images", "a", "--out", "b", "--maps", "gradient_x_input:score,integrated_gradients",
                      "--integrated-gradients-baseline", "dataset_mean", "--integrated-gradients-rule",
                      "trapezoid"]).config()
    old = {k: v for k, v in new.items() if k != "maps"} | {"methods": new["maps"], "method_params": {
        "gradient_x_input": {"baseline": "zeros"},
        "integrated_gradients": {"steps": 32, "baseline": "zeros", "rule": "trapezoid"}}}
    assert recorded_config(old) == new
    assert recorded_config(new) == new


def _old_form(config: dict) -> dict:
    """``config`` as the job wrote it before the rename: "methods", and "zeros" for 0 after normalisation."""
    old = {("methods" if k == "maps" else k): v for k, v in config.items()}
    old["method_params"] = {m: {k: "zeros" if v == "dataset_mean" else v for k, v in p.items()}
                            for m, p in config["method_params"].items()}
    return old


def test_a_folder_written_before_the_rename_loads_and_resumes(tmp_path: Path):
    images = tmp_path / "three.npz"
    np.savez(images, X=np.random.default_rng(5).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8),
             y=np.array([1, 2, 967]))
    out = tmp_path / "out"
    argv = ["--images", str(images), "--out", str(out), "--maps", "gradient_x_input:score,integrated_gradients:loss",
            "--integrated-gradients-steps", "2", "--integrated-gradients-baseline", "dataset_mean",
            "--part-size", "1", "--batch-size", "1", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    complete = load_results(out).results
    manifest = read_manifest(out)
    assert manifest["config"]["method_params"]["gradient_x_input"] == {"baseline": "dataset_mean"}
    # The folder as the job left it before the rename, stopped with one image to go.
    manifest["config"] = _old_form(manifest["config"])
    (out / MANIFEST).write_text(json.dumps(manifest))
    sorted((out / RESULTS).glob("part-*.parquet"))[-1].unlink()
    before = load_results(out)
    assert len(before.results) == 2 and before.maps == ["gradient_x_input_score", "integrated_gradients_loss"]

    assert main(argv) == 0  # the same options in today's names: not "other options"
    after = load_results(out)
    assert after.manifest["runs"][-1]["already_done"] == 2 and after.manifest["runs"][-1]["status"] == "complete"
    assert "maps" in after.manifest["config"] and "methods" not in after.manifest["config"]
    assert list(after.results["key"]) == list(complete["key"])
    np.testing.assert_allclose(after.results["integrated_gradients_loss_max"],
                               complete["integrated_gradients_loss_max"], rtol=1e-5)
