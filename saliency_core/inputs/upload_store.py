"""A content-addressed folder of uploaded images, so a shared link can find them.

A link to an uploaded image carries its sha256; a colleague's server session
finds the bytes here. The folder has a size cap and a retention period and
can be turned off. Configuration comes from environment variables (see
:meth:`UploadStore.from_env`), so a team server is set up without code.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from saliency_core.core.files import atomic_write

_SHA = re.compile(r"[0-9a-f]{64}")

DEFAULT_DIR = Path.home() / ".cache" / "saliency-dashboard" / "uploads"


def is_sha256(value: object) -> bool:
    """True for a 64-character lower-case hex string (never a path)."""
    # fullmatch: "$" alone would also accept a trailing newline.
    return isinstance(value, str) and _SHA.fullmatch(value) is not None


@dataclass
class StoredImage:
    data: bytes
    meta: dict


class UploadStore:
    """Keeps uploaded bytes under ``root/<sha256>`` with a JSON sidecar.

    Parameters
    ----------
    root : folder to keep files in (created on first use)
    max_bytes : total size cap; the least recently used files go first when
        exceeded, but never one used in the last ``in_use_s`` seconds (a live
        session's image, a link just opened): the cap yields to them
    retention_s : files not used for this long are removed (a use, an upload
        or a link opened, restarts the clock)
    in_use_s : how recent a use protects a file from the size cap
    enabled : False keeps nothing (links to uploads then only work in the
        uploader's own session)
    """

    def __init__(self, root: str | os.PathLike | None = None, *, max_bytes: int = 500 * 1024 * 1024,
                 retention_s: float = 7 * 24 * 3600, enabled: bool = True, in_use_s: float = 3600) -> None:
        self.root = Path(root) if root is not None else DEFAULT_DIR
        self.max_bytes = int(max_bytes)
        self.retention_s = float(retention_s)
        self.enabled = bool(enabled)
        self.in_use_s = float(in_use_s)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> UploadStore:
        """Read ``SALIENCY_UPLOAD_DIR``, ``SALIENCY_UPLOAD_MAX_MB`` (default 500),
        ``SALIENCY_UPLOAD_RETENTION_DAYS`` (default 7) and ``SALIENCY_UPLOAD_STORE``
        ("0"/"off"/"false" turns the store off)."""
        env = os.environ if environ is None else environ
        enabled = env.get("SALIENCY_UPLOAD_STORE", "1").strip().lower() not in {"0", "off", "false", "no"}
        return cls(
            env.get("SALIENCY_UPLOAD_DIR") or None,
            max_bytes=int(float(env.get("SALIENCY_UPLOAD_MAX_MB", "500")) * 1024 * 1024),
            retention_s=float(env.get("SALIENCY_UPLOAD_RETENTION_DAYS", "7")) * 24 * 3600,
            enabled=enabled,
        )

    def _path(self, sha: str) -> Path:
        if not is_sha256(sha):
            raise ValueError(f"not a sha256: {sha!r}")
        return self.root / sha

    def put(self, sha: str, data: bytes, meta: dict | None = None) -> bool:
        """Keep ``data`` (whose sha256 is ``sha``) with its metadata; False when disabled or failed."""
        if not self.enabled:
            return False
        path = self._path(sha)
        with self._lock:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    atomic_write(path, data)
                atomic_write(path.with_suffix(".json"), json.dumps(meta or {}).encode())
                os.utime(path)  # a fresh upload of a kept file restarts its retention
                self._prune_locked()
            except OSError:
                return False
        return path.exists()

    def get(self, sha: str) -> StoredImage | None:
        """The kept bytes and metadata, or None when unknown, expired or disabled."""
        if not self.enabled or not is_sha256(sha):
            return None
        path = self._path(sha)
        try:
            if time.time() - path.stat().st_mtime > self.retention_s:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        self._used(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            meta = {}
        return StoredImage(data, meta if isinstance(meta, dict) else {})

    @staticmethod
    def _used(path: Path) -> None:
        # The file's mtime is its last use. Written at most once a minute: every rerun of every page asks.
        try:
            if time.time() - path.stat().st_mtime > 60:
                os.utime(path)
        except OSError:
            pass

    def _prune_locked(self) -> None:
        """Drop expired files, then the oldest until the folder fits the cap; the caller holds ``_lock``."""
        if not self.root.is_dir():
            return
        now = time.time()
        files = []
        for p in self.root.iterdir():
            if not is_sha256(p.name):
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort()
        total = sum(size for _, size, _ in files)
        for mtime, size, p in files:  # least recently used first
            expired = now - mtime > self.retention_s
            if not expired and (total <= self.max_bytes or now - mtime <= self.in_use_s):
                continue
            for q in (p, p.with_suffix(".json")):
                q.unlink(missing_ok=True)
            total -= size
