import json

import pytest

from seatbelt.admission.refusals import SDK_SLEEP_MAX, for_caps, to_response, unknown_key
from seatbelt.apis.anthropic import Anthropic as AnthropicFamily
from seatbelt.apis.openai import OpenAI as OpenAIFamily
from seatbelt.ledger.base import CapRefusal, Window

ROLLING = Window("rolling", 3600)


def cap(subject, reason, retry, limit=100, spent=90, reserved=0, requested=20, exceeds=False):
    return CapRefusal(subject, reason, retry, limit, spent, reserved, requested, exceeds)


def test_quota_beats_rate_and_has_no_retry_after():
    r = for_caps(
        (cap("key:k", "rate", 30), cap("account:a", "quota", None)),
        "k",
        {"key:k": ROLLING, "account:a": Window()},
    )
    assert (r.status, r.code, r.retry_after) == (429, "insufficient_quota", None)
    assert "account 'a'" in r.message and "'k'" in r.message


def test_largest_retry_after_wins():
    r = for_caps((cap("key:k", "rate", 5), cap("account:a", "rate", 40)), "k", {})
    assert (r.code, r.retry_after) == ("rate_limit_exceeded", 40)


def test_exceeding_the_whole_cap_says_so():
    r = for_caps((cap("key:k", "rate", 3600, requested=500, spent=0, exceeds=True),), "k",
                 {"key:k": ROLLING})
    assert r.retry_after == 3600 and "more than the whole" in r.message


def test_openai_shape_headers():
    resp = to_response(OpenAIFamily(), for_caps((cap("key:k", "quota", None),), "k", {}))
    body = json.loads(resp.content)
    assert resp.status_code == 429
    assert body["error"]["code"] == "insufficient_quota"
    assert body["error"]["type"] == "insufficient_quota"
    assert body["error"]["param"] is None
    assert resp.headers["x-seatbelt-refused"] == "insufficient_quota"
    assert resp.headers["x-should-retry"] == "false"
    assert "retry-after" not in resp.headers


def test_a_short_rate_limit_may_be_retried():
    resp = to_response(OpenAIFamily(), for_caps((cap("key:k", "rate", SDK_SLEEP_MAX),), "k",
                                                {}))
    body = json.loads(resp.content)
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "tokens"
    assert resp.headers["retry-after"] == str(SDK_SLEEP_MAX)
    assert "x-should-retry" not in resp.headers


@pytest.mark.parametrize("family", [OpenAIFamily(), AnthropicFamily()])
def test_a_wait_longer_than_an_sdk_sleeps_says_do_not_retry(family):
    """The Anthropic SDK slept 3,012 s on such a refusal and then retried."""
    resp = to_response(family, for_caps((cap("key:k", "rate", SDK_SLEEP_MAX + 1),), "k", {}))
    assert resp.headers["retry-after"] == str(SDK_SLEEP_MAX + 1)
    assert resp.headers["x-should-retry"] == "false"
    whole = for_caps((cap("key:k", "rate", 3600, requested=500, spent=0, exceeds=True),), "k",
                     {"key:k": ROLLING})
    assert to_response(family, whole).headers["x-should-retry"] == "false"


def test_an_exhausted_balance_is_a_billing_error_in_the_anthropic_shape():
    quota = to_response(AnthropicFamily(), for_caps((cap("key:k", "quota", None),), "k", {}))
    rate = to_response(AnthropicFamily(), for_caps((cap("key:k", "rate", 1),), "k", {}))
    assert quota.status_code == rate.status_code == 429  # never 402
    assert json.loads(quota.content)["error"]["type"] == "billing_error"
    assert json.loads(rate.content)["error"]["type"] == "rate_limit_error"
    assert quota.headers["x-should-retry"] == "false"
    assert "x-should-retry" not in rate.headers


def test_anthropic_shape_for_401():
    resp = to_response(AnthropicFamily(), unknown_key("ab" * 32))
    body = json.loads(resp.content)
    assert resp.status_code == 401
    assert body == {"type": "error", "error": {"type": "authentication_error",
                                               "message": body["error"]["message"]}}
    assert "abababababab" in body["error"]["message"]
    assert "ab" * 32 not in body["error"]["message"]
    assert resp.headers["x-should-retry"] == "false"


def test_a_cap_refusal_says_the_request_may_need_its_hold():
    """The hold is a bound (the byte bound, or an exact count plus a margin), not a bill."""
    for refused in (cap("key:k", "quota", None, requested=77),
                    cap("key:k", "rate", 5, requested=77),
                    cap("key:k", "rate", 5, requested=77, spent=0, exceeds=True)):
        message = for_caps((refused,), "k", {}).message
        assert "may need up to 77 tokens" in message, message
