"""Failures remembered for a while: what the dashboard shows instead of trying a failed model on every click."""

from __future__ import annotations

import pytest

from saliency_core.serving.recent_failures import RecentFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_is_remembered_for_its_time_then_forgotten():
    clock = Clock()
    failures = RecentFailures(60, clock)
    assert failures.get("resnet18") is None
    failures.remember("resnet18", "HTTP 404")
    clock.now += 59.9
    assert failures.get("resnet18") == "HTTP 404" and failures.get("vgg16") is None
    clock.now += 0.1
    assert failures.get("resnet18") is None


def test_forget_lets_it_be_tried_at_once_and_a_new_failure_starts_the_time_again():
    clock = Clock()
    failures = RecentFailures(60, clock)
    failures.remember(("custom:net", ()), "not a TorchScript file")
    failures.forget(("custom:net", ()))
    assert failures.get(("custom:net", ())) is None
    failures.forget("never failed")  # nothing to forget is fine
    failures.remember("a", "first")
    clock.now += 50
    failures.remember("a", "second")
    clock.now += 50
    assert failures.get("a") == "second"


def test_expired_failures_do_not_pile_up():
    clock = Clock()
    failures = RecentFailures(60, clock)
    for i in range(100):
        failures.remember(i, "failed")
    clock.now += 61
    failures.remember("last", "failed")
    assert len(failures._failed) == 1


def test_the_time_must_be_positive():
    with pytest.raises(ValueError, match="seconds must be > 0"):
        RecentFailures(0)
