"""The view in the address bar, by option *name*, so links are readable and stable.

``?sample=chelsea&objective=loss&target=282`` or ``?source=upload&image=<sha256>``,
``?method=smoothgrad&samples=16&seed=3``: restored on a session's first run (a
shared link), written back after every run. Defaults are left out to keep
links short; the chosen method's parameters are written by their names
(:mod:`pages.ui.method_params`). The URL always describes what is shown: the
model written is the one in use, not one the user picked that could not be
loaded. Older links said ``method=score`` or ``method=loss`` for what is now
the objective; they still open the plain gradient's score or loss map. A
parameter's older value (``baseline=zeros``) is read as its new one, with a
notice saying which.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pages.ui import method_params, model_cache, view_links
from pages.ui.labels import OBJECTIVE_LABELS, PRECISION_LABELS, REDUCTION_LABELS
from pages.ui.text import plain
from saliency_core.core.baselines import BASELINE_LABELS
from saliency_core.errors import SaliencyError
from saliency_core.evaluation.analysis import AUTO_TARGET
from saliency_core.inputs.samples import sample_images
from saliency_core.inputs.upload_store import is_sha256
from saliency_core.models.custom_models import MAX_CLASSES
from saliency_core.models.registry import DEFAULT_MODEL, REGISTRY, LoadedModel, model_names

ACTIVE_MODEL = "active_model"  # session key of the model in use (the picker's "model" may be unavailable)


def _int_in(lo: int, hi: int) -> Callable[[str], int | None]:
    def parse(text: str) -> int | None:
        try:
            value = int(text)
        except ValueError:
            return None
        return value if lo <= value <= hi else None

    return parse


# key -> (default, parser returning the value or None when invalid)
URL_STATE: dict[str, tuple[object, Callable[[str], object]]] = {
    "model": (DEFAULT_MODEL, lambda t: t if t in REGISTRY or t in model_names() else None),
    "source": ("sample", lambda t: t if t in ("sample", "upload") else None),
    "sample": ("coffee", lambda t: t if t in {x.name for x in sample_images()} else None),
    "target": (AUTO_TARGET, _int_in(0, MAX_CLASSES - 1)),  # a custom model may have more than ImageNet's
    "method": (method_params.DEFAULT_METHOD, lambda t: t if t in method_params.methods() else None),
    "objective": ("score", lambda t: t if t in OBJECTIVE_LABELS else None),
    "reduction": ("max", lambda t: t if t in REDUCTION_LABELS else None),
    "precision": ("exact", lambda t: t if t in PRECISION_LABELS else None),
}


# What a value of each parameter must be, for the notice about a link that asks for something else.
EXPECTED = {
    "model": "a model of this dashboard",
    "source": "sample or upload",
    "sample": "one of the sample photos",
    "target": "a class index (0, 1, 2, …)",
    "objective": "score or loss",
    "reduction": "max, mean_abs or l2",
    "precision": "exact or fast",
    "image": "the sha256 of an upload (64 hexadecimal digits)",
}


def expected(key: str) -> str:
    """What a value of the link's parameter ``key`` must be (the methods as registered now)."""
    if key == "method":
        return "an attribution method (" + ", ".join(method_params.methods()) + ")"
    return EXPECTED[key]


_DEFAULT_TEXT = {"model": REGISTRY[DEFAULT_MODEL].title, "target": "the automatic target",
                 "sample": "the coffee sample", "source": "a sample photo", "method": "the plain gradient"}
_LEGACY_OBJECTIVES = ("score", "loss")  # what ?method= meant before it named the attribution method


def restore_from_url() -> list[str] | None:
    """On a session's first run, take the view from the address bar (a shared link).

    Returns one line per parameter that could not be used, saying what it
    asked for and what is shown instead; None on later runs. The values in
    them come from the link: they are escaped for Markdown. The target is
    checked here as a class index only: whether the model has that class is
    known once the model is loaded (``sidebar``).
    """
    if st.session_state.get("_url_restored"):
        return None
    st.session_state["_url_restored"] = True
    params = st.query_params.to_dict()
    if params.get("method") in _LEGACY_OBJECTIVES and "objective" not in params:
        params["objective"] = params.pop("method")  # an older link: the plain gradient's score or loss map
    problems = []
    for key, (default, parse) in URL_STATE.items():
        value = parse(params[key]) if key in params else None
        if key in params and value is None:
            problems.append(f"**{key}={plain(params[key], 80)}** is not {expected(key)}; "
                            f"showing {_DEFAULT_TEXT.get(key, plain(default))} instead.")
        st.session_state.setdefault(key, default if value is None else value)
    if is_sha256(params.get("image")):
        st.session_state["image_sha"] = params["image"]  # a link to an upload
        if "source" not in params:
            st.session_state["source"] = "upload"
    elif "image" in params:
        problems.append(f"**image={plain(params['image'], 80)}** is not {expected('image')}; "
                        "showing a sample photo instead.")
    problems += _restore_method_params(params)
    return problems


def _model_for_links() -> LoadedModel:
    """The model a link's model-dependent parameter (Grad-CAM's layer) is checked against: the link's model,
    else the default."""
    try:
        return model_cache.get_model(str(st.session_state.get("model") or DEFAULT_MODEL))
    except SaliencyError:
        return model_cache.get_model(DEFAULT_MODEL)


def _restore_method_params(params: dict[str, str]) -> list[str]:
    """The chosen method's parameters from the link; a notice for each one that can't be used."""
    method = st.session_state.get("method", method_params.DEFAULT_METHOD)
    spec = method_params.spec(method)
    known = {p.name: p for p in spec.params}
    others = {p.name for m in method_params.methods() for p in method_params.spec(m).params}
    problems = []
    for name in sorted(others - set(known)):
        if name in params:
            problems.append(f"**{name}={plain(params[name], 80)}** is not a parameter of {spec.title}; ignored.")
    for name, p in known.items():
        if name not in params:
            continue
        text = params[name]
        if (new := p.new_name(text)) is not None:  # an older name of a value (baseline=zeros)
            what = f", the {BASELINE_LABELS[new]}" if new in BASELINE_LABELS else ""
            problems.append(f"**{name}={plain(text, 80)}** is an older name: read as {name} = {new}{what}.")
            text = new
        try:
            value = method_params.parse(p, text, _model_for_links() if p.model_dependent else None)
        except (ValueError, SaliencyError):
            default = (p.none_text or f"the model's default {name}") if p.default is None else plain(p.default)
            problems.append(f"**{name}={plain(params[name], 80)}** is not {method_params.describe(p)}; "
                            f"showing {spec.title} with {name} = {default} instead.")
            continue
        st.session_state[method_params.param_key(method, name)] = value
    return problems


def current_params() -> dict[str, str]:
    """The query parameters that describe what this session shows now."""
    shown = {key: st.session_state.get(key, default) for key, (default, _) in URL_STATE.items()}
    shown["model"] = st.session_state.get(ACTIVE_MODEL, shown["model"])
    params = {key: str(value) for key, value in shown.items() if value != URL_STATE[key][0]}
    if shown["method"] in method_params.methods():
        params.update({k: str(v) for k, v in method_params.non_default(shown["method"]).items()})
    sha = st.session_state.get("image_sha")
    if st.session_state.get("source") == "upload" and sha:
        params["image"] = sha
    return params


def write_url() -> None:
    """Mirror the view into the address bar (a page's own choices, :data:`pages.ui.view_links.URL_NAMES`, stay
    as they are)."""
    params = current_params()
    params.update({k: v for k, v in st.query_params.to_dict().items() if k in view_links.URL_NAMES})
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
