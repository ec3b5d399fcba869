"""Old names that still work for one release, each with a DeprecationWarning that says what to write instead.

The vocabulary (README, "Glossary"): an *objective* is the score or the loss,
a *method* an attribution method, a *map* one method asked of one objective,
and a *baseline* names the image it is ("black", "blur", ...). Before that,
``methods=`` meant the objectives and the baseline "zeros" meant two different
images; those spellings are read here, warned about, and translated.
"""

from __future__ import annotations

import sys
import warnings
from typing import TypeVar

from saliency_core.errors import InvalidInputError

T = TypeVar("T")

#: Said by every warning: when the old spelling goes.
UNTIL = "it will be removed in the next release"


def warn(message: str) -> None:
    """A DeprecationWarning, attributed to the first caller outside this package: the line to change."""
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("saliency_core."):
        level, frame = level + 1, frame.f_back
    warnings.warn(f"{message} ({UNTIL})", DeprecationWarning, stacklevel=level)


def renamed_keyword(function: str, old: str, old_value: T | None, new: str, new_value: T, default: T) -> T:
    """The value of keyword ``new``, or of its old name ``old`` (with a warning) when only that was given.

    ``old_value`` None: the old keyword was not used. Both given (``new_value``
    not the ``default`` object itself) is an InvalidInputError: which one was meant is unknown.
    """
    if old_value is None:
        return new_value
    if new_value is not default:
        raise InvalidInputError(f"{function}: give {new}= only ({old}= is its old name)")
    warn(f"{function}({old}=...) is deprecated: write {function}({new}=...)")
    return old_value
