"""Who may use the dashboard once sign-in is on, and the link a visitor came with; never imports Streamlit.

Sign-in itself is Streamlit's (``st.login`` against the company's OpenID
Connect provider); this module holds the decisions around it, as pure
functions the glue in ``pages/ui/access.py`` calls:

- :func:`parse_allowed` reads ``SALIENCY_ALLOWED_EMAILS``: comma-separated,
  case-insensitive ``fnmatch`` patterns such as ``*@example.com`` or
  ``alice@example.org``. Unset or blank means anyone the provider signs in.
- :func:`decide` says whether a signed-in person's claims let them in: only
  on an ``email`` claim that is present and well-formed, with an
  ``email_verified`` that is ``true`` (or absent: Microsoft Entra never sends
  it), and that matches a pattern as written: addresses are compared after
  Unicode normalisation (NFC), and one with characters outside ASCII only
  matches a pattern that has such characters too, so that a look-alike
  (``\u212aate@…`` with a Kelvin sign, which ``str.lower`` turns into
  ``kate@…``) is not let in under an ASCII address.
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
import unicodedata
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
    email: str | None  # the address (ASCII letters lower-cased), None when the claims have no usable one
    reason: str  # for the "not allowed" page and the server log; never shown when allowed


def parse_allowed(value: str | None) -> tuple[str, ...] | None:
    """The patterns of ``SALIENCY_ALLOWED_EMAILS``; None when unset or blank (anyone who signs in).

    ``value``: comma-separated patterns, spaces around them ignored, e.g.
    ``"*@example.com, alice@partner.org"``. Patterns are compared without
    regard to case (see :func:`decide`) and each must look like an address:
    one ``@`` with something on both sides (``*@example.com``,
    ``*@*.example.com``, ``*`` wildcards anywhere). Raises ``ValueError``
    naming the pattern otherwise, so a typo closes the door instead of
    opening it.
    """
    if value is None or not value.strip():
        return None
    patterns = []
    for raw in value.split(","):
        p = _comparable(raw.strip())
        if not p:
            continue
        if not _ADDRESS.match(p):
            raise ValueError(f"{ALLOWED_EMAILS_ENV}: {raw.strip()!r} is not an address pattern "
                             "(expected e.g. *@example.com or alice@example.org)")
        if _outside_ascii(raw) and not _outside_ascii(p):
            # A Kelvin sign written for "K": the pattern would silently become an ASCII one.
            raise ValueError(f"{ALLOWED_EMAILS_ENV}: {raw.strip()!r} has characters that stand for ASCII ones "
                             f"({_outside_ascii(raw)}); write them as ASCII")
        patterns.append(p)
    if not patterns:
        raise ValueError(f"{ALLOWED_EMAILS_ENV} is set but names no pattern: {value!r}")
    return tuple(patterns)


def _comparable(text: str) -> str:
    """``text`` as addresses and patterns are compared: Unicode NFC, then lower case.

    NFC makes two spellings of one character equal (``é`` and ``e`` + combining
    acute) but keeps look-alikes from other scripts apart. It also turns the
    Kelvin sign (U+212A) into ``K``: whether the provider's address was plain
    ASCII is therefore decided on the address as sent (:func:`_outside_ascii`).
    """
    return unicodedata.normalize("NFC", text).lower()


def _outside_ascii(text: str) -> str:
    """The characters of ``text`` outside ASCII, as code points ("U+212A KELVIN SIGN"); "" when none."""
    found = dict.fromkeys(c for c in text if not c.isascii())
    return ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '(unnamed)')}" for c in found)


def _shown(address: str) -> str:
    """An address as shown and recorded: ASCII letters lower-cased, every other character as sent."""
    return "".join(c.lower() if c.isascii() else c for c in address)


def _verification(claims: Mapping[str, object]) -> bool | None:
    """``email_verified``: True only for JSON ``true`` or the string "true"; None when the claim is absent.

    Anything else (``false``, ``0``, ``"no"``, ``null``, ``1``) is not a
    provider saying yes, so it counts as unverified.
    """
    if "email_verified" not in claims:
        return None
    v = claims["email_verified"]
    return v is True or (isinstance(v, str) and v.strip().lower() == "true")


def decide(claims: Mapping[str, object], allowed: tuple[str, ...] | None) -> Decision:
    """May the person with these ID-token claims use the dashboard?

    ``allowed``: from :func:`parse_allowed`; None lets in everyone the provider
    signed in, whatever their claims. Otherwise the ``email`` claim must be a
    well-formed address, verified (``email_verified`` true; providers that
    never send the claim, such as Microsoft Entra, are taken at their word)
    and match one pattern (``fnmatch``, case-insensitive, after Unicode NFC).
    An address with characters outside ASCII is matched only by patterns
    that have such characters themselves: an ASCII pattern never lets in a
    look-alike of an address it names.
    """
    raw = claims.get("email")
    raw = raw.strip() if isinstance(raw, str) else ""
    email = _shown(raw) if _ADDRESS.match(raw) else None
    if allowed is None:
        return Decision(True, email, "no allow-list: everyone who can sign in")
    if email is None:
        return Decision(False, None, "the sign-in provider sent no usable email address")
    if _verification(claims) is False:
        return Decision(False, email, "the sign-in provider does not say that this email address is verified")
    unusual = _outside_ascii(raw)
    candidates = [p for p in allowed if bool(_outside_ascii(p)) == bool(unusual)]
    for p in candidates:
        if fnmatchcase(_comparable(raw), p):
            return Decision(True, email, f"matches {p}")
    if unusual:
        return Decision(False, email, f"the address has characters outside ASCII ({unusual}) and no pattern "
                                      "of its allow-list written with them matches it")
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
