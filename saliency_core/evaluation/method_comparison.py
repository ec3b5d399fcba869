"""Every attribution method × objective for one image, and how much the maps agree.

The numbers behind the Methods page (the page itself only picks, calls and
draws): :func:`compare_methods` runs :func:`saliency_core.attribute` once per
method (both objectives from the same passes) and keeps each (H, W) map, the
parameters used, the completeness gap (Integrated Gradients, DeepLIFT) and the time taken;
a method that cannot run on the model (guided backprop without ReLUs,
Grad-CAM without a convolutional layer, an invalid parameter) is recorded
with its message instead of raising; :func:`gradient_comparison` makes the
plain gradient's run from an image's analysis, which already holds it.
:func:`agreement_matrix` compares every pair of maps (Spearman's ρ or the
IoU of the top 5 % pixels) and orders them so that similar maps sit
together. Faithfulness and randomisation scores of the maps are in
:mod:`saliency_core.evaluation.method_ranking`.

Never imports Streamlit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from saliency_core.core.arguments import OBJECTIVES, validate_request
from saliency_core.core.model_access import ModelLike, device_of, module_for
from saliency_core.core.precision import synchronize
from saliency_core.errors import InvalidInputError, SaliencyError
from saliency_core.evaluation.stats import _top_indices, check_map, top_count
from saliency_core.methods._common import Progress
from saliency_core.methods.integrated_gradients import GAP_WARNING
from saliency_core.methods.registry import (
    ATTRIBUTION_METHODS,
    attribute,
    explains,
    get_method,
    map_title,
    shown_by_default,
)

if TYPE_CHECKING:
    from saliency_core.evaluation.analysis import ImageAnalysis

AGREEMENT_METRICS = ("spearman", "iou_top5")
_TOP_FRACTION = {"iou_top5": 0.05}


@dataclass
class MethodRun:
    """One method's outcome in :func:`compare_methods`.

    Attributes
    ----------
    method : name in :data:`~saliency_core.ATTRIBUTION_METHODS`
    maps : objective -> (H, W) float32 >= 0 (empty when the method failed)
    attributions : objective -> (3, H, W) signed float32, Grad-CAM (1, H, W) >= 0
    params : every parameter as used, defaults included (a tensor baseline as "tensor")
    seconds : wall time of the method's :func:`attribute` call (both objectives)
    given : the parameters as given to :func:`compare_methods` (tensors kept): what
        reproduces the run, e.g. on a randomised copy of the model
    completeness_gap : Integrated Gradients and DeepLIFT only: objective -> relative gap
        (Σ attributions − (f(x) − f(x′))) / |f(x) − f(x′)|
    steps_used : Integrated Gradients only: the points on the path it took
    converged : Integrated Gradients' adaptive rule only: whether it met its tolerance
    error : why the method could not run (a SaliencyError's message), else None
    notes : things worth telling the user (e.g. a completeness gap above 10 %)
    """

    method: str
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    attributions: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    given: dict[str, object] = field(default_factory=dict)
    completeness_gap: dict[str, float] | None = None
    steps_used: int | None = None
    converged: bool | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class MethodComparison:
    """What :func:`compare_methods` found for one image.

    runs : method -> :class:`MethodRun`, in the order asked
    objectives : the objectives computed ("score", "loss")
    target : the class explained (top-1 resolved; -1 if every method failed)
    target_prob : softmax probability of the target (NaN if every method failed)
    reduction, precision : as passed to :func:`attribute`
    shape : (H, W) of every map
    """

    runs: dict[str, MethodRun]
    objectives: tuple[str, ...]
    target: int
    target_prob: float
    reduction: str
    precision: str
    shape: tuple[int, int]

    def entries(self) -> list[tuple[str, str, str, np.ndarray]]:
        """(method, objective, label, (H, W) map) of every map computed, methods in order, then objectives."""
        return [(m, obj, map_title(m, obj), run.maps[obj])
                for m, run in self.runs.items() if run.ok for obj in self.objectives]

    def by_method(self) -> dict[str, dict[str, np.ndarray]]:
        """method -> objective -> (H, W) map, for the methods that ran (the grid figure's rows)."""
        return {m: {obj: run.maps[obj] for obj in self.objectives} for m, run in self.runs.items() if run.ok}

    def maps(self) -> dict[str, np.ndarray]:
        """title (:func:`~saliency_core.methods.registry.map_title`) -> (H, W) map, for :func:`agreement_matrix`
        and the figures."""
        return {label: m for _, _, label, m in self.entries()}

    @property
    def failed(self) -> dict[str, str]:
        """method -> the message of each method that could not run."""
        return {m: run.error for m, run in self.runs.items() if not run.ok}

    def timings(self) -> pd.DataFrame:
        """One row per method: ``method, title, seconds, ok, error``."""
        return pd.DataFrame([{"method": m, "title": ATTRIBUTION_METHODS[m].title, "seconds": r.seconds,
                              "ok": r.ok, "error": r.error} for m, r in self.runs.items()],
                            columns=["method", "title", "seconds", "ok", "error"])


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    for m in methods:
        get_method(m)  # an unknown name lists the known ones
    if not methods:
        raise InvalidInputError("methods: pick at least one method")
    if len(set(methods)) != len(methods):
        raise InvalidInputError(f"methods: each method once, got {list(methods)}")
    return methods


def forward_passes(method: str, params: Mapping[str, object], size: tuple[int, int] | None = None) -> int:
    """The rows through the model a method takes per image for ``params`` (its declared cost: gradient rows and
    forward-only rows, Integrated Gradients' image and baseline included), to weigh the progress bar.
    ``size``: the image's (H, W), for a method whose passes depend on it (Occlusion); None: 224 px."""
    return get_method(method).cost(params, size).rows


def compare_methods(model: ModelLike, X: torch.Tensor, target: int, methods: Sequence[str] | None = None,
                    params: Mapping[str, Mapping[str, object]] | None = None, *, objectives: Sequence[str] = OBJECTIVES,
                    reduction: str = "max", precision: str = "exact", max_batch: int | None = None,
                    progress: Progress | None = None) -> MethodComparison:
    """Every method's score and loss maps of one image.

    Parameters
    ----------
    model : a LoadedModel or an eval-mode module, as for :func:`attribute`; never modified.
    X : (1, 3, H, W) float tensor, normalised for the model.
    target : class index, or -1 (``TOP1_TARGET``) for the model's top-1.
    methods : names from :data:`~saliency_core.ATTRIBUTION_METHODS`, each once;
        an unknown name raises InvalidInputError (listing the known ones).
        None: the methods shown by default (:func:`~saliency_core.methods.registry.shown_by_default`).
    params : method -> its parameters (missing: the defaults). Entries for
        methods not in ``methods`` are ignored; an invalid value is recorded
        as that method's error.
    objectives, reduction, precision, max_batch : as for :func:`attribute`.
    progress : ``progress(done, total)`` after each forward pass of any method,
        in rows through the model as each method declares its cost
        (:func:`forward_passes`: SmoothGrad's samples and its clean image,
        Integrated Gradients' steps, its image and its baseline), so the bar
        moves with the time.

    Returns
    -------
    :class:`MethodComparison`; methods that raised a
    :class:`~saliency_core.errors.SaliencyError` have ``error`` set and no
    maps. Any other exception (a bug) propagates.
    """
    # Caller's errors raise here; only what a method makes of this model is recorded per method.
    methods = _check_methods(shown_by_default() if methods is None else methods)
    y, objectives = validate_request(X, [target], objectives=(objectives,) if isinstance(objectives, str)
                                     else tuple(objectives), reduction=reduction, precision=precision,
                                     one_image=True)
    params = params or {}
    given = {m: dict(params.get(m) or {}) for m in methods}
    units = [forward_passes(m, given[m], tuple(X.shape[2:])) for m in methods]
    total = sum(units)
    device = device_of(module_for(model, precision))
    runs: dict[str, MethodRun] = {}
    resolved, prob = int(y[0]), math.nan
    for i, method in enumerate(methods):
        before = sum(units[:i])

        def report(done: int, of: int, before: int = before, size: int = units[i]) -> None:
            if progress is not None and of > 0:
                progress(before + min(size, round(size * done / of)), total)

        start = time.perf_counter()
        try:
            r = attribute(model, X, y, method, objectives, reduction=reduction, precision=precision,
                          max_batch=max_batch, progress=report, **given[method])
        except SaliencyError as exc:
            runs[method] = MethodRun(method, params=given[method], given=given[method], error=str(exc))
            if progress is not None:
                progress(before + units[i], total)
            continue
        synchronize(device)
        run = MethodRun(method, seconds=time.perf_counter() - start, params=dict(r.params), given=given[method],
                        maps={o: r.maps[o][0].float().cpu().numpy() for o in r.maps},
                        attributions={o: r.attributions[o][0].float().cpu().numpy() for o in r.attributions})
        if r.convergence is not None:
            run.completeness_gap = {o: float(g[0]) for o, g in r.convergence.items()}
            run.steps_used = None if r.steps_used is None else int(r.steps_used[0])
            run.converged = None if r.converged is None else bool(r.converged[0])
            run.notes += _gap_notes(method, run)
        runs[method] = run
        if resolved < 0 or math.isnan(prob):
            resolved = int(r.targets[0])
            prob = float(r.probs[0, resolved])
    return MethodComparison(runs=runs, objectives=objectives, target=resolved, target_prob=prob,
                            reduction=reduction, precision=precision, shape=(int(X.shape[2]), int(X.shape[3])))


def _gap_notes(method: str, run: MethodRun) -> list[str]:
    """What to tell about a method's completeness: Integrated Gradients' adaptive rule that stopped at its cap
    short of its tolerance, or any other gap above GAP_WARNING, per objective, with what the method says such a
    gap means (:attr:`~saliency_core.methods.declaration.AttributionMethod.gap_note`)."""
    gaps = run.completeness_gap or {}
    if run.converged is not None:
        if run.converged:
            return []
        worst = max(gaps.values(), key=abs)
        return [f"not converged: the adaptive rule stopped at its cap of {run.steps_used} steps short of its "
                f"tolerance (completeness gap up to {worst:+.0%}): allow more steps or a larger tolerance"]
    steps = run.steps_used if run.steps_used is not None else run.params.get("steps")
    where = f" at {steps} steps" if steps is not None and "steps" in run.params else ""
    note = get_method(method).gap_note
    return [f"completeness gap {gap:+.0%} for the {o} objective ({explains(method, o)}){where}"
            + (f": {note}" if note else "") for o, gap in gaps.items() if abs(gap) > GAP_WARNING]


def gradient_comparison(analysis: ImageAnalysis) -> MethodComparison:
    """The plain gradient's :func:`compare_methods` result, made from an analysis that already computed it.

    ``analysis`` : an :class:`~saliency_core.evaluation.analysis.ImageAnalysis` by the
    "gradient" method: the same forward and backward passes as
    ``compare_methods(model, X, analysis.target, ("gradient",),
    reduction=analysis.reduction, precision=analysis.precision)`` for the
    same image, so the maps, the channel gradients (the run's
    ``attributions``), the target and its probability are exactly those
    (the seconds are the analysis's). Another method's analysis raises
    InvalidInputError: its parameters as given are not known.
    """
    if analysis.method != "gradient":
        raise InvalidInputError(f"analysis: expected one by the 'gradient' method, got {analysis.method!r}")
    run = MethodRun("gradient", maps={o: analysis.maps[o] for o in OBJECTIVES},
                    attributions={o: analysis.gradients[o] for o in OBJECTIVES}, seconds=analysis.seconds)
    return MethodComparison(runs={"gradient": run}, objectives=OBJECTIVES, target=analysis.target,
                            target_prob=analysis.target_prob, reduction=analysis.reduction,
                            precision=analysis.precision, shape=tuple(analysis.maps["score"].shape))


# --------------------------------------------------------------------------- agreement


@dataclass
class AgreementMatrix:
    """Pairwise agreement of maps, and an order that puts similar maps next to each other.

    values : square DataFrame (index and columns the map labels, in the order
        given), symmetric; see :func:`agreement_matrix` for the diagonal and NaN
    order : the labels in clustered order (hierarchical clustering, average
        linkage, leaves ordered optimally)
    metric : "spearman" or "iou_top5"
    """

    values: pd.DataFrame
    order: list[str]
    metric: str

    def ordered(self) -> pd.DataFrame:
        """``values`` with rows and columns in clustered order."""
        return self.values.loc[self.order, self.order]


def _spearman_matrix(flat: list[np.ndarray]) -> np.ndarray:
    """Spearman's ρ of every pair: Pearson's r of average ranks, as ``scipy.stats.spearmanr``; NaN if constant."""
    from scipy.stats import rankdata  # imported here: scipy.stats costs ~0.5 s at start-up

    n = len(flat)
    constant = np.array([np.ptp(f) == 0 for f in flat])
    ranks = np.stack([rankdata(f) for f in flat])
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1)
    safe = np.where(constant, 1.0, norms)
    out = np.clip((ranks @ ranks.T) / np.outer(safe, safe), -1.0, 1.0)
    out[constant, :] = np.nan
    out[:, constant] = np.nan
    out[np.arange(n), np.arange(n)] = np.where(constant, np.nan, 1.0)
    return out


def _iou_matrix(flat: list[np.ndarray], fraction: float) -> np.ndarray:
    """IoU of the top ``fraction`` pixel sets of every pair (ties by row-major position, as agreement.agreement)."""
    k = top_count(fraction, flat[0].size)
    tops = [_top_indices(f, k) for f in flat]
    n = len(flat)
    out = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            inter = np.intersect1d(tops[i], tops[j], assume_unique=True).size
            out[i, j] = out[j, i] = inter / (2 * k - inter)
    return out


def cluster_order(similarity: np.ndarray) -> list[int]:
    """Indices in an order that clusters similar items: average linkage on 1 − similarity.

    NaN similarities count as 0 (distance 1: no evidence either way);
    distances are clipped to [0, 2]. Ties are broken by input position
    (scipy's linkage and ``optimal_ordering`` are deterministic), so the same
    input always gives the same order. One item gives [0]; two give [0, 1].
    """
    n = similarity.shape[0]
    if n <= 2:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    d = np.clip(1.0 - np.nan_to_num(similarity, nan=0.0), 0.0, 2.0)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(d, checks=False), "average", optimal_ordering=True))]


def agreement_matrix(maps: Mapping[str, np.ndarray], metric: str = "spearman") -> AgreementMatrix:
    """How much every pair of maps agrees, as a square matrix, with a clustered order.

    Parameters
    ----------
    maps : label -> (H, W) float array >= 0, finite, all the same shape (at least one).
    metric : "spearman" (Spearman's rank correlation ρ, in [-1, 1]) or
        "iou_top5" (IoU of the top 5 % pixel sets, in [0, 1]); the same
        numbers as :func:`saliency_core.evaluation.agreement.agreement`.

    Returns
    -------
    :class:`AgreementMatrix`. The diagonal is 1, except that Spearman's ρ
    involving a constant map (e.g. an all-zero Grad-CAM) is NaN, its
    diagonal entry included: a constant map has no ranking to agree with.
    For clustering NaN counts as ρ = 0.
    """
    if metric not in AGREEMENT_METRICS:
        raise InvalidInputError(f"metric must be one of {AGREEMENT_METRICS}, got {metric!r}")
    if len(maps) == 0:
        raise InvalidInputError("maps: expected at least one map, got none")
    labels = list(maps)
    arrays = [check_map(maps[label], f"maps[{label!r}]") for label in labels]
    shape = arrays[0].shape
    for label, a in zip(labels, arrays, strict=True):
        if a.shape != shape:
            raise InvalidInputError(f"maps[{label!r}]: expected shape {shape} like the first map, got {a.shape}")
    flat = [a.ravel() for a in arrays]
    values = _spearman_matrix(flat) if metric == "spearman" else _iou_matrix(flat, _TOP_FRACTION[metric])
    order = [labels[i] for i in cluster_order(values)]
    return AgreementMatrix(pd.DataFrame(values, index=labels, columns=labels), order, metric)
