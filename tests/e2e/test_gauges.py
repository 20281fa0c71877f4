"""Budget gauges exact at scrape time: a scrape right after start shows the cap, one right
after a request shows its spend, and a second proxy on the same SQLite file shows the
first one's spend (the fleet's figures, at most a second old)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Key, chat, openai_client, policy_text, tag, wait_for

pytestmark = pytest.mark.e2e

KEY = Key("gauges", cap=50_000)


def test_gauges_at_scrape_time_on_this_proxy_and_its_fleet(proxy_factory: Any) -> None:
    policy = policy_text([KEY])
    a = proxy_factory("gauges-a", policy)
    m = a.metrics()  # the first scrape after ready: the cap is there already
    assert m.value("seatbelt_cap_tokens", account="team", key=KEY.id) == KEY.cap
    assert m.value("seatbelt_window_spend_tokens", account="team", key=KEY.id) == 0

    t = tag()
    openai_client(a, KEY).chat.completions.create(**chat(f"{t} #len:20", max_tokens=20))
    a.wait_audit(KEY.id, 1)
    spent = a.row(KEY.id)["spent"]
    assert spent > 0
    m = a.metrics()  # right after the request, no waiting for a background refresh
    assert m.value("seatbelt_window_spend_tokens", account="team", key=KEY.id) == spent
    assert m.value("seatbelt_remaining_tokens", account="team", key=KEY.id) == KEY.cap - spent
    assert m.value("seatbelt_reserved_tokens", account="team", key=KEY.id) == 0

    b = proxy_factory("gauges-b", policy, options={"seatbelt_ledger": a.ledger_url})
    wait_for("proxy b's gauges to show proxy a's spend",
             lambda: b.metrics().value("seatbelt_window_spend_tokens", account="team",
                                       key=KEY.id) == spent)
