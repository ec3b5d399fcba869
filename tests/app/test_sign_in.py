"""The sign-in gate in AppTest: with an [auth] secrets section nothing of the dashboard runs before sign-in.

AppTest fakes who is signed in (``at.user``); the real provider, cookies and
redirects are tested through Chromium in ``test_browser_sign_in.py``.
"""

from __future__ import annotations

import json

import pytest

AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-test-cookie-secret",
    "client_id": "dashboard",
    "client_secret": "secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
ALICE = {"is_logged_in": True, "email": "alice@example.com", "email_verified": True, "name": "Alice Liddell",
         "sub": "alice", "iss": "http://127.0.0.1:9", "iat": 1_800_000_000, "nonce": "first-sign-in"}


@pytest.fixture
def signed(new_app, monkeypatch, tmp_path):
    """Factory: ``signed(user, page=None, **query)``, an AppTest with sign-in on and ``user`` as st.user."""
    monkeypatch.delenv("SALIENCY_ALLOWED_EMAILS", raising=False)
    monkeypatch.setenv("SALIENCY_SIGNED_OUT_FILE", str(tmp_path / "signed-out.json"))

    def make(user: dict, page: str | None = None, **query: str):
        at = new_app(page, **query)
        at.secrets["auth"] = dict(AUTH)
        at.user = dict(user)
        return at

    return make


def shown_text(at) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "error", "info") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def assert_nothing_of_the_dashboard(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.sidebar.get("selectbox"), "the sidebar's pickers were drawn"
    assert not at.get("plotly_chart") and not at.get("metric") and not at.get("dataframe")
    assert "Which pixels" not in shown_text(at)


@pytest.mark.parametrize("page", [None, "pages/saliency.py", "pages/dataset.py"])
def test_without_sign_in_every_page_shows_only_the_sign_in(signed, page):
    at = signed({}, page, sample="chelsea", objective="loss").run()
    assert_nothing_of_the_dashboard(at)
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Sign in with your organisation's account" in shown_text(at)
    assert "The link you followed opens once you have signed in." in shown_text(at)


def test_a_signed_out_user_with_an_is_logged_in_false_claim_is_not_let_in(signed):
    at = signed({"is_logged_in": False, "email": "alice@example.com"}).run()
    assert_nothing_of_the_dashboard(at)
    assert [b.label for b in at.button] == ["Sign in"]


def test_named_providers_get_one_button_each(signed):
    at = signed({})
    at.secrets["auth"] = {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": "x",
                          "okta": {"client_id": "a", "client_secret": "b", "server_metadata_url": "c"},
                          "google": {"client_id": "a", "client_secret": "b", "server_metadata_url": "c"}}
    at.run()
    assert [b.label for b in at.button] == ["Sign in with google", "Sign in with okta"]


def test_signed_in_user_sees_the_dashboard_with_who_and_a_sign_out(signed, monkeypatch):
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "*@example.com")
    at = signed(ALICE).run()
    assert not at.exception
    assert "Which pixels drive the classifier's decision?" in shown_text(at)
    assert at.sidebar.selectbox(key="model")
    captions = [c.value for c in at.sidebar.caption]
    who = "Signed in as **Alice Liddell** · `alice@example.com`"
    assert who in captions, captions
    assert at.sidebar.button(key="sign_out").label == "Sign out"


def test_without_an_allow_list_everyone_who_signs_in_enters(signed):
    at = signed({"is_logged_in": True, "sub": "bob"}).run()  # not even an email
    assert not at.exception
    assert at.sidebar.selectbox(key="model")


@pytest.mark.parametrize("user", [
    {**ALICE, "email": "eve@other.org"},
    {**ALICE, "email_verified": False},
    {**ALICE, "email_verified": "no"},  # only true / "true" is verified
    {**ALICE, "email_verified": 0},
    {**ALICE, "email": "\u212alice@example.com"},  # a Kelvin sign: str.lower() makes it "klice@example.com"
    {"is_logged_in": True, "sub": "no-email"},
])
def test_a_user_off_the_allow_list_sees_not_allowed_and_a_sign_out(signed, monkeypatch, user):
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "*@example.com")
    at = signed(user, "pages/saliency.py", sample="chelsea").run()
    assert_nothing_of_the_dashboard(at)
    assert [t.value for t in at.title] == ["Not allowed"]
    assert [b.label for b in at.button] == ["Sign out"]
    assert "you can't use this dashboard" in at.error[0].value and "administrator" in at.error[0].value


def test_a_broken_allow_list_lets_nobody_in(signed, monkeypatch):
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "example.com")  # a typo for *@example.com
    at = signed(ALICE).run()
    assert_nothing_of_the_dashboard(at)
    assert [t.value for t in at.title] == ["Not allowed"]
    assert "SALIENCY_ALLOWED_EMAILS" in at.error[0].value


def test_sign_out_ends_the_sign_in_for_every_copy_of_its_cookie(signed, monkeypatch, tmp_path):
    """The probe: an identity cookie copied before "Sign out" still signed in after it (the cookie is the only
    state; st.logout deletes it from one browser). AppTest's st.user stands for the cookie's claims."""
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "*@example.com")
    at = signed(ALICE).run()
    assert at.sidebar.selectbox(key="model")
    at.sidebar.button(key="sign_out").click().run()
    assert not at.exception

    copied = signed(ALICE, "pages/saliency.py", sample="chelsea").run()  # the same cookie in another browser
    assert_nothing_of_the_dashboard(copied)
    assert [b.label for b in copied.button] == ["Sign in"]

    again = signed({**ALICE, "iat": ALICE["iat"] + 120, "nonce": "second-sign-in"}).run()  # a new sign-in
    assert not again.exception
    assert again.sidebar.selectbox(key="model")
    assert (tmp_path / "signed-out.json").exists()  # remembered across restarts


def test_signing_out_of_the_not_allowed_page_ends_that_sign_in_too(signed, monkeypatch):
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "*@example.com")
    eve = {**ALICE, "email": "eve@other.org", "sub": "eve"}
    at = signed(eve).run()
    at.button(key="sign_out_refused").click().run()
    copied = signed(eve).run()
    assert [b.label for b in copied.button] == ["Sign in"]


def test_a_link_opens_directly_for_a_signed_in_user(signed, monkeypatch):
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "alice@example.com")
    at = signed(ALICE, "pages/compare.py", sample="chelsea", objective="loss").run()
    assert not at.exception
    assert at.sidebar.selectbox(key="sample").value == "chelsea"
    assert at.query_params["sample"] == "chelsea" and at.query_params["objective"] == "loss"


@pytest.fixture
def download_buttons(monkeypatch) -> dict:
    """label -> the data (or the function making it) of every download button a page draws from now on."""
    from streamlit.delta_generator import DeltaGenerator

    buttons = {}
    original = DeltaGenerator.download_button

    def spy(self, label, data, *args, **kwargs):
        buttons[label] = data
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)  # the page draws them in columns
    return buttons


def test_downloads_record_who_computed_them(signed, monkeypatch, download_buttons):
    monkeypatch.setenv("SALIENCY_ALLOWED_EMAILS", "*@example.com")
    at = signed(ALICE, "pages/statistics.py").run()
    assert not at.exception
    data = download_buttons["Everything with provenance (JSON)"]
    record = json.loads(data() if callable(data) else data)
    assert record["computed_by"] == {"email": "alice@example.com", "name": "Alice Liddell", "subject": "alice",
                                     "issuer": "http://127.0.0.1:9"}


def test_without_sign_in_downloads_name_nobody(new_app, download_buttons):
    at = new_app("pages/statistics.py").run()
    assert not at.exception
    assert "sign_out" not in [b.key for b in at.sidebar.button]
    data = download_buttons["Everything with provenance (JSON)"]
    assert "computed_by" not in json.loads(data() if callable(data) else data)
