"""saliency_core.serving.access: who may enter once sign-in is on, and the shared link kept across the sign-in."""

from __future__ import annotations

import pytest

from saliency_core.serving.access import (
    RETURN_TTL_S,
    decide,
    decode_return,
    encode_return,
    parse_allowed,
)

SECRET = "a-cookie-secret"


# --- SALIENCY_ALLOWED_EMAILS ---------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "\n"])
def test_unset_or_blank_allow_list_means_everyone_who_signs_in(value):
    assert parse_allowed(value) is None
    assert decide({"sub": "x"}, None).allowed  # not even an email is needed then
    assert decide({"email": "anyone@anywhere.net"}, None).allowed


def test_patterns_are_split_on_commas_stripped_and_lower_cased():
    assert parse_allowed(" *@Example.COM ,alice@x.org,, ") == ("*@example.com", "alice@x.org")


@pytest.mark.parametrize("value", ["example.com", "alice", "*", "a@b@c", "a b@c.org", ",", " , "])
def test_a_pattern_that_is_not_an_address_is_refused_not_ignored(value):
    with pytest.raises(ValueError, match="SALIENCY_ALLOWED_EMAILS"):
        parse_allowed(value)


@pytest.mark.parametrize(("email", "allowed"), [
    ("bob@example.com", True),
    ("Bob@EXAMPLE.com", True),  # case-insensitive on both sides
    ("alice@x.org", True),
    ("alice2@x.org", False),
    ("bob@example.com.evil.net", False),  # the pattern's domain is the whole domain
    ("bob@sub.example.com", False),  # subdomains need their own pattern (*@*.example.com)
    ("bob@evilexample.com", False),
    ('"x@example.com"@evil.net', False),  # "*" must not reach across an "@"
    ("x@example.com@evil.net", False),
])
def test_matching_is_fnmatch_on_the_whole_address(email, allowed):
    patterns = parse_allowed("*@example.com, alice@x.org")
    assert decide({"email": email, "email_verified": True}, patterns).allowed is allowed


def test_a_subdomain_pattern_matches_subdomains():
    assert decide({"email": "bob@lab.example.com"}, parse_allowed("*@*.example.com")).allowed


@pytest.mark.parametrize("claims", [
    {"sub": "bob"},  # no email claim at all
    {"email": ""},
    {"email": None},
    {"email": ["bob@example.com"]},
    {"email": "bob at example.com"},
    {"email": "bob@example.com", "email_verified": False},
    {"email": "bob@example.com", "email_verified": "false"},  # some providers send strings
])
def test_only_a_present_well_formed_not_unverified_email_can_match(claims):
    d = decide(claims, parse_allowed("*@example.com"))
    assert not d.allowed
    assert d.reason


@pytest.mark.parametrize("verified", [0, 1, "no", "0", "False", "", None, "yes", [], {}, "truthy"])
def test_only_true_or_the_string_true_counts_as_verified(verified):
    # The probe: email_verified 0 or "no" was taken for verified (only False and "false" were refused).
    d = decide({"email": "bob@example.com", "email_verified": verified}, parse_allowed("*@example.com"))
    assert not d.allowed, verified
    assert "verified" in d.reason


@pytest.mark.parametrize("verified", [True, "true", "TRUE", " true "])
def test_true_and_the_string_true_are_verified(verified):
    assert decide({"email": "bob@example.com", "email_verified": verified}, parse_allowed("*@example.com")).allowed


def test_a_kelvin_sign_look_alike_of_a_listed_address_is_refused():
    # The probe: a verified "\u212aate@partner.org" lower-cases to "kate@partner.org" and was let in.
    patterns = parse_allowed("kate@partner.org, *@example.com")
    d = decide({"email": "\u212aate@partner.org", "email_verified": True}, patterns)
    assert not d.allowed
    assert "U+212A KELVIN SIGN" in d.reason and d.email == "\u212aate@partner.org"
    assert not decide({"email": "\u212aate@example.com", "email_verified": True}, patterns).allowed
    assert decide({"email": "KATE@partner.org", "email_verified": True}, patterns).allowed


@pytest.mark.parametrize("email", [
    "\u0430lice@example.com",  # Cyrillic a
    "alice@ex\u0430mple.com",
    "ａlice@example.com",  # fullwidth a
    "alice\u200b@example.com",  # zero-width space
    "alice@example.com\u202e",  # right-to-left override
])
def test_an_address_outside_ascii_is_not_matched_by_an_ascii_pattern(email):
    assert not decide({"email": email}, parse_allowed("alice@example.com, *@example.com")).allowed


def test_an_address_outside_ascii_is_let_in_by_a_pattern_written_with_it():
    patterns = parse_allowed("*@bücher.de, josé@example.org")
    assert decide({"email": "bob@bücher.de"}, patterns).allowed
    assert decide({"email": "Bob@BÜCHER.de"}, patterns).allowed  # case-insensitive beyond ASCII too
    assert decide({"email": "jose\u0301@example.org"}, patterns).allowed  # NFD spelling of the listed address
    assert not decide({"email": "bob@bucher.de"}, patterns).allowed
    assert not decide({"email": "jose@example.org"}, patterns).allowed  # an ASCII address is not a look-alike match


def test_a_pattern_with_a_character_standing_for_ascii_is_refused():
    with pytest.raises(ValueError, match="KELVIN SIGN"):
        parse_allowed("\u212aate@partner.org")


def test_an_email_without_email_verified_is_taken_at_the_providers_word():
    # Microsoft Entra sends no email_verified claim; refusing those would lock out Entra tenants.
    d = decide({"email": "bob@example.com"}, parse_allowed("*@example.com"))
    assert d.allowed and d.email == "bob@example.com"


def test_decision_names_the_address_it_refused():
    d = decide({"email": "Eve@Other.org", "email_verified": True}, parse_allowed("*@example.com"))
    assert (d.allowed, d.email) == (False, "eve@other.org")
    assert "allow-list" in d.reason


# --- the shared link across the sign-in round trip --------------------------------------------


def test_a_return_token_gives_back_page_and_query():
    token = encode_return("compare", {"image": "ab" * 32, "method": "smoothgrad", "samples": "16"}, SECRET, now=1000)
    assert decode_return(token, SECRET, now=1000 + RETURN_TTL_S - 1) == (
        "compare", {"image": "ab" * 32, "method": "smoothgrad", "samples": "16"})


def test_a_return_token_is_cookie_safe():
    token = encode_return("", {"sample": 'a;b c="d"', "x": "é"}, SECRET)
    assert all(c.isalnum() or c in "-_." for c in token)


def test_an_expired_return_token_is_ignored():
    token = encode_return("saliency", {"sample": "chelsea"}, SECRET, now=1000)
    assert decode_return(token, SECRET, now=1000 + RETURN_TTL_S + 1) is None


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # another signature
    lambda t: "e30" + t[3:],  # another payload, same signature
    lambda t: t.replace(".", ""),
    lambda t: t + ".x",
    lambda t: "",
    lambda t: "not a token",
])
def test_a_forged_or_damaged_return_token_is_ignored(mutate):
    token = encode_return("saliency", {"sample": "chelsea"}, SECRET, now=1000)
    assert decode_return(mutate(token), SECRET, now=1000) is None


def test_a_return_token_from_another_secret_is_ignored():
    token = encode_return("saliency", {}, "another secret", now=1000)
    assert decode_return(token, SECRET, now=1000) is None
    assert decode_return(None, SECRET) is None


def test_oversized_query_values_are_dropped_from_a_return_token():
    token = encode_return("", {"image": "x" * 5000, "sample": "chelsea"}, SECRET, now=0)
    assert decode_return(token, SECRET, now=0) == ("", {"sample": "chelsea"})


def test_a_return_token_needs_a_secret():
    with pytest.raises(ValueError, match="secret"):
        encode_return("", {}, "")
    assert decode_return(encode_return("", {}, SECRET), "") is None


def test_a_return_token_with_non_ascii_characters_is_ignored():
    from saliency_core.serving.access import decode_return

    assert decode_return("é.abc", "secret") is None
