"""Each page's display choices in the address bar, so that a shared link shows what the sender sees.

The sidebar's view (model, image, method, objective, ...) is in the link by
:mod:`pages.ui.url_state`. This module does the same for what each page
chooses on its own: the colour map, the Saliency page's view, clip range and
opacity, Compare's shared scale, the Gallery's images and columns, how many
top pixels Statistics lists, the Faithfulness checks' steps, baseline and
stages, the Methods page's methods and switches, the Dataset page's folder and
filters. A page's :class:`Choice` list is in :data:`PAGES` (or made by a
function where it depends on what the page shows or on the registry); the
page calls :func:`restore` before drawing those widgets (on the page's first
run in a session it takes the link's values, with a notice for any it can't
use) and :func:`write` after them (non-default values only, so links stay
short).
Streamlit clears the query on a page change, so each page restores its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st

from pages.ui.labels import COLORSCALES
from pages.ui.text import plain
from saliency_core.core.baselines import BASELINE_LABELS
from saliency_core.core.limits import MAX_FAITHFULNESS_STEPS
from saliency_core.evaluation.metric_table import MODEL_METRICS
from saliency_core.inputs.object_mask import box_text, parse_box
from saliency_core.jobs.dataset_view import OUTCOMES
from saliency_core.jobs.leaderboard import METRICS
from saliency_core.methods.registry import ATTRIBUTION_METHODS, shown_by_default


@dataclass(frozen=True)
class Choice:
    """One display choice: its name in the link, its widget's session key, its default and how it is read
    (``parse`` raises ValueError for an unusable value) and written (``dump``)."""

    url: str
    key: str
    default: object
    parse: Callable[[str], object]
    expected: str
    dump: Callable[[object], str] = str


def _one_of(values: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(text)
        return text

    return parse


def _number(kind: type, lo: float, hi: float, step: float | None = None) -> Callable[[str], object]:
    def parse(text: str) -> object:
        value = kind(text)
        if not lo <= value <= hi or (step is not None and round((value - lo) / step, 9) % 1):
            raise ValueError(text)
        return value

    return parse


def _named(names: dict[str, str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        return names[text]  # KeyError: not one of them

    return parse


def _flag(text: str) -> bool:
    if text != "1":
        raise ValueError(text)
    return True


def _switch(on: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        if text != on:
            raise ValueError(text)
        return True

    return parse


def _clip(text: str) -> tuple[float, float]:
    low, high = (float(t) for t in text.split("-", 1))
    if not 0.0 <= low <= high <= 100.0 or (low * 2) % 1 or (high * 2) % 1:
        raise ValueError(text)
    return low, high


def _box(text: str) -> tuple[int, int, int, int]:
    # The crop's size is not known here: any box of a crop up to MAX_BOX_SIDE; the page checks it against its own.
    return parse_box(text, (MAX_BOX_SIDE, MAX_BOX_SIDE))


def _metric_names(text: str) -> list[str]:
    picked = [t.strip() for t in text.split(",") if t.strip()]
    if not picked or any(n not in MODEL_METRICS for n in picked):
        raise ValueError(text)
    return list(dict.fromkeys(picked))


def _number_text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


MAX_BOX_SIDE = 4096
VIEWS = {"heatmap": "Heatmap", "overlay": "Overlay on the image"}
COLORSCALE = Choice("colorscale", "colorscale", "hot", _one_of(COLORSCALES), f"one of {', '.join(COLORSCALES)}")
SHARED_SCALE = Choice("shared", "shared_scale", False, _flag, "1 (one colour scale for both maps)",
                      lambda v: "1")

PAGES: dict[str, tuple[Choice, ...]] = {
    "saliency": (
        COLORSCALE,
        Choice("clip", "clip", (0.0, 100.0), _clip, "two percentiles LOW-HIGH from 0 to 100 in steps of 0.5",
               lambda v: f"{v[0]:g}-{v[1]:g}"),
        Choice("view", "saliency_view", "Heatmap", _named(VIEWS), "heatmap or overlay",
               lambda v: {label: name for name, label in VIEWS.items()}[v]),
        Choice("opacity", "opacity", 0.6, _number(float, 0.0, 1.0, 0.05), "a number from 0 to 1 in steps of 0.05",
               _number_text),
    ),
    "compare": (COLORSCALE, SHARED_SCALE),
    "methods": (COLORSCALE,),
    "gallery": (COLORSCALE,),  # and its image set and columns, which depend on the images (gallery_choices)
    "dataset": (  # and its folder and classes, which depend on the results (dataset_choices)
        Choice("outcome", "dataset_outcome", "all", _one_of(OUTCOMES), f"one of {', '.join(OUTCOMES)}"),
        Choice("path", "dataset_text", "", str, "text"),
        Choice("rank_by", "dataset_rank_by", "insertion_minus_deletion", _one_of(tuple(METRICS)),
               f"one of {', '.join(METRICS)}"),
    ),
    "statistics": (Choice("top", "top_n", 20, _number(int, 1, 1000), "a whole number from 1 to 1000"),),
    "faithfulness": (
        Choice("deletion_steps", "faith_steps", 20, _number(int, 5, MAX_FAITHFULNESS_STEPS, 5),
               f"a multiple of 5 from 5 to {MAX_FAITHFULNESS_STEPS}"),
        Choice("deletion_baseline", "faith_baseline", "blur", _one_of(tuple(BASELINE_LABELS)),
               f"one of {', '.join(BASELINE_LABELS)}"),
        Choice("stages", "faith_stages", 8, _number(int, 2, 12), "a whole number from 2 to 12"),
        Choice("slow_metrics", "faith_metrics", [], _metric_names,
               f"a comma-separated list of metrics that run the model ({', '.join(MODEL_METRICS)})", ",".join),
        Choice("box", "faith_box", None, _box, "four whole numbers x0,y0,x1,y1 (the object's box in crop pixels)",
               box_text),
    ),
}


def dataset_folder_choice(names: Sequence[str]) -> Choice:
    """Which results folder the Dataset page opens (of those on the server)."""
    return Choice("folder", "dataset_folder", names[0], _one_of(names), "a results folder on this server")


def dataset_classes_choice(classes: Sequence[str]) -> Choice:
    """Which target classes the Dataset page's table keeps, by name, "|" between them (all when absent)."""
    def parse(text: str) -> list[str]:
        picked = [t for t in text.split("|") if t]
        if not picked or any(c not in classes for c in picked):
            raise ValueError(text)
        return list(dict.fromkeys(picked))

    return Choice("classes", "dataset_classes", [], parse, "class names of these results, separated by |",
                  lambda v: "|".join(v))


def gallery_choices(sets: Sequence[str], per_row_default: int, per_row_max: int) -> tuple[Choice, ...]:
    """The Gallery's choices that depend on its images: which set (when there are several) and how many
    images a row."""
    return (Choice("images", "gallery_set", sets[0], _one_of(sets), "one of the image sets shown"),
            Choice("per_row", "gallery_cols", per_row_default, _number(int, 1, per_row_max),
                   f"a whole number of images per row, 1 to {per_row_max}"))


def methods_page_choices() -> tuple[Choice, ...]:
    """The Methods page's own choices: which methods (by default those that declare themselves fast enough,
    ``default_view``), one colour scale per method instead of per map, top-5 % IoU instead of Spearman's ρ, and
    the ranking on, with metrics that run the model as more columns:
    ``?methods=gradient,smoothgrad&scale=method&agreement=iou_top5&rank=1&rank_metrics=road_morf,infidelity``.
    Made on each call: the registry may have gained a method."""
    names = list(ATTRIBUTION_METHODS)

    def parse_methods(text: str) -> list[str]:
        picked = [t.strip() for t in text.split(",") if t.strip()]
        if not picked or any(n not in names for n in picked):
            raise ValueError(text)
        return list(dict.fromkeys(picked))

    return (Choice("methods", "methods_pick", list(shown_by_default()), parse_methods,
                   f"a comma-separated list of attribution methods ({', '.join(names)})", ",".join),
            Choice("scale", "methods_scale_per_method", False, _switch("method"),
                   "method (one colour scale per method)", lambda v: "method"),
            Choice("agreement", "methods_iou", False, _switch("iou_top5"), "iou_top5 (top-5 % IoU)",
                   lambda v: "iou_top5"),
            Choice("rank", "methods_rank", False, _flag, "1 (the ranking on)", lambda v: "1"),
            Choice("rank_metrics", "methods_rank_metrics", [], _metric_list,
                   f"a comma-separated list of metrics that run the model ({', '.join(MODEL_METRICS)})",
                   ",".join))


def _metric_list(text: str) -> list[str]:
    picked = [t.strip() for t in text.split(",") if t.strip()]
    if not picked or any(n not in MODEL_METRICS for n in picked):
        raise ValueError(text)
    return [n for n in MODEL_METRICS if n in picked]


#: Every page's link names: kept in the address bar by :func:`pages.ui.url_state.write_url` (the Gallery's and
#: the Dataset page's choices are made per run, with defaults that depend on the server: named here).
URL_NAMES = frozenset({c.url for choices in PAGES.values() for c in choices}
                      | {c.url for c in methods_page_choices()} | {"images", "per_row", "folder", "classes"})


def restore(name: str, choices: Sequence[Choice]) -> list[str]:
    """Before these widgets are drawn: on the first run in this session that reaches them (``name`` says
    which: a page, or a part of one), set them from the link. Returns one notice per value that can't be
    used (the widget keeps its value or default)."""
    flag = f"_view_links_restored_{name}"
    if st.session_state.get(flag):
        return []
    st.session_state[flag] = True
    params = st.query_params.to_dict()
    problems = []
    for choice in choices:
        if choice.url not in params:
            continue
        try:
            value = choice.parse(params[choice.url])
        except (ValueError, TypeError, KeyError):
            shown = "the default" if choice.default is None else plain(choice.dump(choice.default))
            problems.append(f"**{choice.url}={plain(params[choice.url], 80)}** is not {choice.expected}; "
                            f"showing {shown} instead.")
            continue
        st.session_state[choice.key] = value
    return problems


def write(choices: Sequence[Choice]) -> None:
    """After the widgets: their non-default values into the address bar, the defaults out of it."""
    for choice in choices:
        value = st.session_state.get(choice.key, choice.default)
        if value is None or value == choice.default:
            if choice.url in st.query_params:
                del st.query_params[choice.url]
        elif st.query_params.get(choice.url) != (text := choice.dump(value)):
            st.query_params[choice.url] = text


def warn(notices: list[str]) -> None:
    """The link notice, as the sidebar shows its own."""
    if notices:
        st.warning("This link could not be followed in full:\n\n" + "\n".join(f"- {n}" for n in notices),
                   icon=":material/link_off:")
