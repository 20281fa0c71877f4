"""Pure parts of issue 7: the fan-out limiter, the budget headers, the policy watch."""

from __future__ import annotations

from seatbelt.admission.budgetheaders import REMAINING, RESET, headers_for
from seatbelt.admission.fanout import FanoutLimiter
from seatbelt.ledger.base import CapState, Window


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


def test_headers_pick_the_smallest_remaining_and_its_reset():
    key = CapState("key:a", 1000, Window("rolling", 3600), spent=100, reserved=50)
    account = CapState("account:t", 5000, Window("daily"), spent=4800, reserved=50)
    h = headers_for([key, account], now=86400 * 10 + 3600)  # 01:00 UTC
    assert h == {REMAINING: "150", RESET: str(86400 - 3600)}
    assert headers_for([key], now=0) == {REMAINING: "850", RESET: "3600"}
    balance = CapState("key:b", 10, Window(), spent=20, reserved=0)
    assert headers_for([balance]) == {REMAINING: "0"}  # overrun: never negative, no reset
    assert headers_for([CapState("key:c", None, Window(), 5, 0)]) == {}


def test_policy_watch_reports_a_vanished_file_once(tmp_path, monkeypatch):
    from seatbelt.config import livepolicy
    from seatbelt.config.options import Settings
    from seatbelt.runtime import Runtime

    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrequire_auth: false\n")
    rt = Runtime()
    rt.settings = Settings(str(path), "memory://", "", str(tmp_path / "a.jsonl"), True, True)
    rt.audit.open(str(tmp_path / "a.jsonl"))
    policy, seen = livepolicy.read_policy(str(path), hashes_only=False)
    rt.policy = policy
    livepolicy.install(rt, str(path), seen)
    path.unlink()
    for _ in range(3):
        rt.policy_watch.poll(rt)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"policy_rejected"' in lines[0]
    assert rt.policy is policy
    path.write_text("version: 1\nrequire_auth: true\n")
    rt.policy_watch.poll(rt)
    assert rt.policy.require_auth is True


def test_budget_headers_are_appended_or_replace_the_upstreams_own() -> None:
    from mitmproxy.http import Headers

    from seatbelt.admission.budgetheaders import REMAINING, RESET, set_on

    plain = Headers(content_type="application/json")
    set_on(plain, {REMAINING: "10", RESET: "60"})
    assert plain.fields == ((b"content-type", b"application/json"),
                            (REMAINING.encode(), b"10"), (RESET.encode(), b"60"))
    spoofed = Headers([(b"X-Seatbelt-Remaining-Tokens", b"999999"), (b"content-type", b"x")])
    set_on(spoofed, {REMAINING: "10"})
    assert spoofed.get_all(REMAINING) == ["10"]  # the upstream's own value does not survive
    untouched = Headers(content_type="x")
    set_on(untouched, {})
    assert untouched.fields == ((b"content-type", b"x"),)
