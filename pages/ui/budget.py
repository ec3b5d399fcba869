"""A computation over the server's budget asks first: the page shows its estimate and a button that starts it.

A link can ask for any view, however heavy (SmoothGrad at 256 samples on every randomisation stage is five
minutes of one of the compute slots that everyone shares). So before a page starts computing, it adds up
what no cache holds yet (:class:`saliency_core.serving.compute_cost.Work`) and calls :func:`confirm`: within the
budget (``SALIENCY_CONFIRM_ABOVE_S``, :func:`saliency_core.serving.compute_cost.confirm_above_s`) the page goes on
as it always did; over it, the page says what it would take and shows a "Compute (about N s)" button
instead of starting. Only a click in this session starts the work: a link can set every option of a view,
never the button. Once clicked, the view stays confirmed for the session (a rerun that interrupted the work,
a colour map changed meanwhile, does not ask again).

The estimate prices the rows with the model's cost per row on its device, measured once an hour per model
and precision (:func:`pass_cost`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable

import streamlit as st

from pages.ui import caches
from pages.ui.waiting import compute_queue, seconds_text, shared_or_computed
from saliency_core.evaluation import metric_table
from saliency_core.models.registry import LoadedModel
from saliency_core.serving import compute_cost
from saliency_core.serving.compute_cost import CALIBRATION_WORK, NOTHING, PassCost, Work, method_work
from saliency_core.serving.lru import LRUCache

COST_MEMORY_S = 3600  # a model's price per row is measured again after this long (the machine's load changes)
BUTTON = "confirm_compute"  # the button's widget key; its box is BUTTON + "_box"
OFFERED = "_confirm_offered"  # session key: the view the button on screen was drawn for
CONFIRMED = "_confirmed_views"  # session key: the views this session clicked "Compute" for, latest last
MAX_CONFIRMED = 32


def pass_cost(model: LoadedModel, precision: str) -> PassCost:
    """The model's seconds per row on its device (:func:`saliency_core.serving.compute_cost.measure_pass_cost`),
    measured once per :data:`COST_MEMORY_S` per model and precision, for every session.

    Measured outside the compute queue: an estimate must not wait behind the work it is meant to bound,
    and it costs a dozen rows of each kind, once an hour.
    """
    key = (model.key, str(model.device), precision, int(time.time() // COST_MEMORY_S))
    return shared_or_computed(caches.pass_costs(), key, lambda: compute_cost.measure_pass_cost(model, precision),
                              what="estimate")


def confirm(view: Hashable, work: Work, model: LoadedModel, precision: str, what: str = "This view") -> None:
    """Return when ``work`` may start now; otherwise show its estimate and the "Compute" button and stop the run.

    ``view``: everything that decides the work (a confirmation is for that view only). ``work``: what the
    page is about to compute that no cache holds. It starts at once when it is no bigger than measuring its
    price (:data:`~saliency_core.serving.compute_cost.CALIBRATION_WORK`: one image's maps by a one-pass method),
    when its estimate is within the budget, or when this session clicked the button for ``view``.
    Raises InvalidInputError (a SaliencyError) when ``SALIENCY_CONFIRM_ABOVE_S`` is not a number.
    """
    if work.within(CALIBRATION_WORK):
        return
    confirmed: list = st.session_state.setdefault(CONFIRMED, [])
    if view in confirmed:
        return
    if st.session_state.get(BUTTON) and st.session_state.get(OFFERED) == view:
        confirmed.append(view)  # the click that started this run
        del confirmed[:-MAX_CONFIRMED]
        return
    limit = compute_cost.confirm_above_s()
    seconds = pass_cost(model, precision).seconds(work)
    if seconds <= limit:
        return
    about = seconds_text(seconds)
    st.session_state[OFFERED] = view
    with st.container(key=f"{BUTTON}_box", border=True):
        st.markdown(
            f"**{what} takes about {about} of computation** on this server ({rows_text(work)}), more than it "
            f"starts without asking ({limit:g} s). While it runs it holds one of the {compute_queue().slots} "
            "compute slots that everyone using the dashboard shares. Lighter options (fewer samples, steps "
            "or stages, another method) cost less; or start it here:")
        st.button(f"Compute (about {about})", key=BUTTON, type="primary")
    st.stop()


def metrics_work(names: tuple[str, ...] | list[str], method: str, params: dict[str, object] | None,
                 size: int | tuple[int, int]) -> Work:
    """Evaluation metrics ``names`` (a shared run counted once) of one map of ``method`` with ``params``: their
    forward rows, and the method's own passes for each map they recompute."""
    cost = metric_table.metric_cost(names)
    return (Work(forward_rows=cost.forward) + method_work(method, params, size=size) * cost.attributions
            if cost.forward or cost.attributions else NOTHING)


def unless_cached(cache: LRUCache, key: Hashable | None, work: Work) -> Work:
    """``work``, unless ``cache`` holds ``key`` already (None: not known yet, so still to be computed)."""
    return work if key is None or cache.peek(key) is None else compute_cost.NOTHING


def rows_text(work: Work) -> str:
    """"2,313 passes with gradients and 120 without": the work behind an estimate, in words."""
    parts = []
    if work.gradient_rows:
        parts.append(f"{work.gradient_rows:,} image passes with gradients")
    if work.forward_rows:
        parts.append(f"{work.forward_rows:,} without" if parts else f"{work.forward_rows:,} image passes")
    return " and ".join(parts)
