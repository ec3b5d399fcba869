"""saliency_core.serving.sign_outs: ended sign-ins stay ended, across restarts and processes, until their
cookie expires."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from saliency_core.serving.sign_outs import REMEMBER_S, SignOuts, sign_in_key

ALICE = {"iss": "https://idp.example", "sub": "alice", "aud": "dashboard", "iat": 1_800_000_000,
         "exp": 1_800_003_600, "nonce": "n-1", "email": "alice@example.com", "email_verified": True}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_key_is_the_same_for_a_copy_and_new_for_a_new_sign_in():
    assert sign_in_key(ALICE) == sign_in_key(dict(reversed(list(ALICE.items()))))  # order does not matter
    assert sign_in_key(ALICE) == sign_in_key({**ALICE, "is_logged_in": True, "tokens": {"id": "x"}})
    assert sign_in_key(ALICE) != sign_in_key({**ALICE, "iat": ALICE["iat"] + 1, "nonce": "n-2"})
    assert sign_in_key(ALICE) != sign_in_key({**ALICE, "sub": "bob"})
    assert len(sign_in_key({})) == 64


def test_a_sign_out_is_remembered_until_any_cookie_from_before_it_has_expired(tmp_path):
    clock = Clock()
    outs = SignOuts(tmp_path / "signed-out.json", clock=clock)
    key = sign_in_key(ALICE)
    assert key not in outs
    outs.add(key)
    assert key in outs
    clock.now += REMEMBER_S - 1
    assert key in outs
    clock.now += 2
    assert key not in outs


def test_sign_outs_survive_a_restart_and_are_seen_by_another_process_at_once(tmp_path):
    path = tmp_path / "state" / "signed-out.json"  # the folder is made on the first sign-out
    first, second = SignOuts(path), SignOuts(path)
    assert "k1" not in second  # read once: the file does not exist yet
    first.add("k1")
    assert "k1" in second  # the file changed: read again
    second.add("k2")
    assert "k1" in first and "k2" in first
    restarted = SignOuts(path)
    assert "k1" in restarted and "k2" in restarted
    assert set(json.loads(path.read_text())["signed_out"]) == {"k1", "k2"}


def _add_many(path: str, prefix: str, n: int) -> None:
    outs = SignOuts(path)
    for i in range(n):
        outs.add(f"{prefix}{i}")


def test_processes_signing_out_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "signed-out.json")
    ctx = multiprocessing.get_context("spawn")  # no fork of the test process and its threads
    procs = [ctx.Process(target=_add_many, args=(path, p, 15)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    outs = SignOuts(path)
    assert all(f"{p}{i}" in outs for p in "abc" for i in range(15))


def test_expired_sign_outs_are_dropped_from_the_file(tmp_path):
    clock = Clock()
    path = tmp_path / "signed-out.json"
    outs = SignOuts(path, clock=clock)
    outs.add("old")
    clock.now += REMEMBER_S + 1
    outs.add("new")
    assert set(json.loads(path.read_text())["signed_out"]) == {"new"}


def test_a_damaged_file_signs_nobody_back_in(tmp_path):
    path = tmp_path / "signed-out.json"
    outs = SignOuts(path)
    outs.add("k1")
    path.write_text("{not json")
    assert "k1" in outs  # what was read before is kept
    outs.add("k2")
    assert "k1" in outs and "k2" in outs


def test_a_file_that_cannot_be_written_is_an_error_but_the_sign_out_still_counts(tmp_path):
    (tmp_path / "not-a-folder").write_text("")  # even root can't make a folder where a file is
    outs = SignOuts(tmp_path / "not-a-folder" / "signed-out.json")
    with pytest.raises(OSError):
        outs.add("k1")
    assert "k1" in outs


def test_memory_only():
    outs = SignOuts(None)
    outs.add("k1")
    assert "k1" in outs and "k2" not in outs and None not in outs


def test_streamlit_accepts_its_identity_cookie_for_less_than_the_sign_outs_are_remembered():
    """A Streamlit upgrade that keeps identity cookies longer must make REMEMBER_S longer too."""
    from streamlit.web.server.starlette import starlette_app_utils
    from streamlit.web.server.starlette.starlette_server_config import AUTH_COOKIE_MAX_AGE_SECONDS

    accepted_s = starlette_app_utils._DEFAULT_SIGNED_VALUE_MAX_AGE_DAYS * 86400
    assert AUTH_COOKIE_MAX_AGE_SECONDS <= accepted_s < REMEMBER_S
