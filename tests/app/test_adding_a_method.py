"""Adding a method is its module and one registry line: a throwaway method shows up everywhere a method goes.

The method below, "doubled_gradient" (``factor`` times the input gradient, one
pass), is written as a module of ``saliency_core/methods/`` would be: a ``run``
on the engine's core and a ``METHOD`` declaration. It is registered with
:func:`saliency_core.methods.registry.registered` (what the one line in
``registry.METHODS`` does for a real method), and nothing else in the
project is told about it. It must then be in the sidebar's Method choices,
open from a shared link with its parameter, run in the batch job's
``--maps`` with its own option, and be offered and drawn on the Methods page.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saliency_core import attribute, compute_saliency
from saliency_core.methods._common import MethodOutput, Request, image_rows, vjps
from saliency_core.methods.declaration import AttributionMethod, Param
from saliency_core.methods.registry import ATTRIBUTION_METHODS, METHODS, map_title, registered
from tests.app.apptest import (
    PAGES,
    assert_healthy,
    charts,
    coffee,
    decode_plotly_array,
    heatmap_z,
    heatmaps,
    shown,
)
from tests.app.test_methods_in_pages import assert_close

pytestmark = pytest.mark.usefixtures("upload_dir")

NAME = "doubled_gradient"


# --------------------------------------------------------------------------- the method, as its module would be

def run(req: Request, factor: float = 2.0) -> MethodOutput:
    """attributions[obj] = factor × the input gradient of s_y or L; (N, 3, H, W) signed."""

    def step(start: int, stop: int):
        logits, targets, grads, _ = vjps(req, req.module, start, stop)
        return logits, targets, {obj: factor * g for obj, g in grads.items()}

    logits, targets, attributions = image_rows(req, step)
    return MethodOutput(attributions=attributions, logits=logits, targets=targets)


METHOD = AttributionMethod(
    name=NAME, title="Doubled gradient", citation="a test, 2026",
    summary="factor × the input gradient of the objective",
    params=(Param("factor", 2.0, float, "what the gradient is multiplied by", minimum=0.0, maximum=10.0),),
    loss_objective="L", output="input", run=run,
)


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    with registered(METHOD):
        yield
    assert NAME not in ATTRIBUTION_METHODS and METHOD not in METHODS  # gone again for the other test modules


@pytest.fixture(scope="module")
def coffee_x(lite0):
    return lite0.preprocess(coffee()).x


# --------------------------------------------------------------------------- the engine


def test_the_engine_runs_it_as_declared(lite0, coffee_x):
    r = attribute(lite0, coffee_x, [967], NAME, factor=3.0)
    plain = compute_saliency(lite0, coffee_x, [967])
    for o in ("score", "loss"):
        torch.testing.assert_close(r.attributions[o], 3.0 * plain.gradients[o])
    assert r.params == {"factor": 3.0}
    assert ATTRIBUTION_METHODS[NAME].cost().rows == 1


# --------------------------------------------------------------------------- the dashboard


def test_the_sidebar_offers_it(new_app):
    at = new_app(PAGES["home"]).run()
    assert_healthy(at)
    assert "Doubled gradient" in at.selectbox(key="method").options  # in its family, the gradient's
    assert "Doubled gradient (a test, 2026)" in shown(at.selectbox(key="method").help)


def test_a_shared_link_opens_it_with_its_parameter(new_app, lite0, coffee_x):
    at = new_app(PAGES["saliency"], method=NAME, factor="3", objective="loss").run()
    assert_healthy(at)
    assert not at.warning, [w.value for w in at.warning]  # the link was followed in full
    assert at.selectbox(key="method").value == NAME
    assert at.number_input(key=f"param.{NAME}.factor").value == 3.0
    expected = attribute(lite0, coffee_x, [967], NAME, factor=3.0).maps["loss"]
    assert_close(heatmap_z(at), expected)
    assert_close(heatmap_z(at), 3.0 * compute_saliency(lite0, coffee_x, [967]).maps["loss"])
    assert at.query_params["method"] == NAME and at.query_params["factor"] == "3.0"  # and it is in the link


def test_a_link_with_a_value_above_its_declared_maximum_says_so(new_app):
    at = new_app(PAGES["home"], method=NAME, factor="11").run()
    notice = " ".join(w.value for w in at.warning)
    assert "factor=11" in notice and "from 0 to 10" in notice, notice


def test_the_methods_page_offers_and_draws_it(new_app, lite0, coffee_x):
    at = new_app(PAGES["methods"], methods=f"gradient,{NAME}").run()
    assert_healthy(at)
    pick = at.multiselect(key="methods_pick")
    assert pick.options[-1] == "Doubled gradient (a test, 2026)"  # registered last, listed last
    assert pick.value == ["gradient", NAME]
    drawn = {t["name"]: decode_plotly_array(t["z"]) for t in heatmaps(charts(at)["grid"])}
    assert list(drawn) == [map_title(m, o) for m in ("gradient", NAME) for o in ("score", "loss")]
    for o in ("score", "loss"):
        expected = attribute(lite0, coffee_x, [967], NAME, ("score", "loss")).maps[o]
        assert_close(drawn[map_title(NAME, o)], expected)
        assert_close(drawn[map_title(NAME, o)], 2.0 * drawn[map_title("gradient", o)])


# --------------------------------------------------------------------------- the batch job


def test_the_batch_job_computes_it_with_its_option(tmp_path, capsys):
    from saliency_core.jobs.batch import main
    from saliency_core.jobs.imagefolder import write_sample_folder
    from saliency_core.jobs.options import parse_args
    from saliency_core.jobs.results import load_results

    images = write_sample_folder(tmp_path / "images", 3)
    out = tmp_path / "out"
    argv = ["--images", str(images), "--out", str(out), "--maps", f"gradient:score,{NAME}:score",
            "--doubled-gradient-factor", "3", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert parse_args(argv).params_for(NAME) == {"factor": 3.0}
    assert main(argv) == 0, capsys.readouterr().err
    folder = load_results(out)
    table = folder.results
    assert len(table) == 3
    np.testing.assert_allclose(table[f"{NAME}_score_max"], 3.0 * table["gradient_score_max"], rtol=1e-5)
    np.testing.assert_allclose(table[f"agree_gradient_score_vs_{NAME}_score_spearman"], 1.0, rtol=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["method_params"] == {NAME: {"factor": 3.0}}
    assert "Doubled gradient (a test, 2026)" in manifest["definitions"][f"{NAME}_score"]
    # Above its declared maximum, the option is a usage error, before anything is loaded.
    with pytest.raises(SystemExit) as exit_:
        parse_args([*argv[:6], "--doubled-gradient-factor", "11"])
    assert exit_.value.code == 2 and "at most 10" in capsys.readouterr().err
