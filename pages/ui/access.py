"""Sign-in, off by default: the gate ``dashboard.py`` passes before any page or sidebar is drawn.

With an ``[auth]`` section in ``.streamlit/secrets.toml`` (Streamlit's own
OpenID Connect sign-in: ``st.login`` / ``st.user``), every page of every
session first asks for a sign-in; without one nothing here draws anything.
Who may enter after signing in is :mod:`saliency_core.serving.access`'s decision
(``SALIENCY_ALLOWED_EMAILS``); anyone else gets a "not allowed" page with
a sign-out button and nothing of the dashboard.

Shared links: Streamlit's sign-in leaves for the provider and always
comes back to the home page without the link's page and query (Streamlit
1.67, ``/oauth2callback`` redirects to ``/``), in a new session. So the
sign-in page stores the link in a short-lived, signed cookie (written by a
line of JavaScript, as Python can't set cookies), and the first signed-in
run of the new session reads it from ``st.context.cookies``, opens that
page with that query and deletes the cookie. The link's values are then
checked like any link's (``url_state.restore_from_url``).

Sign-out: Streamlit's identity cookie is signed, not server state, and
``st.logout`` only deletes it from the browser. The Sign out buttons here
first remember the sign-in as ended (:mod:`saliency_core.serving.sign_outs`, in
``SALIENCY_SIGNED_OUT_FILE``), and the gate treats a cookie of an ended
sign-in as no sign-in at all, in every session and after a restart.

Uploads: the gate's decision also says whether the session may upload
(:mod:`pages.ui.upload_guard`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from pages.ui import upload_guard
from pages.ui.text import plain
from saliency_core.serving.access import (
    ALLOWED_EMAILS_ENV,
    RETURN_TTL_S,
    Decision,
    decide,
    decode_return,
    encode_return,
    parse_allowed,
)
from saliency_core.serving.sign_outs import SignOuts, sign_in_key

_LOG = logging.getLogger(__name__)

SIGNED_OUT_FILE_ENV = "SALIENCY_SIGNED_OUT_FILE"
DEFAULT_SIGNED_OUT_FILE = Path.home() / ".cache" / "saliency-dashboard" / "signed-out.json"
# One list per file for the process's life. Not an st.cache_resource: any client can clear those, and a
# list kept only in memory (its file unwritable) would then forget who signed out.
_SIGN_OUTS: dict[str, SignOuts] = {}
_SIGN_OUTS_LOCK = threading.Lock()

RETURN_COOKIE = "saliency_return"
_CHECKED = "_access_return_checked"  # session keys: the return cookie was looked at / is to be deleted
_CLEAR = "_access_return_clear"


@dataclass(frozen=True)
class Access:
    on: bool  # an [auth] section exists: sign-in is required
    signed_in: bool = False
    decision: Decision | None = None  # for a signed-in person, when the allow-list could be read
    problem: str | None = None  # the allow-list can't be read: nobody gets in

    @property
    def lets_in(self) -> bool:
        return not self.on or (self.signed_in and self.problem is None and self.decision is not None
                               and self.decision.allowed)


def auth_section() -> Mapping | None:
    """The ``[auth]`` section of the secrets, or None when there is none (sign-in off)."""
    if not st.secrets.load_if_toml_exists():
        return None
    auth = st.secrets.get("auth")
    return auth if isinstance(auth, Mapping) else None


def current() -> Access:
    """Where this session stands, read afresh on every run (the allow-list is an environment variable)."""
    if auth_section() is None:
        return Access(on=False)
    if not st.user.get("is_logged_in"):
        return Access(on=True)
    claims = st.user.to_dict()
    if sign_in_key(claims) in sign_outs():
        _LOG.warning("an identity cookie of a sign-in ended with Sign out was used again (sub %r, iss %r)",
                     claims.get("sub"), claims.get("iss"))
        return Access(on=True)
    try:
        allowed = parse_allowed(os.environ.get(ALLOWED_EMAILS_ENV))
    except ValueError as exc:
        return Access(on=True, signed_in=True, problem=str(exc))
    return Access(on=True, signed_in=True, decision=decide(claims, allowed))


def require_sign_in(page: StreamlitPage, pages: Sequence[StreamlitPage], access: Access | None = None) -> None:
    """Let the session through, or draw the sign-in / "not allowed" page and stop the run.

    ``page``: what ``st.navigation`` chose from the URL; ``pages``: all of them, to
    reopen the page of a link that was followed before signing in.
    """
    a = access or current()
    upload_guard.admit(a.lets_in)
    if not a.on:
        return
    if a.lets_in:
        _open_link_kept_over_sign_in(page, pages)
        return
    if not a.signed_in:
        _sign_in_page(page)
    elif a.problem is not None:
        _LOG.error("sign-in refused for everyone: %s", a.problem)
        _refused("Sign-in is not set up correctly on this server, so nobody can enter now. "
                 f"Tell the dashboard's administrator to check `{ALLOWED_EMAILS_ENV}`.")
    else:
        d = a.decision
        _LOG.warning("refused %s: %s", d.email if d and d.email else "a user without an email", d.reason if d else "")
        who = _code(d.email) if d and d.email else "an account without an email address"
        _refused(f"You are signed in as {who}, but you can't use this dashboard: {d.reason if d else 'no decision'}. "
                 "Sign out and sign in with another account, or ask the dashboard's administrator for access.")
    st.stop()


def _code(email: str) -> str:
    """An address as inline code: shown as it is, not turned into a mailto link (it passed access._ADDRESS)."""
    return "`" + email.replace("`", "") + "`"


def _providers(auth: Mapping) -> list[str | None]:
    """The providers to offer: None for the unnamed one ([auth] client_id ...), else each [auth.NAME]."""
    named = [k for k, v in auth.items() if isinstance(v, Mapping) and ("client_id" in v or "server_metadata_url" in v)]
    return ([None] if "client_id" in auth else []) + sorted(named)


def _sign_in_page(page: StreamlitPage) -> None:
    auth = auth_section() or {}
    st.title("Saliency dashboard")
    st.markdown("Sign in with your organisation's account to continue.")
    query = st.query_params.to_dict()
    if page.url_path or query:
        st.caption("The link you followed opens once you have signed in.")
    _keep_link(page.url_path, query, auth)
    for provider in _providers(auth) or [None]:
        label = "Sign in" if provider is None else f"Sign in with {provider}"
        if st.button(label, type="primary", key=f"sign_in_{provider or 'default'}", icon=":material/login:"):
            try:
                st.login(provider)
            except Exception:  # StreamlitAuthError and friends: say so, never a traceback
                _LOG.exception("st.login(%r) failed", provider)
                st.error("Sign-in is not set up correctly on this server. Tell the dashboard's administrator "
                         "(the server's log says what is missing).")


def _refused(message: str) -> None:
    st.title("Not allowed")
    st.error(message, icon=":material/block:")
    if st.button("Sign out", key="sign_out_refused", icon=":material/logout:"):
        sign_out()


# --- sign-out ----------------------------------------------------------------------------------


def sign_outs() -> SignOuts:
    """The list of ended sign-ins, in ``SALIENCY_SIGNED_OUT_FILE`` (default ~/.cache/saliency-dashboard/)."""
    path = os.environ.get(SIGNED_OUT_FILE_ENV) or str(DEFAULT_SIGNED_OUT_FILE)
    with _SIGN_OUTS_LOCK:
        if path not in _SIGN_OUTS:
            _SIGN_OUTS[path] = SignOuts(path)
        return _SIGN_OUTS[path]


def sign_out() -> None:
    """End this sign-in on the server (every copy of its cookie stops working), then Streamlit's sign-out."""
    try:
        sign_outs().add(sign_in_key(st.user.to_dict()))
    except OSError:
        _LOG.exception("can't write the sign-out list (%s): this sign-out holds only until the server restarts",
                       SIGNED_OUT_FILE_ENV)
    upload_guard.admit(False)
    st.logout()


# --- the link across the sign-in -------------------------------------------------------------


def _cookie_js(value: str, max_age: int) -> str:
    path = "/" + str(st.get_option("server.baseUrlPath") or "").strip("/")
    cookie = f"{RETURN_COOKIE}={value}; Max-Age={max_age}; Path={path}; SameSite=Lax"
    return ("<script>document.cookie = " + json.dumps(cookie)
            + ' + (location.protocol === "https:" ? "; Secure" : "");</script>')


def _keep_link(url_path: str, query: dict[str, str], auth: Mapping) -> None:
    """Store the page and query of the link in a signed cookie for ten minutes; forget an older one otherwise."""
    secret = str(auth.get("cookie_secret") or "")
    if (url_path or query) and secret:
        st.html(_cookie_js(encode_return(url_path, query, secret), RETURN_TTL_S), unsafe_allow_javascript=True)
    elif RETURN_COOKIE in st.context.cookies:
        st.html(_cookie_js("", 0), unsafe_allow_javascript=True)


def _open_link_kept_over_sign_in(page: StreamlitPage, pages: Sequence[StreamlitPage]) -> None:
    """On a session's first signed-in run, open the link kept by the sign-in page, then delete the cookie."""
    if st.session_state.pop(_CLEAR, False):
        st.html(_cookie_js("", 0), unsafe_allow_javascript=True)
    if st.session_state.get(_CHECKED):
        return
    st.session_state[_CHECKED] = True
    token = st.context.cookies.get(RETURN_COOKIE)
    if not token:
        return
    st.session_state[_CLEAR] = True
    if page.url_path or st.query_params.to_dict():
        # Not the sign-in's landing (that is always the bare home page): this URL is what the user asked for.
        st.html(_cookie_js("", 0), unsafe_allow_javascript=True)
        st.session_state.pop(_CLEAR)
        return
    kept = decode_return(token, str((auth_section() or {}).get("cookie_secret") or ""))
    if kept is None:
        return
    url_path, query = kept
    target = next((p for p in pages if p.url_path == url_path), None)
    if target is None:
        return
    st.switch_page(target, query_params=query)


# --- signed-in person: sidebar and provenance --------------------------------------------------


def account_box(access: Access | None = None) -> None:
    """Who is signed in, and a sign-out button; draws nothing when sign-in is off."""
    a = access or current()
    if not (a.on and a.signed_in):
        return
    user = st.user.to_dict()
    email = a.decision.email if a.decision else None
    name = user.get("name") if isinstance(user.get("name"), str) else None
    parts = [f"**{plain(name, 80)}**" if name else "", _code(email) if email else ""]
    shown = " · ".join(p for p in parts if p) or f"**{plain(user.get('sub', '?'), 80)}**"
    st.caption(f"Signed in as {shown}")
    if st.button("Sign out", key="sign_out", icon=":material/logout:", width="content"):
        sign_out()


def who() -> dict[str, str]:
    """The signed-in person, for provenance records (``computed_by``); empty when sign-in is off."""
    a = current()
    if not (a.on and a.signed_in):
        return {}
    user = st.user.to_dict()
    out = {"email": a.decision.email if a.decision and a.decision.email else None,
           "name": user.get("name"), "subject": user.get("sub"), "issuer": user.get("iss")}
    return {k: str(v) for k, v in out.items() if isinstance(v, str) and v}
