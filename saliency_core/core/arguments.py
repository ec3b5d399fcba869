"""The engine's one argument check: a batch and its targets, objectives, reduction, precision, rows per pass.

Every entry point that takes them (:func:`saliency_core.core.gradients.compute_saliency`,
:func:`saliency_core.attribute`, the comparison, faithfulness and randomisation
checks, the pass-cost measurement) calls :func:`validate_request` with the
ones it takes, so a bad value gets the same ``InvalidInputError``, naming the
argument and what it must be, wherever it is passed. An argument left out is
not checked (each entry point checks only what it takes).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from saliency_core.core.model_access import validate_batch
from saliency_core.core.precision import check_precision
from saliency_core.errors import InvalidInputError

OBJECTIVES = ("score", "loss")  # what a map explains: the class score s_y or the per-image loss L
REDUCTIONS = ("max", "mean_abs", "l2")


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


#: The default of every argument of :func:`validate_request`: not given, not checked.
SKIP: Any = _Skip()


class Checked(NamedTuple):
    """What :func:`validate_request` hands back: the targets as (N,) int64 (None when no batch was given) and the
    objectives as a tuple (None when none were given)."""

    y: torch.Tensor | None
    objectives: tuple[str, ...] | None


def check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """``objectives`` as a tuple, if it is a non-empty list of distinct names from :data:`OBJECTIVES`."""
    if (not objectives or any(o not in OBJECTIVES for o in objectives)
            or len(set(objectives)) != len(objectives)):
        raise InvalidInputError(f"objectives must be distinct names from {OBJECTIVES}, got {tuple(objectives)}")
    return objectives


def validate_request(X: torch.Tensor = SKIP, y: torch.Tensor | Sequence[int] = SKIP, *,
                     objectives: Sequence[str] = SKIP, reduction: str = SKIP, precision: str = SKIP,
                     max_batch: int | None = SKIP, one_image: bool = False) -> Checked:
    """Check the arguments given, in this order; raise InvalidInputError for the first that does not fit.

    Parameters
    ----------
    X, y : (N, 3, H, W) finite float tensor and its (N,) integer targets (>= 0, or -1 for the top-1);
        given together (:func:`saliency_core.core.model_access.validate_batch`).
    one_image : X must hold exactly one image (the Methods page's comparison).
    objectives : distinct names from :data:`OBJECTIVES`.
    reduction : one of :data:`REDUCTIONS`.
    precision : one of :data:`saliency_core.core.precision.PRECISIONS`.
    max_batch : a positive integer or None.

    Returns
    -------
    :class:`Checked`: y as (N,) int64 and the objectives as a tuple, where given.
    """
    checked_y = checked_objectives = None
    if one_image and isinstance(X, torch.Tensor) and X.dim() == 4 and X.shape[0] != 1:
        raise InvalidInputError(f"X must hold one image (1, 3, H, W), got {tuple(X.shape)}")
    if X is not SKIP or y is not SKIP:
        checked_y = validate_batch(X, y)
    if objectives is not SKIP:
        checked_objectives = check_objectives(objectives)
    if reduction is not SKIP and reduction not in REDUCTIONS:
        raise InvalidInputError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if precision is not SKIP:
        check_precision(precision)
    if max_batch is not SKIP and max_batch is not None and (
            not isinstance(max_batch, numbers.Integral) or isinstance(max_batch, bool) or max_batch < 1):
        raise InvalidInputError(f"max_batch must be a positive integer or None, got {max_batch!r}")
    return Checked(checked_y, checked_objectives)
