"""The batch job with method × objective pairs (``--maps gradient:score,smoothgrad:loss,...``).

Every number of a three-pair run is checked against ``saliency_core.attribute``
and ``saliency_core.evaluation.stats`` computed here, image by image; the options and
their defaults are recorded, a restart with other parameters is refused, and
two torchrun ranks give the same table as one process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import agreement, faithfulness, stats
from saliency_core.inputs.preprocessing import normalize
from saliency_core.jobs.batch import parse_args
from saliency_core.jobs.imagefolder import ImageDataset, discover, write_sample_folder
from saliency_core.jobs.map_specs import split_map_column
from saliency_core.jobs.results import load_results
from saliency_core.methods.registry import attribute
from tests.test_batch import RTOL, assert_same_results, run_job, run_torchrun

N_IMAGES = 5
ENTRIES = "gradient:score,smoothgrad:loss,integrated_gradients:score"  # --maps
PARAMS = ("--smoothgrad-samples", "3", "--smoothgrad-seed", "7", "--integrated-gradients-steps", "4")
MAPS = ("gradient_score", "smoothgrad_loss", "integrated_gradients_score")
VALUE_STATISTICS = ("min", "max", "mean", "std", "median", "p90", "p99")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_folder(tmp_path_factory.mktemp("data") / "images", N_IMAGES)


@pytest.fixture(scope="module")
def pairs_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "out"
    proc = run_job("--images", str(images), "--out", str(out), "--maps", ENTRIES, *PARAMS, "--batch-size", "3",
                   "--workers", "1", "--save-maps", "--part-size", "3", "--faithfulness", "--faithfulness-steps", "4")
    assert f"{N_IMAGES} images and 1 unreadable files" in proc.stderr, proc.stderr
    return out


def test_method_options_are_parsed_and_checked():
    opts = parse_args(["--images", "a", "--out", "b", "--maps", "grad_cam:loss,smoothgrad",
                       "--smoothgrad-noise", "0.3"])
    assert opts.maps == ("grad_cam:loss", "smoothgrad:score", "smoothgrad:loss")
    assert opts.config()["method_params"] == {"smoothgrad": {"samples": 25, "noise": 0.3, "seed": 0},
                                              "grad_cam": {"layer": None}}
    assert "method_params" not in parse_args(["--images", "a", "--out", "b"]).config()  # old folders still match
    for bad in (["--maps", "score", "--smoothgrad-samples", "4"],  # no smoothgrad map asked for
                ["--maps", "smoothgrad", "--smoothgrad-samples", "0"],
                ["--maps", "integrated_gradients", "--integrated-gradients-steps", "1"],
                ["--maps", "integrated_gradients", "--integrated-gradients-rule", "simpson"],
                ["--maps", "gradient:score,score"]):
        with pytest.raises(SystemExit):
            parse_args(["--images", "a", "--out", "b", *bad])


def _crops(images: Path, keys: list[str], prep) -> np.ndarray:
    discovery = discover(str(images))
    by_key = {it.key: it for it in discovery.items}
    dataset = ImageDataset(discovery, [by_key[k] for k in keys], prep)
    return np.stack([dataset[i]["crop"] for i in range(len(keys))])


def _tolerance(column: str, maps: dict[str, np.ndarray], i: int) -> float:
    name, stat = split_map_column(column)
    if name is not None and stat in VALUE_STATISTICS:
        return float(maps[name][i].max()) * 1e-4
    fraction = {agreement.fraction_key(f): f for f in agreement.DEFAULT_FRACTIONS}.get(column.rsplit("_", 2)[-2] + "_"
                                                                                 + column.rsplit("_", 1)[-1])
    if fraction is not None:
        return 2.0 / stats.top_count(fraction, maps[MAPS[0]][i].size)
    return 1e-4


def test_three_pairs_equal_attribute_image_by_image(pairs_run: Path, images: Path, lite0):
    res = load_results(pairs_run)
    rows = res.results
    assert len(rows) == N_IMAGES and res.maps == list(MAPS)
    x = normalize(_crops(images, list(rows["key"]), lite0.preprocessing), lite0.preprocessing, lite0.device)
    targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
    ref = {
        "gradient_score": attribute(lite0, x, targets, "gradient", ("score",)),
        "smoothgrad_loss": attribute(lite0, x, targets, "smoothgrad", ("loss",), samples=3, seed=7),
        "integrated_gradients_score": attribute(lite0, x, targets, "integrated_gradients", ("score",), steps=4),
    }  # 4 steps leave a large completeness gap (and a warning): the job must report the same gap
    maps = {name: r.maps[name.rsplit("_", 1)[1]].numpy() for name, r in ref.items()}
    np.testing.assert_allclose(rows["prob_target"], ref["gradient_score"].probs.gather(1, targets[:, None])[:, 0],
                               rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(rows["integrated_gradients_score_completeness_gap"],
                               ref["integrated_gradients_score"].convergence["score"], rtol=1e-3, atol=1e-5)
    # The adaptive rule's steps and whether it met its tolerance (at a cap of 4 it does not), as their types.
    assert rows["integrated_gradients_score_steps_used"].dtype == np.int64
    assert rows["integrated_gradients_score_converged"].dtype == bool
    np.testing.assert_array_equal(rows["integrated_gradients_score_steps_used"],
                                  ref["integrated_gradients_score"].steps_used.numpy())
    np.testing.assert_array_equal(rows["integrated_gradients_score_converged"],
                                  ref["integrated_gradients_score"].converged.numpy())
    for i in range(N_IMAGES):
        row = rows.iloc[i]
        expected = {}
        for name in MAPS:
            expected |= {f"{name}_{k}": v for k, v in stats.summarize(maps[name][i]).items()}
        for a, b in (("gradient_score", "smoothgrad_loss"), ("gradient_score", "integrated_gradients_score"),
                     ("smoothgrad_loss", "integrated_gradients_score")):
            expected |= {f"agree_{a}_vs_{b}_{k}": v for k, v in agreement.agreement(maps[a][i], maps[b][i]).items()}
        for col, value in expected.items():
            # SmoothGrad's and IG's maps are means of signed gradients whose float32 rounding depends on the rows
            # per pass (3 in the job, all here): values in the map's units are compared to the map's scale, a
            # top-k IoU to one pixel crossing the threshold, the other unitless numbers to 1e-4.
            np.testing.assert_allclose(row[col], value, rtol=RTOL, atol=_tolerance(col, maps, i),
                                       err_msg=f"{row['key']} {col}")
        saved = res.saved_maps(row["key"])
        for name in MAPS:  # float16 of map / max, and a few pixels where a ReLU6 kink flipped with the rounding
            np.testing.assert_allclose(saved[name], maps[name][i], rtol=2e-3, atol=maps[name][i].max() * 5e-3,
                                       err_msg=name)
    assert "agree_spearman" not in rows and "score_gini" not in rows  # the original names only for score,loss


def test_faithfulness_for_every_map_equals_deletion_insertion(pairs_run: Path, images: Path, lite0):
    rows = load_results(pairs_run).results.iloc[:2]
    x = normalize(_crops(images, list(rows["key"]), lite0.preprocessing), lite0.preprocessing, lite0.device)
    targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
    r = attribute(lite0, x, targets, "smoothgrad", ("loss",), samples=3, seed=7)
    f = faithfulness.deletion_insertion(lite0, x, targets, r.maps["loss"], steps=4)
    # The pixel order follows the map, whose near-ties move with float32 rounding (see above): AUCs to 1e-3.
    np.testing.assert_allclose(rows["smoothgrad_loss_deletion_auc"], f.deletion_auc, rtol=0, atol=1e-3)
    np.testing.assert_allclose(rows["smoothgrad_loss_insertion_auc"], f.insertion_auc, rtol=0, atol=1e-3)
    for name in MAPS:
        assert rows[f"{name}_insertion_auc"].notna().all()
    assert rows["random_deletion_auc"].notna().all()


def test_manifest_records_every_parameter_and_defines_each_map(pairs_run: Path):
    manifest = json.loads((pairs_run / "manifest.json").read_text())
    assert manifest["config"]["maps"] == ENTRIES.split(",")
    assert manifest["config"]["method_params"] == {
        "smoothgrad": {"samples": 3, "noise": 0.15, "seed": 7},
        "integrated_gradients": {"steps": 4, "baseline": "black", "rule": "adaptive", "tolerance": 0.05}}
    definitions = manifest["definitions"]
    assert "Smilkov" in definitions["smoothgrad_loss"] and "seed=7" in definitions["smoothgrad_loss"]
    assert "steps=4" in definitions["integrated_gradients_score"]


def test_a_restart_skips_what_is_done_and_other_parameters_are_refused(pairs_run: Path, images: Path):
    before = load_results(pairs_run).results
    again = run_job("--images", str(images), "--out", str(pairs_run), "--maps", ENTRIES, *PARAMS,
                    "--batch-size", "3", "--workers", "1", "--save-maps", "--part-size", "3", "--faithfulness",
                    "--faithfulness-steps", "4")
    assert "0 images and 0 unreadable files" in again.stderr and f"{N_IMAGES + 1} already done" in again.stderr
    assert_same_results(load_results(pairs_run).results, before)
    other = run_job("--images", str(images), "--out", str(pairs_run), "--maps", ENTRIES,
                    "--smoothgrad-samples", "4", "--integrated-gradients-steps", "4", "--save-maps",
                    "--faithfulness", "--faithfulness-steps", "4", check=False)
    assert other.returncode == 2 and "other options" in other.stderr and "method_params" in other.stderr


def test_a_layer_the_model_lacks_is_refused_before_the_folder_is_touched(images: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = run_job("--images", str(images), "--out", str(out), "--maps", "grad_cam:score",
                   "--grad-cam-layer", "no.such.layer", check=False)
    assert proc.returncode == 2 and "layer 'no.such.layer' is not a submodule" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_guided_backprop_without_relus_is_a_clear_error(lite0):
    # The embedded model uses ReLU6, a ReLU-family activation: guided backprop applies.
    r = attribute(lite0, torch.zeros(1, 3, 224, 224), [0], "guided_backprop", ("score",))
    assert r.maps["score"].shape == (1, 224, 224)
    with pytest.raises(InvalidInputError, match="ReLU"):
        attribute(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval(), torch.zeros(1, 3, 2, 2),
                  [0], "guided_backprop", ("score",))


@pytest.mark.slow  # real processes: torchrun
def test_torchrun_two_ranks_equal_one_process_for_pairs(pairs_run: Path, images: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = run_torchrun(2, "--images", str(images), "--out", str(out), "--maps", ENTRIES, *PARAMS,
                        "--batch-size", "2", "--workers", "1", "--save-maps", "--faithfulness",
                        "--faithfulness-steps", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = load_results(out).results, load_results(pairs_run).results
    assert set(two["rank"]) == {0, 1}
    assert_same_results(two, one)


# --------------------------------------------------------------------------- the perturbation methods

PERTURBATION_ENTRIES = "occlusion:score,rise:loss,kernel_shap:score,lime:loss"
PERTURBATION_OPTIONS = {  # every parameter of every perturbation method as an option, few passes each
    "occlusion": {"window": 112, "stride": 112, "baseline": "blur"},
    "rise": {"masks": 3, "grid": 3, "keep": 0.4, "seed": 2, "baseline": "dataset_mean"},
    "kernel_shap": {"samples": 3, "superpixels": "slic", "segments": 6, "compactness": 20.0, "kernel_size": 4.0,
                    "max_dist": 200.0, "seed": 1, "baseline": "mean"},
    "lime": {"samples": 3, "superpixels": "quickshift", "segments": 50, "compactness": 10.0, "kernel_size": 6.0,
             "max_dist": 400.0, "seed": 3, "baseline": "dataset_mean", "kernel_width": 0.5},
}


@pytest.mark.slow
def test_the_perturbation_methods_run_in_the_job_with_their_options(tmp_path: Path, capsys, lite0):
    from saliency_core.jobs.batch import main

    images = write_sample_folder(tmp_path / "images", 2)
    argv = ["--images", str(images), "--out", str(tmp_path / "out"), "--maps", PERTURBATION_ENTRIES,
            "--workers", "0", "--device", "cpu", "--no-progress", "--batch-size", "4"]
    for method, params in PERTURBATION_OPTIONS.items():
        for name, value in params.items():
            argv += [f"--{method}-{name}".replace("_", "-"), str(value)]
    assert parse_args(argv).params_for("lime") == PERTURBATION_OPTIONS["lime"]
    assert main(argv) == 0, capsys.readouterr().err
    rows = load_results(tmp_path / "out").results
    assert len(rows) == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["method_params"] == \
        PERTURBATION_OPTIONS
    x = normalize(_crops(images, list(rows["key"]), lite0.preprocessing), lite0.preprocessing, lite0.device)
    targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
    for entry in PERTURBATION_ENTRIES.split(","):
        method, objective = entry.split(":")
        want = attribute(lite0, x, targets, method, (objective,), **PERTURBATION_OPTIONS[method]).maps[objective]
        top = want.amax(dim=(1, 2)).numpy()
        assert (top > 0).all(), entry
        np.testing.assert_allclose(rows[f"{method}_{objective}_max"], top, rtol=1e-4, err_msg=entry)
        np.testing.assert_allclose(rows[f"{method}_{objective}_mean"], want.mean(dim=(1, 2)).numpy(), rtol=1e-4,
                                   err_msg=entry)


def test_smoothgrad_sq_and_deeplift_maps_with_their_options(images: Path, tmp_path: Path, lite0):
    """Issue 24's methods in the job: ``--maps smoothgrad_sq:score,deeplift:loss`` with their options, each
    map's statistics equal to ``attribute``'s, DeepLIFT's completeness gap a column (rounding only)."""
    out = tmp_path / "out"
    run_job("--images", str(images), "--out", str(out), "--maps", "smoothgrad_sq:score,deeplift:loss",
            "--smoothgrad-sq-samples", "2", "--smoothgrad-sq-seed", "3", "--deeplift-baseline", "blur",
            "--batch-size", "4", "--workers", "1")
    res = load_results(out)
    rows = res.results
    assert res.maps == ["smoothgrad_sq_score", "deeplift_loss"] and len(rows) == N_IMAGES
    assert json.loads((out / "manifest.json").read_text())["config"]["method_params"] == {
        "smoothgrad_sq": {"samples": 2, "noise": 0.15, "seed": 3}, "deeplift": {"baseline": "blur"}}
    x = normalize(_crops(images, list(rows["key"]), lite0.preprocessing), lite0.preprocessing, lite0.device)
    targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
    sq = attribute(lite0, x, targets, "smoothgrad_sq", ("score",), samples=2, seed=3).maps["score"].numpy()
    dl = attribute(lite0, x, targets, "deeplift", ("loss",), baseline="blur")
    np.testing.assert_allclose(rows["deeplift_loss_completeness_gap"], dl.convergence["loss"], rtol=0, atol=1e-4)
    assert float(rows["deeplift_loss_completeness_gap"].abs().max()) < 1e-4
    for i in range(N_IMAGES):
        for name, m in (("smoothgrad_sq_score", sq[i]), ("deeplift_loss", dl.maps["loss"][i].numpy())):
            for stat in ("max", "mean", "p90"):
                np.testing.assert_allclose(rows.iloc[i][f"{name}_{stat}"], stats.summarize(m)[stat], rtol=1e-4,
                                           atol=float(m.max()) * 1e-4, err_msg=f"{name}_{stat}")
