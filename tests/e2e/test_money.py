"""USD budgets and operator tools through a real mitmdump (issue 7, items 4 and 9).

Prices are absurdly high on purpose ($1000 / $2000 per 1M tokens = 1000 / 2000 micro-dollars
per token), so one small stand-in request costs about $0.13, holds about $0.25 (its prompt bound is
its bytes: seatbelt/admission/estimate.py), and a $0.30 cap holds one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import openai
import pytest

from seatbelt.cli import admin as ops
from tests.e2e.conftest import (
    REPO,
    Key,
    Proxy,
    chat,
    openai_client,
    refusal,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

SPENDER = Key("usd-spender")  # cap_usd 0.30, balance
UNPRICED = Key("usd-unpriced")  # cap_usd 5: only gpt-4o-mini has a price
RELEASED = Key("usd-released")  # cap_usd 5: its holds are released while it streams
INPUT, CACHED, OUTPUT = 1000, 250, 2000  # micro-dollars per token


def policy(keys: list[Key]) -> str:
    lines = [
        "version: 1",
        "prices:",
        f"  gpt-4o-mini: {{input: {INPUT}, cached_input: {CACHED}, output: {OUTPUT}}}",
        "accounts:",
        "  money: {cap_usd: 100}",
        "keys:",
    ]
    for k, cap_usd in zip(keys, ("0.30", "5", "5")):
        lines += [f"  - id: {k.id}", "    account: money", f"    credential_sha256: {k.fp}",
                  "    cap: 100000", f"    cap_usd: {cap_usd}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any) -> Proxy:
    return proxy_factory("money", policy([SPENDER, UNPRICED, RELEASED]))


def micro(usd: float | None) -> int:
    assert usd is not None
    return round(usd * 1_000_000)


def test_usd_cap_refuses_once_spent_and_the_cli_resets_it(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, SPENDER)
    client.chat.completions.create(**chat(f"{t} #len:60 #cache-read:8", max_tokens=60))
    (up,) = standin.received(t)
    usage = up.usage
    assert usage is not None and usage["cached_tokens"] == 8
    expected = ((usage["prompt_tokens"] - 8) * INPUT + 8 * CACHED
                + usage["completion_tokens"] * OUTPUT)
    assert 100_000 < expected < 200_000  # one fits the $0.30 cap, two do not

    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**chat(f"{t} again", max_tokens=60))
    status, headers, body = refusal(info.value)
    assert status == 429 and headers.get("x-seatbelt-refused") == "insufficient_quota"
    assert headers.get("x-should-retry") == "false"
    assert "USD balance" in body["error"]["message"] and SPENDER.id in body["error"]["message"]
    assert len(standin.received(t)) == 1, "the refused request reached the upstream"

    served, refused = proxy.wait_audit(SPENDER.id, 2)
    assert served["outcome"] == "served" and micro(served["cost_usd"]) == expected
    assert (refused["outcome"], refused["cost_usd"]) == ("refused_quota", None)
    row = proxy.row(SPENDER.id)
    assert (row["cap_usd"], micro(row["spent_usd"]), row["reserved_usd"]) == (0.3, expected, 0)
    assert micro(row["remaining_usd"]) == 300_000 - expected
    assert row["spent"] == usage["prompt_tokens"] + usage["completion_tokens"]
    spend = wait_for("the USD spend counter", lambda: proxy.metrics().value(
        "seatbelt_spend_usd_total", account="money", key=SPENDER.id))
    assert micro(spend) == expected

    # The operator resets the key from the CLI while the proxy runs: admitted again.
    out = subprocess.run(
        [sys.executable, "-m", "seatbelt.cli.admin", "--ledger", proxy.ledger_url, "--policy",
         str(proxy.policy_path), "--audit", str(proxy.audit_path), "reset", SPENDER.id],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"reset key:{SPENDER.id}" in out.stdout
    client.chat.completions.create(**chat(f"{t} after reset #len:60", max_tokens=60))
    assert len(standin.received(t)) == 2
    lines = proxy.wait_audit(SPENDER.id, 4)
    assert [x["outcome"] for x in lines] == [
        "served", "refused_quota", "operator_reset", "served"]
    reset = lines[2]
    assert (reset["via"], micro(reset["adjust_usd"])) == ("cli", -expected)
    assert reset["operator"]
    assert micro(proxy.row(SPENDER.id)["spent_usd"]) == micro(lines[3]["cost_usd"])


def test_unpriced_model_under_a_usd_cap_is_refused(proxy: Proxy, standin: StandIn) -> None:
    t = tag()
    client = openai_client(proxy, UNPRICED, max_retries=2)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": t}], max_tokens=5)
    status, headers, body = refusal(info.value)
    assert status == 403 and headers.get("x-seatbelt-refused") == "model_not_allowed"
    assert headers.get("x-should-retry") == "false"
    assert body["error"]["code"] == "model_not_allowed" and "no price" in body["error"]["message"]
    assert standin.received(t) == []
    (line,) = proxy.wait_audit(UNPRICED.id, 1)
    assert (line["outcome"], line["status"], line["model"]) == ("forbidden", 403, "gpt-4o")
    row = proxy.row(UNPRICED.id)
    assert (row["spent"], row["reserved"], row["spent_usd"], row["reserved_usd"]) == (0, 0, 0, 0)
    # the priced model is admitted on the same key
    client.chat.completions.create(**chat(f"{t} priced", max_tokens=5))
    assert len(standin.received(t)) == 1


def test_released_holds_of_a_running_request_are_still_charged(
    proxy: Proxy, standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator releases both holds of a streaming request; when it ends, its real usage
    is charged anyway (tokens and dollars): a release never makes a request free."""
    t = tag()
    client = openai_client(proxy, RELEASED)
    done: list[Any] = []

    def stream() -> None:
        chunks = client.chat.completions.create(
            **chat(f"{t} #len:4 #slow:400", max_tokens=4), stream=True)
        done.append([c for c in chunks])

    worker = threading.Thread(target=stream)
    worker.start()
    cli = ["--ledger", proxy.ledger_url, "--policy", str(proxy.policy_path),
           "--audit", str(proxy.audit_path)]

    def ours() -> list[dict[str, Any]] | None:
        assert ops.main([*cli, "holds", "--json"]) == 0
        rows = [r for r in json.loads(capsys.readouterr().out) if r["key"] == RELEASED.id]
        return rows if len(rows) == 2 else None

    holds = wait_for("both holds of the streaming request", ours)
    assert sorted(r["unit"] for r in holds) == ["tokens", "usd"]
    for row in holds:
        assert ops.main([*cli, "release", row["hold_id"]]) == 0
    assert "released hold" in capsys.readouterr().out
    worker.join(30)
    assert done, "the stream did not finish"
    (up,) = standin.received(t)
    assert up.outcome != "client_gone"
    usage = up.usage
    assert usage is not None
    lines = proxy.wait_audit(RELEASED.id, 3)
    assert [x["outcome"] for x in lines] == ["operator_release", "operator_release", "served"]
    served = lines[2]
    cost = usage["prompt_tokens"] * INPUT + usage["completion_tokens"] * OUTPUT
    assert micro(served["cost_usd"]) == cost
    row = proxy.row(RELEASED.id)
    assert (row["spent"], row["reserved"]) == (up.spend, 0)
    assert (micro(row["spent_usd"]), row["reserved_usd"]) == (cost, 0)
