"""The Dataset page on a results folder made by the batch job, driven with AppTest.

The folder is written once per module by ``saliency_core.jobs.batch`` over
``write_sample_folder`` (12 photos and one truncated JPEG). Opening an
image in Compare must show the map saliency_core computes for that file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saliency_core.core import gradients
from saliency_core.inputs.images import load_image
from saliency_core.jobs.batch import main
from saliency_core.jobs.imagefolder import write_sample_folder
from saliency_core.jobs.results import load_results
from tests.app.apptest import charts, decode_plotly_array, heatmaps, shown

pytestmark = pytest.mark.usefixtures("upload_dir")

PAGE = "pages/dataset.py"


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    images = write_sample_folder(tmp_path_factory.mktemp("data") / "images", 12)
    assert main(["--images", str(images), "--out", str(root / "samples"), "--workers", "0", "--no-progress",
                 "--save-maps"]) == 0
    return root


@pytest.fixture
def app(new_app, results_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SALIENCY_RESULTS_DIR", str(results_root))
    return new_app


def test_dataset_page_shows_table_charts_classes_and_errors(app, results_root: Path):
    at = app(page=PAGE).run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric][:2] == ["12", "1"]
    table = next(d for d in at.dataframe if d.key == "dataset_table").value
    assert len(table) == 12 and table["key"].is_unique
    # Only the selectable table carries its key; the others come in page order.
    (per_class,) = (d.value for d in at.dataframe if d.key != "dataset_table")
    assert per_class["images"].sum() == 12
    (errors,) = at.table  # a static table: the reason is shown whole (tests/app/test_browser_polish.py)
    assert [shown(k) for k in errors.value["file"]] == ["n07920052/broken_0.jpg"]
    assert shown(errors.value["why it could not be used"].iloc[0]).startswith("The file is truncated or corrupt")
    figs = charts(at)
    assert {k for k in figs if not k.startswith("dataset_pair_")} == {"dataset_hist_stat", "dataset_hist_other"}
    assert [t["name"] for t in figs["dataset_hist_stat"]["data"]] == ["score", "loss"]
    counts = decode_plotly_array(figs["dataset_hist_stat"]["data"][0]["y"])
    assert counts.sum() == 12  # one gini per image
    written = load_results(results_root / "samples").results
    assert sorted(written["key"]) == sorted(table["key"])


def test_filters_narrow_the_table(app):
    at = app(page=PAGE).run()
    at.multiselect(key="dataset_classes").set_value(["espresso"]).run()
    table = next(d for d in at.dataframe if d.key == "dataset_table").value
    assert len(table) == 3 and set(table["target_name"]) == {"espresso"}
    at.multiselect(key="dataset_classes").set_value([]).run()
    at.selectbox(key="dataset_outcome").set_value("no label").run()
    table = next(d for d in at.dataframe if d.key == "dataset_table").value
    assert list(table["key"]) == ["rocket_002.jpg"]
    at.selectbox(key="dataset_other").set_value("prob_label").run()  # no label: every value is missing
    assert not at.exception and "No prob_label values to draw" in " ".join(shown(c.value) for c in at.caption)
    at.text_input(key="dataset_text").set_value("no such file").run()  # nothing left at all
    assert not at.exception and not at.error


def test_selecting_a_row_opens_it_in_compare_with_the_right_map(app, results_root: Path, lite0):
    at = app(page=PAGE).run()
    table = next(d for d in at.dataframe if d.key == "dataset_table").value
    row = int(np.flatnonzero(table["key"] == "n02123045/chelsea_006.jpg")[0])
    at.session_state["dataset_table"] = {"selection": {"rows": [row], "columns": []}}
    at.run()
    assert not at.exception
    saved = load_results(results_root / "samples").saved_maps("n02123045/chelsea_006.jpg")
    drawn = [decode_plotly_array(t["z"]) for t in heatmaps(charts(at)["dataset_saved_maps"])]
    for z, m in zip(drawn, ("score", "loss"), strict=True):
        np.testing.assert_allclose(z, saved[m], rtol=1e-6)
    at.button(key="open_selected").click().run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Score gradient vs loss gradient"
    assert "n02123045/chelsea_006.jpg" in shown(at.markdown[0].value) and "281 tabby" in at.markdown[0].value
    path = load_results(results_root / "samples").results.set_index("key").loc["n02123045/chelsea_006.jpg", "path"]
    image = load_image(path)
    x = lite0.preprocess([image]).x
    expected = gradients.compute_saliency(lite0, x, [281]).maps["score"][0].numpy()
    score_trace = heatmaps(charts(at)["side_by_side"])[0]
    np.testing.assert_allclose(decode_plotly_array(score_trace["z"]), expected, rtol=1e-5, atol=1e-7)


def test_parquet_upload_and_bad_files(app, results_root: Path):
    at = app(page=PAGE).run()
    at.segmented_control(key="dataset_source").set_value("upload").run()
    part = sorted((results_root / "samples" / "results").glob("part-*.parquet"))[0]
    at.file_uploader(key="dataset_upload").upload("part.parquet", part.read_bytes(), "application/octet-stream").run()
    assert not at.exception and not at.error
    assert at.metric[0].value == "12"
    at.file_uploader(key="dataset_upload").upload("bad.parquet", b"not parquet", "application/octet-stream").run()
    assert not at.exception and "not a Parquet file" in shown(at.error[0].value)


def test_no_results_yet_says_how_to_make_them(new_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SALIENCY_RESULTS_DIR", str(tmp_path / "empty"))
    at = new_app(page=PAGE).run()
    assert not at.exception and not at.error
    assert "No results under" in at.info[0].value and "saliency_core.batch" in at.code[0].value


def test_switching_folders_with_other_columns_and_only_errors(app, results_root: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "three.npz"
    np.savez(npz, X=rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8), y=np.array([1, 2, 3]))
    assert main(["--images", str(npz), "--out", str(results_root / "loss-only"), "--maps", "loss",
                 "--workers", "0", "--no-progress"]) == 0
    bad = tmp_path / "bad" / "n01440764"
    bad.mkdir(parents=True)
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    assert main(["--images", str(bad.parent), "--out", str(results_root / "all-bad"), "--workers", "0",
                 "--no-progress"]) == 0

    at = app(page=PAGE).run()
    at.selectbox(key="dataset_folder").set_value("samples").run()
    at.selectbox(key="dataset_other").set_value("agree_ssim").run()
    at.selectbox(key="dataset_folder").set_value("loss-only").run()
    assert not at.exception and not at.error
    assert at.metric[0].value == "3"
    figs = charts(at)
    assert [t["name"] for t in figs["dataset_hist_stat"]["data"]] == ["loss"]  # no score map, no agreement
    at.selectbox(key="dataset_folder").set_value("all-bad").run()
    assert not at.exception and [m.value for m in at.metric][:2] == ["0", "1"]
    assert "No image could be analysed" in at.warning[0].value
    assert [shown(k) for k in at.table[0].value["file"]] == ["n01440764/a.jpg"]


def test_an_uploaded_parquet_cannot_open_files_outside_the_datasets(app, results_root: Path, tmp_path: Path):


    rows = load_results(results_root / "samples").results
    outside = tmp_path / "private.jpg"
    outside.write_bytes(Path(rows["path"].iloc[0]).read_bytes())
    at = open_uploaded_parquet(app(page=PAGE).run(), rows.assign(path=str(outside)))
    assert not at.exception
    assert sum(c.value == "(image not available on this server)" for c in at.caption) == 6  # no thumbnails
    at.button(key="open_worst_0").click().run()
    assert not at.exception and at.title[0].value == "Dataset results"
    assert "not in a dataset of the results on this server" in shown(at.error[0].value)


HOSTILE = "![t](http://127.0.0.1:8622/track.png) [docs](http://127.0.0.1:8622/phish) <b>x</b> cat.jpg"


def _no_markup_anywhere(at) -> list[str]:
    """Every Markdown body on the page, rendered: none may hold a link, an image or HTML; their text."""
    from tests.app.test_hostile_pages import rendered_bodies

    htmls = rendered_bodies(at)
    for rendered in htmls:
        assert "<a " not in rendered and "<img" not in rendered and "<b>" not in rendered, rendered
    return [shown(h) for h in htmls]


def open_uploaded_parquet(at, frame):
    """The Dataset page with ``frame`` uploaded as a Parquet results part."""
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    at.segmented_control(key="dataset_source").set_value("upload").run()
    return at.file_uploader(key="dataset_upload").upload("forged.parquet", buf.getvalue(),
                                                         "application/octet-stream").run()


def test_keys_and_class_names_from_a_parquet_are_shown_as_text(app, results_root: Path):

    rows = load_results(results_root / "samples").results
    forged = rows.assign(key=[f"{HOSTILE} {i}" for i in range(len(rows))], target_name=HOSTILE,
                         prediction_name=HOSTILE, label_name=HOSTILE)
    at = open_uploaded_parquet(app(page=PAGE).run(), forged)
    assert not at.exception
    at.session_state["dataset_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert not at.exception
    texts = _no_markup_anywhere(at)
    assert any(f"{HOSTILE} 0" in t for t in texts), texts  # the name itself, literally
    at.button(key="open_worst_0").click().run()  # the refusal names the key: as text too
    assert not at.exception
    _no_markup_anywhere(at)


def test_a_killed_run_is_shown_as_stopped_not_running(app, results_root: Path, tmp_path: Path):
    import json
    import shutil
    import socket

    killed = results_root / "killed"
    shutil.copytree(results_root / "samples", killed)
    manifest = json.loads((killed / "manifest.json").read_text())
    # A run that says "running" but whose process is gone (pid 2**22 + 1 is above Linux's pid_max default).
    manifest["runs"][-1].update(status="running", pid=2**22 + 1, host=socket.gethostname(), process_start=1)
    (killed / "manifest.json").write_text(json.dumps(manifest))
    try:
        at = app(page=PAGE).run()
        at.selectbox(key="dataset_folder").set_value("killed").run()
        assert not at.exception
        captions = " ".join(shown(c.value) for c in at.caption)
        assert "last stopped (killed or crashed)" in captions, captions
        assert any("stopped before it finished" in shown(w.value) for w in at.warning)
    finally:
        shutil.rmtree(killed)


def test_the_filters_round_trip_through_the_link(app):
    """The Dataset page's folder, classes, outcome and path filter are in the link (tests/app/test_view_links.py
    has the other pages)."""
    at = app(page=PAGE).run()
    at.selectbox(key="dataset_folder").set_value("samples").run()  # other tests add folders to results_root
    at.multiselect(key="dataset_classes").set_value(["espresso", "tabby"]).run()
    at.selectbox(key="dataset_outcome").set_value("correct").run()
    at.text_input(key="dataset_text").set_value("_00").run()
    link = {k: at.query_params[k] for k in at.query_params}
    assert link["folder"] == "samples" and link["classes"] == "espresso|tabby"
    assert link["outcome"] == "correct" and link["path"] == "_00"
    guest = app(page=PAGE, **link).run()
    assert not guest.exception and not guest.error and not guest.warning
    assert guest.multiselect(key="dataset_classes").value == ["espresso", "tabby"]
    assert guest.selectbox(key="dataset_outcome").value == "correct"
    assert guest.text_input(key="dataset_text").value == "_00"
    table = next(d for d in guest.dataframe if d.key == "dataset_table").value
    mine = next(d for d in at.dataframe if d.key == "dataset_table").value
    assert list(table["key"]) == list(mine["key"])


def test_the_worst_disagreements_show_each_photo_beside_its_two_saved_maps(app, results_root: Path, lite0):
    at = app(page=PAGE).run()
    at.selectbox(key="dataset_folder").set_value("samples").run()  # other tests add folders
    assert not at.exception and not at.error
    folder = load_results(results_root / "samples")
    worst = folder.results.sort_values(["agree_spearman", "key"], na_position="last").head(6)
    figs = charts(at)
    assert [k for k in figs if k.startswith("dataset_pair_")] == [f"dataset_pair_{i}" for i in range(6)]
    for i, key in enumerate(worst["key"]):
        fig = figs[f"dataset_pair_{i}"]
        assert [t["type"] for t in fig["data"]] == ["image", "heatmap", "heatmap"]
        saved = folder.saved_maps(key)
        for trace, m in zip(heatmaps(fig), ("score", "loss"), strict=True):
            np.testing.assert_allclose(decode_plotly_array(trace["z"]), saved[m], rtol=1e-6)
    assert "The maps as the job saved them" in " ".join(shown(c.value) for c in at.caption)
