"""Sign-ins ended with "Sign out", remembered on the server until their identity cookie has expired.

Streamlit's sign-in keeps who is signed in only in the browser: the
``_streamlit_user`` cookie, the ID token's claims signed with the
``[auth]`` cookie_secret (itsdangerous), valid for 30 days plus a day's
grace on the server (Streamlit 1.67, ``AUTH_COOKIE_MAX_AGE_SECONDS``, not
configurable). "Sign out" deletes it from that browser only: a copy taken
before still signs in, because nothing on the server remembers the sign-out.

This module is that memory. :func:`sign_in_key` fingerprints one sign-in
by its claims (every copy of a cookie carries the same claims; signing in
again gets a new ID token, with a new ``iat`` and ``nonce``);
:class:`SignOuts` remembers the fingerprints of ended sign-ins for
:data:`REMEMBER_S`, longer than any cookie issued before the sign-out can
be accepted, in a JSON file, so that a restart or a second server process
using the same file still refuses them.

Never imports Streamlit; ``pages/ui/access.py`` asks it on every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from saliency_core.core.files import atomic_write

try:  # POSIX: one writer at a time across processes; elsewhere one process per file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_LOG = logging.getLogger(__name__)

# Streamlit accepts its identity cookie for 31 days after it was made (30 days' Max-Age and one of grace on
# the server); a cookie in use at sign-out was made before it, so 32 days from the sign-out outlive it.
# tests/test_sign_outs.py fails if Streamlit accepts its cookies for longer.
REMEMBER_S = 32 * 24 * 3600
_CLAIMS_NOT_OF_THE_TOKEN = ("is_logged_in", "tokens")  # added by Streamlit, not signed by the provider


def sign_in_key(claims: Mapping[str, object]) -> str:
    """The fingerprint of one sign-in: sha256 of its claims (``st.user``), in a fixed order, as hex.

    ``claims``: what Streamlit read from the identity cookie (the ID token's
    ``iss``, ``sub``, ``iat``, ``nonce``, ``email``, ...). ``is_logged_in`` and
    ``tokens`` are left out: Streamlit adds them, the provider did not sign them.
    """
    kept = {str(k): v for k, v in claims.items() if k not in _CLAIMS_NOT_OF_THE_TOKEN}
    text = json.dumps(kept, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class SignOuts:
    """Fingerprints of ended sign-ins, each until its time runs out; kept in memory and in ``path``.

    ``path``: a JSON file (``{"signed_out": {fingerprint: until}}``, Unix
    times), created with its folder; None keeps them in memory only. Every
    check compares the file's identity (inode, size, modification time) with
    the last one read and reads it again when it changed, so sign-outs made
    by another process sharing the file count at once. Writes take an
    exclusive ``flock`` on ``<path>.lock`` (POSIX), read the file again,
    add, drop what has expired and replace the file atomically: two
    processes signing out at once lose neither sign-out.

    Thread-safe. ``clock``: for tests.
    """

    def __init__(self, path: str | os.PathLike | None, *, remember_s: float = REMEMBER_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else None
        self.remember_s = remember_s
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: dict[str, float] = {}  # what this process added, kept even if the file can't be written
        self._from_file: dict[str, float] = {}
        self._seen: tuple[int, int, int] | None = None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        now = self._clock()
        with self._lock:
            self._refresh()
            until = max(self._memory.get(key, 0.0), self._from_file.get(key, 0.0))
        return until > now

    def add(self, key: str) -> None:
        """Remember ``key`` for :attr:`remember_s` from now.

        Raises ``OSError`` when the file can't be written; the key is then
        still remembered by this process until it stops.
        """
        until = self._clock() + self.remember_s
        with self._lock:
            self._memory[key] = until
            self._prune(self._memory)
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._exclusive():
                self._seen = None
                self._refresh()
                merged = {**self._from_file, key: max(until, self._from_file.get(key, 0.0))}
                self._prune(merged)
                body = json.dumps({"signed_out": merged}, sort_keys=True, indent=0).encode()
                atomic_write(self.path, body)
                self._from_file, self._seen = merged, self._identity()

    # --- the file -------------------------------------------------------------------------------

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _refresh(self) -> None:
        """Read the file again if it changed since it was last read (caller holds ``self._lock``)."""
        if self.path is None:
            return
        try:
            identity = self._identity()
        except OSError as exc:
            _LOG.error("can't read the sign-out list %s: %s", self.path, exc)
            return
        if identity == self._seen and identity is not None:
            return
        self._from_file, self._seen = ({} if identity is None else self._read()), identity

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_bytes())
            entries = data["signed_out"]
            out = {str(k): float(v) for k, v in entries.items() if isinstance(v, (int, float))}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Keep what was read before: a damaged file must not sign anyone back in.
            _LOG.error("the sign-out list %s can't be read (%s); keeping the one read before", self.path, exc)
            return dict(self._from_file)
        return out

    def _prune(self, entries: dict[str, float]) -> None:
        now = self._clock()
        for k in [k for k, until in entries.items() if until <= now]:
            del entries[k]

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
