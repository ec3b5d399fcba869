"""The shared sidebar: model, image, target, method and options; the current view; the top of analysis pages.

``dashboard.py`` calls :func:`render_sidebar` once per run, before the page;
pages call :func:`view` for the user's choices and :func:`analysis_page` for
the title, the cached analysis and the line that says what it shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import streamlit as st

from pages.ui import access, budget, caches, method_params, model_cache, navigation, url_state
from pages.ui.image_sources import ImageChoice, NoImage, image_picker
from pages.ui.labels import OBJECTIVE_LABELS, PRECISION_LABELS, REDUCTION_LABELS
from pages.ui.text import plain
from saliency_core.errors import ModelUnavailableError, SaliencyError
from saliency_core.evaluation.analysis import AUTO_TARGET, ImageAnalysis
from saliency_core.figures import provenance
from saliency_core.models.registry import DEFAULT_MODEL, LoadedModel
from saliency_core.serving import compute_cost
from saliency_core.serving.compute_cost import NOTHING, Work


@dataclass
class View:
    model: LoadedModel
    image: ImageChoice | None
    target: int  # AUTO_TARGET or a class index
    objective: str  # "score" or "loss": the map pages that show one map show
    reduction: str
    precision: str
    problem: str | None = None  # why there is no image, shown by the pages
    problem_is_error: bool = False  # an error the user caused, not a hint
    method: str = method_params.DEFAULT_METHOD  # the attribution method, a key of ATTRIBUTION_METHODS
    params: dict[str, object] = field(default_factory=dict)  # its parameters, every one (defaults included)


_MODEL_FAILED = "_model_failed"  # session key: (the chosen model that failed, its error), shown under the picker


def _model_picker() -> LoadedModel:
    """The Classifier picker: it always shows the model the pages use. A chosen model that can't be loaded
    (weights not downloadable, a broken file) puts the picker back on the model in use, with two lines on
    what failed and what to do, the details folded, and a Try again button."""
    statuses = model_cache.model_statuses()

    def label(name: str) -> str:
        s = statuses[name]
        if s.available:
            return s.title
        return f"{s.title} — download {s.size_mb:.0f} MB" if s.downloadable else f"{s.title} — unavailable"

    revert = st.session_state.pop("_model_revert", None)  # set by a failed choice, before the rerun
    if revert is not None:
        st.session_state["model"] = revert
    active = st.session_state.get(url_state.ACTIVE_MODEL, DEFAULT_MODEL)
    if active not in statuses:
        active = DEFAULT_MODEL
    if st.session_state.get("model") not in statuses:  # a custom model removed from the folder meanwhile
        st.session_state["model"] = active
    st.selectbox("Classifier", list(statuses), key="model", format_func=label, on_change=_forget_failed_choice,
                 help="Built-in models, then the team's own (custom:…, from SALIENCY_MODELS_DIR). Models whose "
                      "weights are not on this server are marked unavailable, or with their download size.")
    chosen = st.session_state.get("model") or DEFAULT_MODEL
    if chosen != active:
        status = statuses[chosen]
        try:
            if not status.available and not status.downloadable:
                raise ModelUnavailableError(f"{status.title} can't be loaded here: {status.reason}",
                                            headline=f"{status.title} can't be loaded here.", remedy=status.reason)
            model_cache.prepare_model(status)
            active = chosen
        except SaliencyError as exc:
            st.session_state[_MODEL_FAILED] = (chosen, exc)
            st.session_state[url_state.ACTIVE_MODEL] = active
            st.session_state["_model_revert"] = active
            st.rerun()  # the picker can't be set back in the run that drew it
    st.session_state[url_state.ACTIVE_MODEL] = active
    failed = st.session_state.get(_MODEL_FAILED)
    if failed is not None:
        _show_model_failure(*failed, active_title=statuses[active].title)
    model = model_cache.get_model(active)
    st.caption(f"Device: **{model.device}** · {plain(model.spec.weights)}")
    return model


def _forget_failed_choice() -> None:
    st.session_state.pop(_MODEL_FAILED, None)


def _retry(name: str) -> None:
    model_cache.forget_model_failure(name)
    st.session_state.pop(_MODEL_FAILED, None)
    st.session_state["model"] = name


def _show_model_failure(name: str, exc: SaliencyError, *, active_title: str) -> None:
    headline = getattr(exc, "headline", None) or str(exc)
    remedy = getattr(exc, "remedy", None)
    st.error(f"{plain(headline, 300)} Still using {plain(active_title)}."
             + (f"\n\n{plain(remedy, 400)}" if remedy else ""))
    if str(exc) not in (headline, f"{headline} {remedy}"):
        with st.expander("Details"):
            st.text(str(exc))
    st.button("Try again", key="retry_model", on_click=_retry, args=(name,),
              help=f"Otherwise it is tried again {model_cache.MODEL_FAILURE_MEMORY_S:.0f} s after it failed.")


def class_text(index: int, categories: Sequence[str]) -> str:
    """How the target picker lists a class: "281 · tabby"."""
    return f"{index} · {categories[index]}"


def target_index(value: object) -> int:
    """The class index the target picker's state holds. After another model was chosen it may hold the text
    of the old list's entry instead (Streamlit matches a picker's value by its text, and the texts differ
    between models): "281 · tabby" is 281; anything else ("Auto: …") is the automatic target."""
    if isinstance(value, int):
        return value
    match = re.match(r"(\d+) · ", str(value))
    return int(match.group(1)) if match else AUTO_TARGET


def kept_target(held: object, categories: Sequence[str], shown_before: str | None = None) -> tuple[int, str | None]:
    """What becomes of the target picker's state ``held`` with a model whose classes are ``categories``: the
    target to use, and what was dropped (the class as it was listed, or a link's number) when the model has
    no such class, else None. A class is kept by what it is, not by its number: after a change of model
    (``shown_before``: how the old list showed the target) class 2 "great white shark" is not the new model's
    class 2 "blue", nor is the old list's text "2 · blue" that a browser sends back."""
    target = target_index(held)
    if target == AUTO_TARGET:
        return AUTO_TARGET, None
    listed = class_text(target, categories) if 0 <= target < len(categories) else None
    was = shown_before if isinstance(held, int) else str(held)
    if listed is not None and (was is None or was == listed):
        return target, None
    return AUTO_TARGET, was or str(held)


def _settle_picker(key: str, value: object, context: object) -> None:
    """Put ``value`` into the picker ``key`` before it is drawn, when the picker holds something else or when
    ``context`` (what its entries' text depends on: the model, the method) changed since the last run.
    Streamlit matches a picker's value by its text: after such a change the browser goes on showing the old
    list's text, and sends it back on the next click, unless the value is set again."""
    context_key = f"_{key}_context"
    if st.session_state.get(key) != value or st.session_state.get(context_key) != context:
        st.session_state[key] = value
    st.session_state[context_key] = context


def _drop_target_without_class(model: LoadedModel) -> str | None:
    """Make the target automatic when ``model`` has no such class (a link made for another model, or another
    model chosen; :func:`kept_target`); returns what was dropped, else None."""
    held = st.session_state.get("target", AUTO_TARGET)
    model_changed = st.session_state.get("_target_context", model.key) != model.key
    target, dropped = kept_target(held, model.categories,
                                  st.session_state.get("_target_shown") if model_changed else None)
    _settle_picker("target", target, model.key)
    st.session_state["_target_shown"] = None if target == AUTO_TARGET else class_text(target, model.categories)
    return dropped


def objective_of(held: object) -> str:
    """The objective the Objective picker's state ``held`` names: "score" or "loss", or after a change of
    method the old method's title of one ("SmoothGrad · loss"); anything else is the score."""
    if held in OBJECTIVE_LABELS:
        return str(held)
    for method in method_params.methods():
        for objective in OBJECTIVE_LABELS:
            if held == method_params.map_title(method, objective):
                return objective
    return "score"


def _target_picker(model: LoadedModel, image: ImageChoice | None) -> int:
    # A new image resets an explicitly chosen target (a shared link sets both at once).
    key = image.key if image else None
    if "last_image" in st.session_state and st.session_state["last_image"] != key:
        st.session_state["target"] = AUTO_TARGET
    st.session_state["last_image"] = key
    cats = model.categories
    label = image.label if image else None
    auto = f"Auto: true label ({label} · {cats[label]})" if label is not None else "Auto: top-1 prediction"
    st.selectbox("Target class (type to search)", [AUTO_TARGET, *range(len(cats))], key="target",
                 format_func=lambda i: auto if i == AUTO_TARGET else class_text(i, cats))
    return int(st.session_state.get("target", AUTO_TARGET))


def render_sidebar() -> View:
    """Draw the shared sidebar; remember and return the user's choices."""
    notices = url_state.restore_from_url()  # None after the session's first run
    problem, is_error = None, False
    with st.sidebar:
        model = _model_picker()
        dropped = _drop_target_without_class(model)
        st.divider()
        try:
            image = image_picker(model)
        except NoImage as exc:
            image, problem, is_error = None, str(exc), exc.error
        st.divider()
        target = _target_picker(model, image)
        method, refused = method_params.method_picker(model)
        _settle_picker("objective", objective_of(st.session_state.get("objective", "score")), method)
        objective = st.radio("Objective", list(OBJECTIVE_LABELS), key="objective", horizontal=True,
                             format_func=lambda o: method_params.map_title(method, o),
                             help="Pages that show one map show this one; Compare shows both.")
        with st.expander("Advanced"):
            st.markdown(f"**{method_params.spec(method).title}** parameters")
            params = method_params.draw_controls(method, model)
            st.divider()
            reduction = st.selectbox("Channel reduction", list(REDUCTION_LABELS), key="reduction",
                                     format_func=REDUCTION_LABELS.get,
                                     help="How a pixel's three channel values become one: max |g| is Simonyan "
                                          "et al.'s (and cs231n's); mean |g| and the L2 norm are what other "
                                          "libraries use.")
            precision = st.selectbox("Precision", list(PRECISION_LABELS), key="precision",
                                     format_func=PRECISION_LABELS.get,
                                     help="Exact: float32 with TF32 off. Fast: float16 autocast on CUDA; "
                                          "on CPU both are float32.")
    if dropped is not None:
        count, title = len(model.categories), plain(model.spec.title)
        if notices is not None:  # a link made for another model
            notices.append(f"**target={dropped}** is not a class of {title} (0 to {count - 1}); "
                           "showing the automatic target instead.")
        else:
            st.info(f"{title} has no class {dropped} (its {count} classes are 0 to {count - 1}): the target is "
                    "automatic again.")
    if refused is not None:
        asked, why = method_params.spec(refused[0]).title, plain(refused[1], 400)
        if notices is not None:  # a link
            notices.append(f"**method={refused[0]}** can't run on {plain(model.spec.title)}: {why}; showing the "
                           "plain gradient instead.")
        else:
            st.info(f"{asked} can't run on {plain(model.spec.title)} ({why}): the method is the plain gradient "
                    "again.")
    if notices:
        st.warning("This link could not be followed in full:\n\n" + "\n".join(f"- {n}" for n in notices),
                   icon=":material/link_off:")
    url_state.write_url()
    v = View(model, image, target, objective or "score", reduction or "max", precision or "exact", problem, is_error,
             method, params)
    st.session_state["view"] = v
    return v


def end_of_run() -> None:
    """Called by dashboard.py after the page: a page that runs alone must not see this run's view."""
    st.session_state.pop("view", None)


def view() -> View:
    """The choices made in the sidebar on this run."""
    if "view" not in st.session_state:
        navigation.rerun_through_entry_script()  # this page ran alone; see pages/ui/navigation.py
    return st.session_state["view"]


#: What a page computes after the analysis, given the analysis when it is cached (else None): its work that no
#: cache holds, and what identifies it (the page's options), for :func:`pages.ui.budget.confirm`.
MoreWork = Callable[[ImageAnalysis | None], tuple[Work, tuple]]


def current_analysis(v: View | None = None, more: MoreWork | None = None) -> ImageAnalysis | None:
    """The cached analysis of the current image, or None after showing why there is none.

    Before computing anything, the analysis and the page's ``more`` work go through the budget
    (:func:`pages.ui.budget.confirm`): over it, the page shows the estimate and a button, and stops.
    """
    v = v or view()
    if v.image is None:
        (st.error if v.problem_is_error else st.info)(v.problem or "No image.")
        return None
    maps = caches.view_key(v)
    try:
        cached = caches.cached_analysis(maps)
        size = v.model.preprocessing.crop
        work = NOTHING if cached is not None else compute_cost.method_work(v.method, v.params, size=size)
        extra, options = more(cached) if more is not None else (NOTHING, ())
        budget.confirm((caches.analysis_key(maps), *options), work + extra, v.model, v.precision,
                       f"This page with {method_params.method_summary(v.method, v.params, v.model)}")
        return caches.analyse_one(maps, v.image.crop)
    except SaliencyError as exc:
        st.error(plain(exc, 1000))
        return None


def analysis_page(title: str | None, *, one_objective: bool = False,
                  more: MoreWork | None = None) -> tuple[View, ImageAnalysis]:
    """The top of a page about the current image: title, the analysis and what it shows.

    ``one_objective``: the page shows the sidebar's objective only (score or loss), so the line names it.
    ``more``: the page's own work after the analysis, for the budget (see :func:`current_analysis`);
    ``title`` None when the page drew it already (it drew its options first, to know that work).
    Stops the page (after saying why) when there is no image to analyse.
    """
    v = view()
    if title is not None:
        st.title(title)
    a = current_analysis(v, more)
    if a is None:
        st.stop()
    st.markdown(caption(a, v, v.objective if one_objective else None))
    notes = method_notes(a, v.objective if one_objective else None)
    if notes:
        st.caption(" ".join(notes))
    return v, a


def caption(a: ImageAnalysis, v: View, objective: str | None = None) -> str:
    """One line that says what a map shows: image, model, target, method and its parameters, the objective
    (when one), reduction, precision."""
    how = "true label" if a.target_auto and a.label is not None else ("top-1" if a.target_auto else "chosen")
    parts = [plain(v.image.title) if v.image else "", plain(v.model.spec.title),
             f"target **{a.target} {plain(a.target_name)}** ({how}), p = {a.target_prob:.3f}",
             f"**{method_params.method_summary(a.method, a.params)}**"]
    if objective is not None:
        parts.append(f"**{method_params.map_title(a.method, objective)}**")
    parts += [channels_text(a), f"{a.precision} precision"]
    return " · ".join(parts)


def channels_text(a: ImageAnalysis) -> str:
    """How channels became one value per pixel: the reduction, or Grad-CAM's single channel."""
    if method_params.spec(a.method).output == "layer":
        return "one channel (a layer's map, upsampled)"
    return f"{a.reduction} over RGB"


def method_notes(a: ImageAnalysis, objective: str | None = None) -> list[str]:
    """What to know when reading this method's maps: the loss's sign convention, Integrated Gradients' gap."""
    notes = []
    sign = method_params.sign_note(a.method)
    if sign and objective != "score":
        notes.append(sign)
    gap = method_params.convergence_note(a.method, a.convergence, a.params, a.steps_used, a.converged)
    if gap:
        notes.append(gap)
    return notes


def provenance_record(v: View, a: ImageAnalysis, objective: str | None = None,
                      extra: dict | None = None) -> dict:
    """What a download needs to be reproduced: image, model, target, method and its parameters, options.

    ``objective``: the map downloaded ("score" or "loss"), None for both.
    """
    return provenance.provenance(
        model_name=a.model_name, weights=v.model.spec.weights, preprocessing=v.model.preprocessing.describe(),
        target=a.target, target_name=a.target_name, objective=objective, reduction=a.reduction, precision=a.precision,
        image_sha256=v.image.key if v.image else "", image_source=v.image.source if v.image else "",
        device=str(v.model.device), image_title=v.image.title if v.image else None,
        attribution=a.method, params=a.params, convergence=a.convergence, steps_used=a.steps_used,
        converged=a.converged,
        extra={"target_probability": a.target_prob, "true_label": a.label, **_computed_by(), **(extra or {})},
    )


def _computed_by() -> dict:
    """With sign-in on, who computed a download: ``{"computed_by": {"email": ..., "name": ...}}``."""
    by = access.who()
    return {"computed_by": by} if by else {}


def csv_provenance(v: View, a: ImageAnalysis, objective: str | None = None) -> dict:
    """:func:`provenance_record` as the ``# key: <JSON>`` header of a CSV download."""
    record = provenance_record(v, a, objective)
    return {k: record[k] for k in ("model", "image", "target", "saliency", "created", "computed_by") if k in record}
