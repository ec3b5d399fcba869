"""Names of the batch job's maps and columns: parsing ``--maps``, splitting columns, definitions."""

from __future__ import annotations

import re

import pytest

from saliency_core.errors import InvalidInputError
from saliency_core.jobs import map_specs as ms
from saliency_core.methods.registry import ATTRIBUTION_METHODS

_AGREEMENT = re.compile(
    r"^agree_(?P<first>.+?)_vs_(?P<second>.+)_(?P<metric>pearson|spearman|cosine|ssim|iou_top[0-9.]+)$")


def split_agreement_column(column: str) -> tuple[str, str, str] | None:
    """``"agree_gradient_score_vs_smoothgrad_loss_spearman"`` -> ``("gradient_score", "smoothgrad_loss",
    "spearman")``; ``"agree_spearman"`` -> ``("score", "loss", "spearman")``; other columns -> None."""
    m = _AGREEMENT.match(column)
    if m and m["first"] in ms.MAP_NAMES and m["second"] in ms.MAP_NAMES:
        return m["first"], m["second"], m["metric"]
    rest = column.removeprefix("agree_")
    if rest != column and "_vs_" not in rest and rest:
        return "score", "loss", rest
    return None


def test_the_original_names_keep_their_columns():
    score, loss = ms.parse_maps("score,loss")
    assert (score.name, score.method, score.entry, loss.name) == ("score", "gradient", "score", "loss")
    assert ms.agreement_pairs((score, loss)) == [(score, loss, "agree")]


def test_pairs_a_method_alone_and_their_order():
    specs = ms.parse_maps(" gradient:score, smoothgrad , integrated_gradients:loss ")
    assert [s.name for s in specs] == ["gradient_score", "smoothgrad_score", "smoothgrad_loss",
                                       "integrated_gradients_loss"]
    assert [s.entry for s in specs][:2] == ["gradient:score", "smoothgrad:score"]
    assert ms.methods_of(specs) == {"gradient": ("score",), "smoothgrad": ("score", "loss"),
                                    "integrated_gradients": ("loss",)}
    prefixes = [p for _, _, p in ms.agreement_pairs(specs)]
    assert len(prefixes) == 6 and prefixes[0] == "agree_gradient_score_vs_smoothgrad_score"


@pytest.mark.parametrize(("text", "message"), [
    ("", "at least one map"),
    ("saliency:score", "unknown method 'saliency'"),
    ("smoothgrad:logit", "unknown objective 'logit'"),
    ("score,gradient:score", "asked for twice"),
    ("grad_cam,grad_cam:loss", "asked for twice"),
])
def test_bad_method_lists_say_what_is_wrong(text: str, message: str):
    with pytest.raises(InvalidInputError, match=message):
        ms.parse_maps(text)


def test_every_map_column_splits_back_into_its_map_and_statistic():
    for name in ms.MAP_NAMES:
        for stat in ("gini", "p90", "deletion_auc", "completeness_gap"):
            assert ms.split_map_column(f"{name}_{stat}") == (name, stat)
    for other in ("loss", "prob_target", "random_deletion_auc", "agree_spearman", "maps_index"):
        assert ms.split_map_column(other) == (None, other)


def test_agreement_columns_name_their_two_maps():
    assert split_agreement_column("agree_spearman") == ("score", "loss", "spearman")
    assert split_agreement_column("agree_iou_top5") == ("score", "loss", "iou_top5")
    assert split_agreement_column("agree_integrated_gradients_score_vs_grad_cam_loss_iou_top10") == (
        "integrated_gradients_score", "grad_cam_loss", "iou_top10")
    assert split_agreement_column("agree_nothing_vs_grad_cam_loss_ssim") is None
    assert split_agreement_column("score_gini") is None


def test_map_names_in_a_table_and_their_titles():
    columns = ["key", "score_max", "score_gini", "smoothgrad_loss_max", "agree_score_vs_smoothgrad_loss_ssim"]
    assert ms.map_names_in(columns) == ["score", "smoothgrad_loss"]
    assert ms.title("smoothgrad_loss") == "SmoothGrad · loss" and ms.title("score") == "score"
    assert ms.title("gradient_x_input_loss") == "Gradient × input · loss −L"  # the title every page uses


def test_definitions_say_the_method_objective_parameters_and_reduction():
    specs = ms.parse_maps("score,integrated_gradients:loss,grad_cam:score")
    text = ms.definitions(specs, "l2", {"integrated_gradients": {"steps": 8, "baseline": "black"},
                                        "grad_cam": {"layer": "_blocks.15"}})
    assert "L2 norm of g over RGB" in text["score"]
    ig = text["integrated_gradients_loss"]
    assert "Sundararajan" in ig and "−L = log p_y" in ig and "steps=8" in ig and "L2 norm" in ig
    assert "layer=_blocks.15" in text["grad_cam_score"] and "one channel" in text["grad_cam_score"]
    assert ATTRIBUTION_METHODS["smoothgrad"].loss_objective == "L"
    assert "the per-image cross-entropy L" in ms.definitions(ms.parse_maps("smoothgrad:loss"), "max", {})[
        "smoothgrad_loss"]
