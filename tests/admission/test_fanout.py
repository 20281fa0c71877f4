"""The fan-out limiter (seatbelt/admission/fanout.py): max_concurrent and rpm per key."""

from __future__ import annotations

from seatbelt.admission.fanout import FanoutLimiter


def test_max_concurrent_counts_until_release_and_cancel_undoes():
    f = FanoutLimiter()
    assert f.check("k", 2, None) is None
    f.acquire("k", "flow1")
    f.acquire("k", "flow2")
    refused = f.check("k", 2, None)
    assert refused is not None and refused.retry_after == 1
    assert f.commit("flow1") == "k"
    f.cancel("flow2")  # refused later: it never counted
    assert f.in_flight == {"k": 1} and f.pending == {}
    f.release("k")
    assert f.in_flight == {} and f.check("k", 1, None) is None


def test_rpm_slides_and_says_when_there_is_room():
    f = FanoutLimiter()
    for i, now in enumerate((100.0, 110.0, 130.0)):
        assert f.check("k", None, 3, now=now) is None
        f.acquire("k", f"f{i}", now=now)
        f.commit(f"f{i}")
        f.release("k")
    refused = f.check("k", None, 3, now=140.0)
    assert refused is not None and refused.retry_after == 20  # the stamp at 100 leaves at 160
    assert f.check("k", None, 3, now=160.5) is None
    f.acquire("k", "x", now=161.0)
    f.cancel("x")  # a cancelled request frees its rpm stamp too
    assert f.check("k", None, 3, now=161.0) is None


def test_a_refusal_names_the_limit_and_the_first_limit_checked_wins():
    f = FanoutLimiter()
    f.acquire("k", "a", now=0.0)
    both = f.check("k", 1, 1, now=0.0)
    assert both is not None and both.what == "max_concurrent of 1 requests in flight"
    f.commit("a")
    f.release("k")
    rpm = f.check("k", 1, 1, now=30.0)
    assert rpm is not None and rpm.what == "rpm of 1 requests per minute"
    assert rpm.retry_after == 30  # the stamp at 0 leaves the minute at 60
    assert f.check("other", 1, 1, now=30.0) is None  # counted per key


def test_unknown_tokens_and_extra_releases_change_nothing():
    f = FanoutLimiter()
    f.acquire("k", "a", now=0.0)
    assert f.commit("never-acquired") is None
    f.cancel("never-acquired")
    assert f.in_flight == {"k": 1} and len(f.recent["k"]) == 1
    assert f.commit("a") == "k"
    f.cancel("a")  # committed: a late cancel must not undo an admitted request
    assert f.in_flight == {"k": 1}
    f.release("k")
    f.release("k")  # never below zero
    assert f.in_flight == {}
    assert f.check("k", None, 1, now=61.0) is None and "k" not in f.recent  # pruned
