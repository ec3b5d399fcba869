"""Weights on demand: one checkpoint file, downloaded once, whole or not at all.

:func:`download` streams a URL to a temporary file beside the destination,
checks its size against ``Content-Length`` and, when the file name carries
one, the sha256 prefix (torchvision's ``squeezenet1_1-b8a52dc0.pth``: the
first 8 hex digits of the file's sha256), then renames it into place
(``os.replace``, atomic on one file system). Whatever fails (network, a
connection dropped halfway, a wrong size or hash), the temporary file is
removed and :class:`~saliency_core.errors.ModelUnavailableError` says what
happened and which file to copy where instead. A process killed outright
(SIGKILL, power cut) can't remove its ``.NAME.*.part`` file: the next download
of NAME removes those not written for :data:`STALE_PART_S`.

Settings (environment variables, read at each call):

``SALIENCY_ALLOW_DOWNLOAD``  ``1`` (default) or ``0``: may the server fetch weights at all.
``SALIENCY_WEIGHTS_URL``     base URL to fetch from instead of the one torchvision names
                             (a mirror, or 127.0.0.1 in the tests); the file name is appended.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from saliency_core.errors import ModelUnavailableError

ALLOW_ENV = "SALIENCY_ALLOW_DOWNLOAD"
URL_ENV = "SALIENCY_WEIGHTS_URL"
CHUNK = 1 << 20
TIMEOUT_S = 30.0  # per socket operation, not for the whole file
# A part file untouched this long is a dead download's: a live one writes each CHUNK as it arrives (1 MiB in
# 5 minutes is 3.5 KB/s, hours for any checkpoint) and fails after TIMEOUT_S without a byte.
STALE_PART_S = 300.0

Progress = Callable[[int, int], None]  # (bytes done, bytes in all; 0 when unknown)

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def downloads_allowed() -> bool:
    """``SALIENCY_ALLOW_DOWNLOAD`` is not 0/false/no/off (default: allowed)."""
    return os.environ.get(ALLOW_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def weights_url(url: str) -> str:
    """``url``, or the same file name under ``SALIENCY_WEIGHTS_URL`` when that is set."""
    base = os.environ.get(URL_ENV, "").strip()
    if not base:
        return url
    return base.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def sha256_prefix(file_name: str) -> str | None:
    """The hex sha256 prefix a torchvision-style name carries (``resnet18-f37072fd.pth`` -> f37072fd), or None."""
    m = _HASH_IN_NAME.search(file_name)
    return m.group(1) if m else None


def _lock_for(path: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(path, threading.Lock())


def download(url: str, dest: str, *, progress: Progress | None = None, timeout: float = TIMEOUT_S) -> str:
    """Fetch ``url`` into ``dest`` (a file path) unless it is there already; return ``dest``.

    Two callers asking for the same file in one process wait for one
    download. ``progress(done, total)`` is called as bytes arrive.

    Raises
    ------
    ModelUnavailableError : the download failed, was cut short or is not the
        expected file; nothing is left at ``dest`` or beside it.
    """
    name = os.path.basename(dest)
    folder = os.path.dirname(dest) or "."
    with _lock_for(os.path.abspath(dest)):
        if os.path.isfile(dest):
            return dest
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ModelUnavailableError(f"can't create the checkpoint folder {folder}: {exc.strerror or exc}") from exc
        remove_stale_parts(folder, name)
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        except OSError as exc:  # a read-only cache folder (common in containers)
            raise ModelUnavailableError(f"can't write into the checkpoint folder {folder} ({exc.strerror or exc}); "
                                        f"copy {name} from {url} there by hand") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                got, total, digest = _fetch(url, out, progress, timeout)
            if total and got != total:
                raise ModelUnavailableError(f"downloading {name} from {url} stopped after {got} of {total} bytes")
            expected = sha256_prefix(name)
            if expected and not digest.startswith(expected):
                raise ModelUnavailableError(
                    f"the file downloaded from {url} is not {name}: its sha256 starts with {digest[:len(expected)]}, "
                    f"not {expected}")
            try:
                os.replace(tmp, dest)
            except OSError as exc:
                raise ModelUnavailableError(f"can't put {name} into {folder} ({exc.strerror or exc}); "
                                            f"copy it from {url} there by hand") from exc
        except BaseException:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
            raise
    return dest


def remove_stale_parts(folder: str, name: str) -> None:
    """Delete the ``.NAME.*.part`` files in ``folder`` that no download has written for :data:`STALE_PART_S`.

    Those are left by a process killed mid-download (SIGKILL runs no clean-up).
    A download still running, in this process or another (a torchrun rank, a
    second server), writes its part file as bytes arrive, so its file is never
    that old. Files of other names are never touched.
    """
    now = time.time()
    pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.part")
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not pattern.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_PART_S:
                        os.remove(entry.path)
                except OSError:  # gone meanwhile, or not ours to remove: the download goes on regardless
                    pass
    except OSError:  # an unreadable folder: mkstemp will say what is wrong
        pass


def _fetch(url: str, out, progress: Progress | None, timeout: float) -> tuple[int, int, str]:
    """Stream ``url`` into the open file ``out``: (bytes written, Content-Length or 0, sha256 hex)."""
    name = url.rsplit("/", 1)[-1]
    digest = hashlib.sha256()
    got = total = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            if progress is not None:
                progress(0, total)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(got, total)
    except urllib.error.HTTPError as exc:
        raise ModelUnavailableError(f"downloading {name} from {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # http.client.IncompleteRead (a connection dropped halfway) is an HTTPException, not an OSError
        reason = getattr(exc, "reason", None) or exc
        raise ModelUnavailableError(f"downloading {name} from {url} failed after {got} bytes: {reason}") from exc
    except Exception as exc:  # http.client.HTTPException and its kind
        raise ModelUnavailableError(
            f"downloading {name} from {url} failed after {got} bytes: {type(exc).__name__}: {exc}") from exc
    return got, total, digest.hexdigest()
