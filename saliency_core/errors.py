"""Errors a user can cause, each with a message a person can act on.

Pages catch :class:`SaliencyError` at their edge and show its message;
anything else is a bug.
"""

from __future__ import annotations

#: This layer's rank: the lowest, it imports nothing of the package (tests/test_layers.py).
LAYER = 0


class SaliencyError(Exception):
    """Base class for every error this package raises on bad input."""


class InvalidImageError(SaliencyError, ValueError):
    """The bytes or file given are not an image we can analyse."""


class ModelUnavailableError(SaliencyError, RuntimeError):
    """A known model whose weights cannot be loaded on this machine now.

    ``str(exc)`` is the whole story (what failed, the library's words, where
    a file goes). A page short of room shows ``headline`` (what failed, one
    line) and ``remedy`` (what to do, one line, or None) and folds the rest.
    """

    def __init__(self, message: str, *, headline: str | None = None, remedy: str | None = None) -> None:
        super().__init__(message)
        self.headline = headline or message
        self.remedy = remedy


class ModelOutputError(ModelUnavailableError):
    """A loaded model that raised, or returned unusable logits (wrong shape, NaN), on the images it was given.

    A kind of ModelUnavailableError: the fault is the model's (its file, or
    its sidecar's classes), not the image's or the options', and the fix is
    on the model's side; the load check only runs a black and a grey image,
    so a model can pass it and still fail on real ones.
    """


class UnknownModelError(SaliencyError, ValueError):
    """A model name that is not in the registry."""


class InvalidInputError(SaliencyError, ValueError):
    """Tensors, targets or options that do not fit the model."""


class UnknownSampleError(SaliencyError, ValueError):
    """A sample photo name that is not bundled (or the samples' package is missing)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text (its type when it has none), at most ``limit`` characters:
    what a one-line message quotes of a library's error."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
