"""Who may use the dashboard once sign-in is on, and the link a visitor came with; never imports Streamlit.

Sign-in itself is Streamlit's (``st.login`` against the company's OpenID
Connect provider); this module holds the decisions around it, as pure
functions the glue in ``pages/ui/access.py`` calls:

- :func:`parse_allowed` reads ``SALIENCY_ALLOWED_EMAILS``: comma-separated,
  case-insensitive ``fnmatch`` patterns such as ``*@example.com`` or
  ``alice@example.org``. Unset or blank means anyone the provider signs in.
- :func:`decide` says whether a signed-in person's claims let them in: only
  on an ``email`` claim that is present, well-formed and not marked
  ``email_verified = false`` by the provider.
- :func:`encode_return` / :func:`decode_return`: the page and query of a
  shared link, in a short-lived HMAC-signed token. Streamlit's sign-in
  always comes back to the app's home page without the query (checked on
  Streamlit 1.67), so the sign-in page keeps the link in a cookie and the
  first signed-in run opens it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

ALLOWED_EMAILS_ENV = "SALIENCY_ALLOWED_EMAILS"
RETURN_TTL_S = 600  # a sign-in that takes longer than ten minutes opens the home page instead
MAX_RETURN_PARAMS = 40  # a link of this dashboard has about a dozen
MAX_RETURN_VALUE_CHARS = 200  # the longest real value is a sha256 (64)

# One "@", something on each side, no whitespace or control characters. Quoted local parts that
# contain "@" are refused: with them, "*" could match across the "@" and a pattern's domain would
# no longer be the domain of the address.
# The same shape is asked of a pattern (with wildcards in it).
_ADDRESS = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    email: str | None  # the address matched (lower case), None when the claims have no usable one
    reason: str  # for the "not allowed" page and the server log; never shown when allowed


def parse_allowed(value: str | None) -> tuple[str, ...] | None:
    """The patterns of ``SALIENCY_ALLOWED_EMAILS``; None when unset or blank (anyone who signs in).

    ``value``: comma-separated patterns, spaces around them ignored, e.g.
    ``"*@example.com, alice@partner.org"``. Patterns are lower-cased (matching
    is case-insensitive) and each must look like an address: one ``@`` with
    something on both sides (``*@example.com``, ``*@*.example.com``, ``*``
    wildcards anywhere). Raises ``ValueError`` naming the pattern otherwise,
    so a typo closes the door instead of opening it.
    """
    if value is None or not value.strip():
        return None
    patterns = []
    for raw in value.split(","):
        p = raw.strip().lower()
        if not p:
            continue
        if not _ADDRESS.match(p):
            raise ValueError(f"{ALLOWED_EMAILS_ENV}: {raw.strip()!r} is not an address pattern "
                             "(expected e.g. *@example.com or alice@example.org)")
        patterns.append(p)
    if not patterns:
        raise ValueError(f"{ALLOWED_EMAILS_ENV} is set but names no pattern: {value!r}")
    return tuple(patterns)


def _unverified(claims: Mapping[str, object]) -> bool:
    v = claims.get("email_verified")
    return v is False or (isinstance(v, str) and v.strip().lower() == "false")


def decide(claims: Mapping[str, object], allowed: tuple[str, ...] | None) -> Decision:
    """May the person with these ID-token claims use the dashboard?

    ``allowed``: from :func:`parse_allowed`; None lets in everyone the provider
    signed in, whatever their claims. Otherwise the ``email`` claim must be a
    well-formed address, not marked unverified (``email_verified`` false;
    providers that never send the claim, such as Microsoft Entra, are taken
    at their word), and match one pattern.
    """
    raw = claims.get("email")
    email = raw.strip().lower() if isinstance(raw, str) and _ADDRESS.match(raw.strip()) else None
    if allowed is None:
        return Decision(True, email, "no allow-list: everyone who can sign in")
    if email is None:
        return Decision(False, None, "the sign-in provider sent no usable email address")
    if _unverified(claims):
        return Decision(False, email, "the sign-in provider says this email address is not verified")
    for p in allowed:
        if fnmatchcase(email, p):
            return Decision(True, email, f"matches {p}")
    return Decision(False, email, "this address is not on its allow-list")


# --- the shared link across the sign-in round trip -----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    key = hashlib.sha256(b"saliency-dashboard return link\x00" + secret.encode()).digest()
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def encode_return(page: str, query: Mapping[str, str], secret: str, *, now: float | None = None,
                  ttl_s: float = RETURN_TTL_S) -> str:
    """A token for ``page`` (a url_path, "" for the home page) and its ``query``, valid ``ttl_s`` seconds.

    Cookie-safe (URL-safe base64 and one "."); signed with ``secret`` (the
    ``[auth]`` cookie_secret) so that only this server's sign-in page can
    have made it. Parameters past :data:`MAX_RETURN_PARAMS` and longer values
    are dropped: no link of this dashboard has them.
    """
    if not secret:
        raise ValueError("secret must be a non-empty string")
    q = {str(k)[:64]: str(v) for k, v in list(query.items())[:MAX_RETURN_PARAMS]
         if len(str(v)) <= MAX_RETURN_VALUE_CHARS}
    exp = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"p": page, "q": q, "e": exp}, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def decode_return(token: str | None, secret: str, *, now: float | None = None) -> tuple[str, dict[str, str]] | None:
    """``(page, query)`` from :func:`encode_return`'s token; None if missing, forged, malformed or expired."""
    if not token or not secret or not token.isascii() or token.count(".") != 1 or len(token) > 8192:
        return None
    payload, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    page, query, exp = data.get("p"), data.get("q"), data.get("e")
    if not isinstance(page, str) or not isinstance(query, dict) or not isinstance(exp, int):
        return None
    if (time.time() if now is None else now) > exp:
        return None
    return page, {str(k): str(v) for k, v in query.items() if isinstance(v, str)}
