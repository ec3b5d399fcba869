"""The batch job's ``--metrics`` columns against the engine's metrics computed here, image by image.

Every ``<map>_<metric>`` of a two-map run equals :mod:`saliency_core.evaluation.metrics` called directly on the
same map, for that image alone, with the image's own seed (:func:`~saliency_core.jobs.metric_specs.image_seed`):
so its draws do not depend on where the image sat in its batch. A resumed run gives the same values; the
manifest records the metrics' parameters and defines each column. The parameters are the cheapest that still
draw (the 2-core test machine is shared): each image's maps take a few seconds per metric.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_core.evaluation.metrics import (
    complexity,
    faithfulness_correlation,
    infidelity,
    pointing_game,
    random_logit,
    relevance_mass,
    relevance_rank,
    road,
    sensitivity,
    sparseness,
)
from saliency_core.evaluation.metrics._common import Recompute, output_for
from saliency_core.inputs.object_masks import box_mask
from saliency_core.inputs.preprocessing import normalize
from saliency_core.jobs.batch import main
from saliency_core.jobs.imagefolder import discover, write_sample_folder
from saliency_core.jobs.metric_specs import image_seed
from saliency_core.jobs.results import load_results
from saliency_core.methods.registry import attribute
from tests.test_batch_methods import _crops

N_IMAGES = 3
BATCH = 2  # the first two images share a batch: the reference maps are made the same way, bit for bit
MAPS = {"score": "score", "loss": "loss"}  # the plain gradient of each: column prefix -> objective
METRICS = "road,sensitivity,sparseness,complexity,infidelity,faithfulness_correlation,random_logit,localisation"
PARAMS = ("--road-steps", "1", "--road-seed", "5", "--sensitivity-samples", "2", "--infidelity-samples", "2",
          "--faithfulness-correlation-runs", "2")
COLUMNS = ("road_morf", "road_lerf", "faithfulness_correlation", "infidelity", "max_sensitivity", "avg_sensitivity",
           "sparseness", "complexity", "random_logit", "pointing_game", "relevance_mass_accuracy",
           "relevance_rank_accuracy")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_folder(tmp_path_factory.mktemp("data") / "images", N_IMAGES, corrupt=0)


@pytest.fixture(scope="module")
def boxes(images: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Boxes for the first and the last image (two for the last), none for the second."""
    keys = [it.key for it in discover(images).items]
    return {keys[0]: [(40, 30, 220, 200)], keys[2]: [(0, 0, 60, 60), (100, 80, 300, 260)]}


def _argv(images: Path, out: Path, csv: Path, *more: str) -> list[str]:
    return ["--images", str(images), "--out", str(out), "--maps", "score,loss", "--metrics", METRICS, *PARAMS,
            "--boxes", str(csv), "--workers", "0", "--no-progress", *more]


@pytest.fixture(scope="module")
def run(images: Path, boxes: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("metrics")
    csv = folder / "boxes.csv"
    csv.write_text("key,x0,y0,x1,y1\n" + "".join(f"{k},{b[0]},{b[1]},{b[2]},{b[3]}\n"
                                                 for k, bs in boxes.items() for b in bs))
    argv = _argv(images, folder / "out", csv, "--batch-size", str(BATCH), "--part-size", str(BATCH))
    assert main(argv) == 0
    return folder / "out", argv


def test_every_metric_column_equals_the_engine_on_the_same_map_and_seed(run, images: Path, boxes: dict, lite0):
    rows = load_results(run[0]).results
    assert len(rows) == N_IMAGES
    for name in MAPS:
        for metric in COLUMNS:
            assert f"{name}_{metric}" in rows
    prep = lite0.preprocessing
    first = rows.iloc[:BATCH]
    x_batch = normalize(_crops(images, list(first["key"]), prep), prep, lite0.device)
    y_batch = torch.tensor(first["target"].to_numpy(dtype=np.int64))
    maps = attribute(lite0, x_batch, y_batch, "gradient", tuple(MAPS.values()), max_batch=BATCH).maps
    for i, (_, row) in enumerate(first.iterrows()):  # one boxed, one without a box
        x, y = x_batch[i:i + 1], y_batch[i:i + 1]
        mask = torch.from_numpy(box_mask(boxes.get(row["key"], []), int(row["width"]), int(row["height"]), prep))
        seed = image_seed(0, row["sha256"])
        for name, objective in MAPS.items():
            a = maps[objective][i:i + 1]
            out = output_for("gradient", objective)
            again = Recompute("gradient", objective, None, "max", BATCH)
            r = road.road(lite0, x, y, a, output=out, steps=1, seed=image_seed(5, row["sha256"]))
            s = sensitivity.sensitivity(lite0, x, y, a, again, samples=2, seed=seed)
            expected = {
                "road_morf": r.morf_mean[0], "road_lerf": r.lerf_mean[0],
                "faithfulness_correlation": faithfulness_correlation.faithfulness_correlation(
                    lite0, x, y, a, output=out, runs=2, seed=seed)[0],
                "infidelity": infidelity.infidelity(lite0, x, y, a, output=out, samples=2, seed=seed)[0],
                "max_sensitivity": s.max[0], "avg_sensitivity": s.mean[0],
                "sparseness": sparseness.sparseness(a)[0], "complexity": complexity.complexity(a)[0],
                "random_logit": random_logit.random_logit(lite0, x, y, a, again, seed=seed)[0],
                "pointing_game": pointing_game.pointing_game(a, mask[None])[0],
                "relevance_mass_accuracy": relevance_mass.relevance_mass_accuracy(a, mask[None])[0],
                "relevance_rank_accuracy": relevance_rank.relevance_rank_accuracy(a, mask[None])[0],
            }
            for metric, value in expected.items():
                # The same maps; only the clean pass (two images in the job, one here) rounds differently.
                np.testing.assert_allclose(row[f"{name}_{metric}"], value, rtol=1e-5, atol=1e-6, equal_nan=True,
                                           err_msg=f"{row['key']} {name}_{metric}")
    boxed = rows["key"].isin(list(boxes))
    assert rows.loc[boxed, "score_relevance_mass_accuracy"].notna().all()
    assert rows.loc[~boxed, ["object_share", "score_pointing_game", "loss_relevance_rank_accuracy"]
                    ].isna().all().all()
    assert (rows.loc[boxed, "object_share"] > 0).all()


def test_a_resumed_run_gives_the_same_values(run, images: Path, tmp_path: Path):
    out, argv = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    last = sorted((copy / "results").glob("part-*.parquet"))[-1]
    last.unlink()  # as if the run had stopped before writing it
    assert main([copy.as_posix() if a == str(out) else a for a in argv]) == 0
    a = load_results(out).results.sort_values("key").reset_index(drop=True)
    b = load_results(copy).results.sort_values("key").reset_index(drop=True)
    assert list(a["key"]) == list(b["key"]) and (b["run"] == 1).sum() == N_IMAGES - BATCH
    for column in [c for c in a.columns if any(c.endswith(m) for m in COLUMNS)]:
        np.testing.assert_allclose(a[column], b[column], rtol=1e-6, atol=1e-9, err_msg=column)


def test_each_image_draws_its_own_and_every_map_of_it_the_same():
    assert image_seed(0, "a" * 64) != image_seed(0, "b" * 64) != image_seed(1, "b" * 64)
    assert image_seed(0, "a" * 64) == image_seed(0, "a" * 64) and 0 <= image_seed(2**31 - 1, "c") < 2**31


def test_the_manifest_records_the_metrics_and_defines_each_column(run):
    manifest = json.loads((run[0] / "manifest.json").read_text())
    config = manifest["config"]
    assert config["metrics"] == ["road_morf", "road_lerf", "faithfulness_correlation", "infidelity",
                                 "max_sensitivity", "avg_sensitivity", "sparseness", "complexity", "random_logit",
                                 "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"]
    assert config["metric_params"]["road"] == {"steps": 1, "noise": 0.01, "seed": 5}
    assert config["metric_params"]["sensitivity"]["samples"] == 2 and len(config["boxes"]["sha256"]) == 64
    definitions = manifest["definitions"]
    assert "Rong et al., ICML 2022" in definitions["<map>_road_morf"] and "lower is better" in \
        definitions["<map>_road_morf"] and "steps=1" in definitions["<map>_road_morf"]
    assert "needs an object mask" in definitions["<map>_pointing_game"] and "object_share" in definitions
    assert manifest["objects"]["images_with_object"] == 2 and manifest["objects"]["source"] == "boxes"


def test_a_changed_boxes_csv_is_not_mixed_into_a_resumed_run(run, tmp_path: Path, capsys):
    out, argv = run
    csv = Path(argv[argv.index("--boxes") + 1])
    other = tmp_path / "boxes.csv"
    other.write_text(csv.read_text().replace(",40,", ",41,"))
    argv = [str(other) if a == str(csv) else a for a in argv]
    assert main(argv) == 2
    assert "boxes" in capsys.readouterr().err
    assert isinstance(pd.read_parquet(next((out / "results").glob("*.parquet"))), pd.DataFrame)
