"""Giving freed memory back to the operating system, so a long-running server does not keep its peaks.

A 39-megapixel upload decodes to about 117 MB, and the decoders make a few
copies on the way. glibc serves large blocks from its heaps once it has seen
a few freed (its mmap threshold grows up to 32 MB), and freed heap memory
stays with the process: after 50 such uploads the dashboard held 1.2 GB it no
longer used. :func:`release_freed_memory` hands freed heap pages back after a
large decode. (Making every block over 1 MB a mapping of its own instead
slowed the gradients 1.5x: torch's activations are such blocks.) It does
nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 -- glibc has it; musl has not
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> bool:
    """Return free heap memory to the operating system (``malloc_trim(0)``); True when glibc did it."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0) >= 0)
