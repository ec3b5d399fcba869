"""The attribution method and its parameters, built from ``ATTRIBUTION_METHODS``: the grouped choice of a
method, controls, limits, links, labels.

The sidebar's Method choice (:func:`method_picker`) is grouped by the methods'
families (``AttributionMethod.family``): a Family select, then the family's
methods by their titles, each method's paper in the select's help and the
chosen one's under it. Only the methods the model can run are offered
(:mod:`saliency_core.methods.model_needs`); a note names the others and why.

Every method's parameters come from its own declaration (``Param``, in
``saliency_core/methods/<name>.py``): numbers get number inputs with the
declared minimum and maximum (the batch job's cap too), strings with choices
get selects, and a parameter whose choices depend on the model (Grad-CAM's
layer: ``Param.choices_for``) a select of this model's choices with its
default first. Each parameter lives in ``st.session_state[param_key(method, name)]``,
so every method keeps its own values, and in the URL by its name while its
method is the one shown (``?method=smoothgrad&samples=16&seed=3``).
"""

from __future__ import annotations

import math

import streamlit as st

from pages.ui.labels import FAMILY_LABELS, OBJECTIVE_LABELS
from pages.ui.text import plain
from saliency_core.figures.provenance import describe_params
from saliency_core.methods import model_needs, registry
from saliency_core.methods.declaration import FAMILIES, AttributionMethod, Param
from saliency_core.methods.integrated_gradients import GAP_WARNING
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from saliency_core.models.registry import LoadedModel

DEFAULT_METHOD = "gradient"  # the cs231n map; every other method is one choice away
FAMILY_KEY = "method_family"  # session key of the Family select; the method ("method") decides it


def methods() -> list[str]:
    """Every method's name, the plain gradient first, then as the registry lists them (read on every call, so a
    method registered meanwhile is offered too)."""
    return list(ATTRIBUTION_METHODS)


def spec(method: str) -> AttributionMethod:
    return ATTRIBUTION_METHODS[method]


def method_label(method: str) -> str:
    """"SmoothGrad (Smilkov et al. 2017)": the method as its paper names it."""
    s = spec(method)
    return f"{s.title} ({s.citation})"


def method_line(method: str) -> str:
    """"**SmoothGrad** (Smilkov et al. 2017): the mean signed gradient at …": one line on a method and its paper."""
    s = spec(method)
    return f"**{plain(s.title)}** ({plain(s.citation)}): {plain(s.summary)}"


def family_label(family: str) -> str:
    """How the Family select names a family ("Path integral"); its key for a family without a label."""
    return FAMILY_LABELS.get(family, family)


def refused(model: LoadedModel) -> dict[str, str]:
    """The methods ``model`` can't run, each with why (:func:`saliency_core.methods.model_needs.why_not`)."""
    return {m: why for m in methods() if (why := model_needs.why_not(spec(m), model))}


def refusals(refused: dict[str, str]) -> str:
    """The methods a model can't run, in words, those refused for one reason together: "DeepLIFT (it needs …);
    Grad-CAM, LayerCAM (they need a convolutional layer …)". Plain text, safe as Markdown."""
    groups: dict[str, list[str]] = {}
    for method, why in refused.items():
        groups.setdefault(why, []).append(spec(method).title)
    parts = []
    for why, titles in groups.items():
        if len(titles) > 1 and why.startswith("it needs "):
            why = "they need " + why.removeprefix("it needs ")
        parts.append(f"{plain(', '.join(titles))} ({plain(why, 400)})")
    return "; ".join(parts)


def offered_by_family(model: LoadedModel) -> dict[str, list[str]]:
    """The methods ``model`` can run, grouped by family (:func:`saliency_core.methods.registry.by_family`'s order),
    families with none left out."""
    no = refused(model)
    groups = {family: [m for m in names if m not in no] for family, names in registry.by_family().items()}
    return {family: names for family, names in groups.items() if names}


def _family_chosen(groups: dict[str, list[str]]) -> None:
    """The Family select changed: show the method last chosen in that family, else its first."""
    family = st.session_state.get(FAMILY_KEY)
    names = groups.get(family or "", [])
    if names and st.session_state.get("method") not in names:
        last = st.session_state.get(f"_last_method.{family}")
        st.session_state["method"] = last if last in names else names[0]


def method_picker(model: LoadedModel) -> tuple[str, tuple[str, str] | None]:
    """Draw the Method choice (in the current container), grouped by family; return the method, and when the
    one asked for (by a link, or chosen with another model) can't run on ``model``: (it, why), else None.

    The method lives in ``st.session_state["method"]`` (and ``?method=NAME``); the Family select follows it.
    A method ``model`` can't run is not offered: the plain gradient is shown instead, and a caption names the
    methods left out and why.
    """
    no = refused(model)
    groups = offered_by_family(model)
    asked = st.session_state.get("method", DEFAULT_METHOD)
    dropped = (asked, no[asked]) if asked in no else None
    if asked not in ATTRIBUTION_METHODS or asked in no:
        st.session_state["method"] = asked = DEFAULT_METHOD
    family = spec(asked).family
    st.session_state[FAMILY_KEY] = family
    st.selectbox("Method family", list(groups), key=FAMILY_KEY, format_func=family_label, on_change=_family_chosen,
                 args=(groups,), help="\n".join(f"- **{plain(family_label(f))}**: {FAMILIES.get(f, '')}"
                                                for f in groups))
    method = st.selectbox("Method", groups[family], key="method", format_func=lambda m: spec(m).title,
                          help="\n".join(f"- {method_line(m)}" for m in groups[family])
                          + "\n\nIts parameters are under Advanced.") or DEFAULT_METHOD
    st.session_state[f"_last_method.{family}"] = method
    s = spec(method)
    st.caption(f"{plain(s.citation)}: {plain(s.summary)}")
    if no:
        st.caption(f"Not offered for {plain(model.spec.title)}: {refusals(no)}.")
    return method, dropped


def many_passes(method: str, params: dict[str, object] | None = None) -> bool:
    """Whether the method takes more than one pass per image with ``params`` (its declared cost): such a
    computation draws a progress bar with the time left."""
    return spec(method).cost(params).rows > 1


def param_key(method: str, name: str) -> str:
    """The session-state key of one method's parameter (each method keeps its own values)."""
    return f"param.{method}.{name}"


def upper_bound(p: Param) -> float | None:
    """The most one view may ask of ``p`` (its declared maximum, the batch job's cap too); the engine itself has
    no upper limit."""
    return p.maximum


def model_options(p: Param, model: LoadedModel) -> list[str | None]:
    """A model-dependent parameter's choices for ``model``: None (the model's default) first, then the others
    (``Param.choices_for``, e.g. every convolution on the path to the output for Grad-CAM's layer)."""
    default = p.default_for(model) if p.default_for else None
    return [None, *(name for name in _model_choices(p, model) if name != default)]


@st.cache_data(max_entries=16, show_spinner=False)
def _choices(method: str, name: str, model_key: tuple, _p: Param, _model: LoadedModel) -> list[str]:
    return list(_p.choices_for(_model))


def _model_choices(p: Param, model: LoadedModel) -> list[str]:
    """``p.choices_for(model)``, computed once per model (it may run the model: Grad-CAM's layers do)."""
    owner = next((m.name for m in ATTRIBUTION_METHODS.values() if p in m.params), "")
    return _choices(owner, p.name, model.key, p, model)


def describe(p: Param) -> str:
    """What a value of ``p`` must be on this dashboard, for a notice about a link."""
    if p.choices:
        return "one of " + ", ".join(p.choices)
    if p.model_dependent:
        return p.choices_text or "one of this model's choices"
    what = {int: "an integer", float: "a number"}[p.kind]
    lo, hi = p.minimum, upper_bound(p)
    if lo is not None and hi is not None:
        return f"{what} from {lo:g} to {hi:g} (the dashboard's limit)"
    if lo is not None:
        return f"{what} >= {lo:g}"
    return what


def parse(p: Param, text: str, model: LoadedModel) -> object:
    """The value a URL's ``text`` asks for, or raise ValueError when it is not one this dashboard takes."""
    if p.none_ok and text in ("", "default", "None"):
        return None
    if p.model_dependent:
        if text == (p.default_for(model) if p.default_for else None):
            return None
        if text in _model_choices(p, model):
            return text
        raise ValueError(text)
    if p.kind is int:
        value: object = int(text)
    elif p.kind is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
    else:
        value = text
    value = p.check(value)  # the registry's own rule (kind, choices, minimum); InvalidInputError is a ValueError
    hi = upper_bound(p)
    if hi is not None and value > hi:
        raise ValueError(text)
    return value


def params_for(method: str) -> dict[str, object]:
    """The method's parameters as this session has them (defaults where unset)."""
    return {p.name: st.session_state.get(param_key(method, p.name), p.default) for p in spec(method).params}


def non_default(method: str) -> dict[str, object]:
    """The parameters that differ from the registry's defaults (what a link needs to carry)."""
    return {p.name: v for p in spec(method).params
            if (v := st.session_state.get(param_key(method, p.name), p.default)) != p.default}


def cache_key(params: dict[str, object]) -> tuple:
    """Parameters as a hashable, order-independent key for the caches."""
    return tuple(sorted(params.items()))


def draw_controls(method: str, model: LoadedModel) -> dict[str, object]:
    """The method's parameters as controls (in the current container); returns their values."""
    s = spec(method)
    if not s.params:
        st.caption(f"{s.title} has no parameters.")
    for p in s.params:
        key = param_key(method, p.name)
        st.session_state.setdefault(key, p.default)
        if p.model_dependent:
            options = model_options(p, model)
            if st.session_state[key] not in options:
                st.session_state[key] = None
            default = (p.default_for(model) if p.default_for else None) or "none registered"
            st.selectbox(p.name.capitalize(), options, key=key, persist_state="session", help=p.help,
                         format_func=lambda x, d=default: f"default ({d})" if x is None else x)
        elif p.choices:
            st.selectbox(p.name.capitalize(), list(p.choices), key=key, persist_state="session", help=p.help)
        elif p.kind is int:
            hi = upper_bound(p)
            # None (a parameter that may be left empty: Integrated Gradients' steps) shows as an empty box
            # that says what it stands for.
            st.number_input(p.name.capitalize(), min_value=int(p.minimum) if p.minimum is not None else None,
                            max_value=int(hi) if hi is not None else None, step=1, key=key,
                            placeholder=p.default_text if p.none_ok else None,
                            persist_state="session", help=p.help + _limit_help(p) + _none_help(p))
        else:
            hi = upper_bound(p)
            st.number_input(p.name.capitalize(), min_value=float(p.minimum) if p.minimum is not None else None,
                            max_value=float(hi) if hi is not None else None, step=0.05, format="%.3f", key=key,
                            persist_state="session", help=p.help + _limit_help(p))
    return params_for(method)


def _none_help(p: Param) -> str:
    """What an empty box means, for a control's help."""
    return f"; empty: {p.default_text}" if p.none_ok and p.default is None and not p.model_dependent else ""


def _limit_help(p: Param) -> str:
    """The cap of a parameter that costs passes (samples, steps), for its control's help."""
    hi = upper_bound(p)
    return f" (at most {hi:g} here)" if hi is not None and p.costly else ""


# --------------------------------------------------------------------------- what the pages say


def map_title(method: str, objective: str) -> str:
    """One map's title on the pages: the plain gradient's by its cs231n name ("Score gradient  ∂s_y/∂x"), any
    other method's as everywhere else (:func:`saliency_core.methods.registry.map_title`: "Grad-CAM · loss −L")."""
    if method == DEFAULT_METHOD:
        return OBJECTIVE_LABELS[objective]
    return registry.map_title(method, objective)


def sign_note(method: str) -> str | None:
    """What the loss map's sign means, where the method uses −L; that the two maps are one, for a method without
    a target (attention rollout); None where neither applies."""
    if not spec(method).uses_target:
        return f"{spec(method).title} has no target: its score and loss maps are the same map."
    if spec(method).loss_objective == "-L":
        return "Loss as −L: positive = evidence for the target."
    return None


def convergence_note(method: str, convergence: dict[str, float] | None, params: dict[str, object],
                     steps_used: int | None = None, converged: bool | None = None) -> str | None:
    """A method's completeness gap per map, in words, with how it was computed (steps and rule, or samples) and
    what the method says about a gap above GAP_WARNING
    (:attr:`~saliency_core.methods.declaration.AttributionMethod.gap_note`);
    None for a method that reports no gap.

    The adaptive rule says whether it met its tolerance; one that stopped at its cap short of it says so first,
    in bold: the one thing about such a map a reader must not miss."""
    if not convergence:
        return None
    gaps = ", ".join(f"{m} {abs(g) * 100:.1f} %" for m, g in convergence.items())
    what = "Completeness gap (|Σ attributions − (f(x) − f(x′))| / |f(x) − f(x′)|)"
    steps = steps_used if steps_used is not None else params.get("steps")
    if params.get("rule") == "adaptive" and converged is not None:
        tolerance = f"{float(params.get('tolerance', 0.0)) * 100:g} %"
        if converged:
            return f"{what}: {gaps} after {steps} steps, within the {tolerance} tolerance (adaptive rule)."
        return (f"**Not converged:** the adaptive rule stopped at its cap of {params.get('steps')} steps short of "
                f"the {tolerance} tolerance, so the attributions need not add up to f(x) − f(x′). {what}: {gaps}; "
                "allow more steps or a larger tolerance.")
    how = (f" at {steps} steps" if "steps" in params else "") + (f" ({params['rule']} rule)" if "rule" in params
                                                                 else "")
    if "samples" in params:
        how += f" over {params['samples']} samples"
    # What reduces the gap, where it is worth reducing (the engine's warning threshold).
    note = spec(method).gap_note if max(abs(g) for g in convergence.values()) > GAP_WARNING else ""
    return f"{what}: {gaps}{how}" + (f"; {note}." if note else ".")


def method_summary(method: str, params: dict[str, object], model: LoadedModel | None = None) -> str:
    """"SmoothGrad (Smilkov et al. 2017; samples=25, noise=0.15, seed=0)": the method and its parameters.

    A model-dependent parameter left at None (Grad-CAM's layer: the model's default) is named by the value it
    stands for with ``model`` ("layer=_blocks.15"), else "default", never "None".
    """
    s = spec(method)
    params = dict(params)
    for p in s.params:
        if p.model_dependent and p.name in params and params[p.name] is None:
            params[p.name] = (p.default_for(model) if model is not None and p.default_for else None) or "default"
    used = describe_params(params)
    return f"{s.title} ({s.citation}{'; ' + used if used else ''})"


def hover_prefix(method: str) -> str:
    """How hover names the per-channel values: gradients as ∂/∂R, other methods' attributions as "attr R"."""
    return "∂/∂" if method == DEFAULT_METHOD else "attr "
