"""Downloads: PNG and CSV of a map, provenance records."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saliency_core.figures.map_files import colormap_lut, map_csv, map_png, map_to_rgb
from saliency_core.figures.provenance import provenance

_HEADER_LINE = re.compile(r"^# ([A-Za-z_][A-Za-z0-9_]*): (.*)$")


def read_csv_provenance(data: bytes | str) -> dict:
    """The ``# key: <JSON>`` header of a :func:`~saliency_core.figures.provenance.csv_with_provenance` file, as a
    dict."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    out: dict[str, object] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        match = _HEADER_LINE.match(line)
        if match:
            out[match.group(1)] = json.loads(match.group(2))
    return out


def test_png_has_one_pixel_per_map_pixel_coloured_by_the_scale():
    m = np.zeros((5, 7), np.float32)
    m[2, 3] = 1.0
    img = Image.open(io.BytesIO(map_png(m, "hot")))
    assert img.size == (7, 5) and img.mode == "RGB"
    arr = np.asarray(img)
    assert arr[2, 3].tolist() == [255, 255, 255]  # "hot" ends at white
    assert arr[0, 0].tolist() == [0, 0, 0]  # and starts at black


def test_clipping_range_is_applied():
    m = np.array([[0.0, 0.5, 1.0]])
    rgb = map_to_rgb(m, "gray", zmin=0.0, zmax=0.5)
    assert rgb[0, 1].tolist() == rgb[0, 2].tolist()  # 0.5 and 1.0 both at the top
    lut = colormap_lut("gray")
    assert rgb[0, 0].tolist() == lut[0].tolist()


def test_csv_round_trips_values_and_gradients():
    rng = np.random.default_rng(0)
    m = rng.random((3, 4)).astype(np.float32)
    g = rng.normal(size=(3, 3, 4)).astype(np.float32)
    df = pd.read_csv(io.BytesIO(map_csv(m, g)))
    assert list(df.columns) == ["x", "y", "value", "grad_r", "grad_g", "grad_b"]
    assert len(df) == 12
    row = df[(df.x == 2) & (df.y == 1)].iloc[0]
    assert np.float32(row.value) == m[1, 2]
    assert np.float32(row.grad_b) == g[2, 1, 2]


def test_provenance_is_json_ready_and_names_versions():
    rec = provenance(model_name="efficientnet_lite0", weights="w", preprocessing="p", target=967,
                     target_name="espresso", objective="score", reduction="max", precision="exact",
                     image_sha256="a" * 64, image_source="sample:coffee", device="cpu")
    text = json.dumps(rec)
    assert "espresso" in text and rec["versions"]["torch"] != "not installed"
    assert rec["image"]["sha256"] == "a" * 64 and rec["saliency"]["precision"] == "exact"


# --- map definitions follow the options used ------------------------------------

def test_map_definitions_follow_the_reduction_and_method():
    from saliency_core.figures.provenance import map_definitions

    words = {"max": "max |g| over RGB", "mean_abs": "mean |g| over RGB", "l2": "L2 norm of g over RGB"}
    for reduction, phrase in words.items():
        defs = map_definitions(("score", "loss"), reduction)
        assert set(defs) == {"score", "loss"}
        for text in defs.values():
            assert phrase in text
            assert not any(other in text for r, other in words.items() if r != reduction)
        assert "logit" in defs["score"] and "cross-entropy" in defs["loss"] and "per image" in defs["loss"]
    assert list(map_definitions(("loss",), "max")) == ["loss"]


def test_provenance_definition_never_contradicts_the_reduction():
    rec = provenance(model_name="m", weights="w", preprocessing="p", target=1, target_name="t", objective="score",
                     reduction="l2", precision="exact", image_sha256="a" * 64, image_source="sample:x", device="cpu")
    assert "max" not in json.dumps(rec["saliency"]["definition"])
    from saliency_core.figures.provenance import map_definitions

    for reduction in ("max", "mean_abs", "l2"):
        rec = provenance(model_name="m", weights="w", preprocessing="p", target=1, target_name="t",
                         objective="score", reduction=reduction, precision="exact", image_sha256="a" * 64,
                         image_source="sample:x", device="cpu")
        assert rec["saliency"]["reduction"] == reduction
        assert rec["saliency"]["definition"] == map_definitions(("score", "loss"), reduction)


def test_map_definitions_reject_unknown_options():
    import pytest

    from saliency_core.errors import InvalidInputError
    from saliency_core.figures.provenance import map_definitions

    with pytest.raises(InvalidInputError, match="reduction"):
        map_definitions(("score",), "sum")
    with pytest.raises(InvalidInputError, match="objective"):
        map_definitions(("gradcam",), "max")


# --- faithfulness downloads with provenance ---------------------------------------

def _toy_model():
    import torch

    class LeftHalf(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(3.0))

        def forward(self, x):
            s = self.scale * x[:, 0, :, : x.shape[-1] // 2].mean(dim=(1, 2))
            return torch.stack([torch.zeros_like(s), s], dim=1)

    return LeftHalf().eval()


def _record(reduction="l2", precision="exact"):
    return provenance(model_name="toy", weights="none", preprocessing="none", target=1, target_name="one",
                      objective=None, reduction=reduction, precision=precision, image_sha256="b" * 64,
                      image_source="sample:toy", device="cpu", image_title="Toy # 1")


def test_deletion_insertion_csv_reads_back_with_pandas_and_keeps_its_provenance():
    import torch

    from saliency_core.evaluation.faithfulness import deletion_insertion
    from saliency_core.figures.evaluation_files import deletion_insertion_csv

    X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
    model = _toy_model()
    results = {
        "score #1": deletion_insertion(model, X, [1, 1], maps, 4, "blur", blur_sigma=1.5),
        "random order": deletion_insertion(model, X, [1, 1], None, 4, "blur", order="random", seed=7,
                                           blur_sigma=1.5),
    }
    data = deletion_insertion_csv(results, _record())
    df = pd.read_csv(io.BytesIO(data), comment="#")
    assert list(df.columns) == ["order", "image", "target", "step", "fraction", "deletion", "insertion"]
    assert len(df) == 2 * 2 * 5 and set(df.order) == set(results)  # a '#' in a name survives (quoted)
    rows = df[(df.order == "random order") & (df.image == 1)]
    np.testing.assert_array_equal(rows.deletion.to_numpy(), results["random order"].deletion[1])
    np.testing.assert_array_equal(rows.insertion.to_numpy(), results["random order"].insertion[1])
    np.testing.assert_array_equal(rows.fraction.to_numpy(), results["random order"].fractions)
    assert rows.step.tolist() == [0, 1, 2, 3, 4] and (df.target == 1).all()

    meta = read_csv_provenance(data)
    assert meta["model"]["name"] == "toy" and meta["image"]["title"] == "Toy # 1"
    assert meta["saliency"]["reduction"] == "l2" and meta["versions"]["torch"] != "not installed"
    faith = meta["faithfulness"]
    assert faith["steps"] == 4 and faith["baseline"] == "blur" and faith["blur_sigma"] == 1.5
    assert faith["precision"] == "exact" and faith["orders"] == {"score #1": "map", "random order": "random"}
    assert faith["seeds"] == {"score #1": 0, "random order": 7}


def test_randomisation_csv_reads_back_with_pandas_and_keeps_its_provenance():
    import torch

    from saliency_core.evaluation.sanity import cascading_randomization
    from saliency_core.figures.evaluation_files import randomisation_csv

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 3)).eval()
    res = cascading_randomization(net, torch.rand(1, 3, 8, 8), [-1], reduction="l2", max_stages=None, seed=3)
    data = randomisation_csv(res, _record())
    df = pd.read_csv(io.BytesIO(data), comment="#")
    pd.testing.assert_frame_equal(df, res.similarity, check_dtype=False)
    meta = read_csv_provenance(data)
    rand = meta["randomisation"]
    assert rand["stages"] == res.stages and rand["layers"] == res.layers
    assert rand["seed"] == 3 and rand["reduction"] == "l2" and rand["precision"] == "exact"
    assert rand["targets"] == res.targets.tolist()
    assert rand["method"] == "gradient" and rand["objectives"] == ["score", "loss"]  # objective beside method
    assert set(df["method"]) == {"gradient"} and set(df["objective"]) == {"score", "loss"}


def test_faithfulness_csv_refuses_a_record_that_contradicts_the_results():
    import pytest
    import torch

    from saliency_core.errors import InvalidInputError
    from saliency_core.evaluation.sanity import cascading_randomization
    from saliency_core.figures.evaluation_files import randomisation_csv

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).eval()
    res = cascading_randomization(net, torch.rand(1, 3, 4, 4), [0], reduction="max")
    with pytest.raises(InvalidInputError, match="reduction"):
        randomisation_csv(res, _record(reduction="l2"))


def test_faithfulness_file_names_are_descriptive_and_safe():
    import pytest

    from saliency_core.errors import InvalidInputError
    from saliency_core.figures.evaluation_files import faithfulness_filename

    assert (faithfulness_filename("deletion_insertion", "Coffee mug", "efficientnet_lite0", 967)
            == "faithfulness_deletion_insertion_Coffee_mug_efficientnet_lite0_target967.csv")
    name = faithfulness_filename("randomisation", "../../etc/passwd \u00e9 ", "m/x", 3)
    assert name == "faithfulness_randomisation_etc_passwd_m_x_target3.csv"
    assert faithfulness_filename("randomisation", "///", "m", 0) == "faithfulness_randomisation_image_m_target0.csv"
    assert len(faithfulness_filename("randomisation", "x" * 500, "m", 1)) < 120
    with pytest.raises(InvalidInputError, match="kind"):
        faithfulness_filename("curves", "a", "m", 1)


def test_definitions_and_provenance_name_the_attribution_method_and_its_parameters():
    from saliency_core.errors import InvalidInputError
    from saliency_core.figures.provenance import map_definitions, provenance

    cam = map_definitions(attribution="grad_cam", params={"layer": "_blocks.15"})
    assert "Grad-CAM" in cam["loss"] and "layer=_blocks.15" in cam["loss"] and "no reduction" in cam["loss"]
    assert "−L" in cam["loss"]  # Grad-CAM's loss map is of −L: positive = evidence for the target
    smooth = map_definitions(reduction="l2", attribution="smoothgrad", params={"samples": 8, "seed": 3})
    assert "SmoothGrad" in smooth["score"] and "samples=8, seed=3" in smooth["score"] and "L2" in smooth["score"]
    assert map_definitions() == map_definitions(attribution="gradient")  # the plain gradient's text is unchanged
    record = provenance(model_name="m", weights="w", preprocessing="p", target=1, target_name="t", objective="loss",
                        reduction="max", precision="exact", image_sha256="0" * 64, image_source="sample",
                        device="cpu", attribution="integrated_gradients", params={"steps": 16},
                        convergence={"score": 0.03, "loss": -0.05})
    attribution = record["saliency"]["attribution"]
    assert attribution["name"] == "integrated_gradients" and attribution["params"] == {"steps": 16}
    assert record["saliency"]["objective"] == "loss" and record["saliency"]["method"] == "integrated_gradients"
    assert attribution["completeness_gap"] == {"score": 0.03, "loss": -0.05}
    with pytest.raises(InvalidInputError):
        map_definitions(attribution="nope")
