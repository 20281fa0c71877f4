"""Refusals: which answer a request gets when it may not go upstream (contract §5).

Pure: builds the status, headers and message; the API family spells the body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mitmproxy import http

from seatbelt.apis.base import ApiFamily, ErrorShape
from seatbelt.config.access import format_expiry
from seatbelt.ledger.base import CapRefusal, Window

# code -> metrics outcome
OUTCOMES = {
    "insufficient_quota": "refused_quota",
    "rate_limit_exceeded": "refused_rate",
    "invalid_api_key": "unauthorized",
    "key_expired": "unauthorized",
    "model_not_allowed": "forbidden",
    "host_not_allowed": "forbidden",
    "key_disabled": "forbidden",
    "endpoint_not_metered": "forbidden",
    "invalid_request": "rejected",
    "ledger_unavailable": "unavailable",
    "internal_error": "unavailable",
}
NO_RETRY = {
    "key_expired",
    "insufficient_quota",
    "invalid_api_key",
    "model_not_allowed",
    "host_not_allowed",
    "key_disabled",
    "endpoint_not_metered",
    "invalid_request",
}

# The longest Retry-After an SDK is left to sleep on by itself; past it the refusal says
# `x-should-retry: false`. What the SDKs do with a longer one (their _base_client.py):
# openai < 2 and anthropic < 1 ignore a Retry-After over 60 s and retry twice after 0.5-8 s
# of backoff (refused again: retrying cannot help); openai >= 2 sleeps up to 120 s
# (MAX_RETRY_AFTER_DELAY) twice; anthropic >= 1 sleeps whatever it is told (3,012 s, then
# retried). A few seconds keeps a default client (2 retries) from blocking longer than that;
# an app that wants to wait for a window reads Retry-After and schedules it itself.
SDK_SLEEP_MAX = 5


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after: int | None = None

    @property
    def outcome(self) -> str:
        return OUTCOMES[self.code]

    @property
    def retry_helps(self) -> bool:
        """Only a short wait is worth an SDK's automatic retry (SDK_SLEEP_MAX)."""
        return (self.code not in NO_RETRY and self.retry_after is not None
                and self.retry_after <= SDK_SLEEP_MAX)


def _describe_subject(subject: str, key_id: str) -> str:
    kind, _, name = subject.partition(":")
    if kind == "account":
        return f"account {name!r} (of key {key_id!r})"
    return f"key {name!r}"


def _window_text(window: Window) -> str:
    if window.kind == "rolling":
        return f"per rolling {window.seconds} s"
    if window.kind == "balance":
        return "balance"
    return f"per {'UTC day' if window.kind == 'daily' else 'UTC month'}"


def for_caps(refusals: tuple[CapRefusal, ...], key_id: str, windows: dict[str, Window]) -> Refusal:
    """The most permanent answer wins: quota over rate; then the largest Retry-After."""
    quota = [r for r in refusals if r.reason == "quota"]
    if quota:
        r = quota[0]
        msg = (
            f"seatbelt: {_describe_subject(r.subject, key_id)} has spent {r.spent} of its "
            f"{r.limit}-token balance; this request may need up to {r.requested} tokens. "
            "The balance does not reset: ask the operator for a top-up."
        )
        return Refusal(429, "insufficient_quota", msg)
    r = max(refusals, key=lambda x: x.retry_after or 1)
    retry = max(1, r.retry_after or 1)
    who = _describe_subject(r.subject, key_id)
    window = _window_text(windows.get(r.subject, Window()))
    if r.exceeds_cap:
        msg = (
            f"seatbelt: this request may need up to {r.requested} tokens, more than the whole "
            f"{r.limit}-token cap ({window}) of {who}; lower max_tokens or the prompt."
        )
    elif r.spent + r.requested <= r.limit:
        msg = (
            f"seatbelt: {who} cap of {r.limit} tokens ({window}) is held by requests in flight "
            f"({r.reserved} reserved); retry in {retry} s."
        )
    else:
        msg = (
            f"seatbelt: {who} has used {r.spent} of its {r.limit}-token cap ({window}); this "
            f"request may need up to {r.requested} tokens. Retry in {retry} s."
        )
    return Refusal(429, "rate_limit_exceeded", msg, retry_after=retry)


def unknown_key(fingerprint: str | None) -> Refusal:
    if fingerprint is None:
        msg = (
            "seatbelt: this request carries no API key. Send the key your operator registered "
            "in the seatbelt policy (Authorization: Bearer, x-api-key or api-key)."
        )
    else:
        msg = (
            f"seatbelt: this API key (fingerprint {fingerprint[:12]}) is not in the seatbelt "
            "policy. Ask the operator to add its credential_sha256 (./run.sh hash prints it) "
            "to the policy, or use a registered key."
        )
    return Refusal(401, "invalid_api_key", msg)


def bad_credential(reason: str) -> Refusal:
    return Refusal(401, "invalid_api_key", f"seatbelt: {reason}.")


def unknown_context(model: str | None, field: str) -> Refusal:
    name = model or "MODEL"
    return Refusal(400, "invalid_request", (
        f"seatbelt: this request's {field} brings in a prompt stored upstream, which seatbelt "
        f"cannot see, so it reserves the model's context window, and none is known for "
        f"{name!r}: the operator can name it in the policy (models: {{{name}: "
        "{context_window: N}})."))


def unreadable(reason: str) -> Refusal:
    return Refusal(400, "invalid_request", f"seatbelt: unreadable request body: {reason}.")


def too_large(reason: str) -> Refusal:
    return Refusal(413, "invalid_request", f"seatbelt: request body too large: {reason}.")


def unmetered(path: str) -> Refusal:
    return Refusal(
        403,
        "endpoint_not_metered",
        f"seatbelt: {path} is an endpoint whose cost seatbelt cannot meter; the policy "
        "refuses it (set unmetered_endpoints: allow to let it through).",
    )


def model_not_allowed(key_id: str, model: str | None) -> Refusal:
    shown = "a request that names no model" if model is None else "this model"
    return Refusal(403, "model_not_allowed", f"seatbelt: key {key_id!r} may not use {shown}; "
                   "the policy's `models:` allow-list does not name it.")


def host_not_allowed(key_id: str, host: str) -> Refusal:
    return Refusal(403, "host_not_allowed", f"seatbelt: key {key_id!r} is a virtual key; "
                   f"{host} is not one of its upstream_hosts, so nothing was sent there.")


def key_expired(key_id: str, expires: float) -> Refusal:
    return Refusal(401, "key_expired", f"seatbelt: key {key_id!r} expired at "
                   f"{format_expiry(expires)} (its `expires` in the policy); ask the operator "
                   "for a new key or a later expiry.")


def key_disabled(key_id: str) -> Refusal:
    return Refusal(403, "key_disabled", f"seatbelt: key {key_id!r} is disabled in the policy.")


def fanout(key_id: str, what: str, retry_after: int) -> Refusal:
    """max_concurrent / rpm: too many requests of one key at once or per minute."""
    return Refusal(429, "rate_limit_exceeded", f"seatbelt: key {key_id!r} is over its {what}; "
                   f"retry in {retry_after} s.", retry_after=max(1, retry_after))


def unavailable(reason: str) -> Refusal:
    return Refusal(503, "ledger_unavailable", f"seatbelt: {reason}; retry shortly.", 1)


def internal_error() -> Refusal:
    """A bug in seatbelt while admitting: refused (fail closed), never forwarded unmetered."""
    return Refusal(503, "internal_error", "seatbelt: internal error; the request was not "
                   "sent upstream (see the proxy log).", 1)


def to_response(family: ApiFamily, refusal: Refusal) -> http.Response:
    """The refusal as the family spells it (ApiFamily.error_body), with the headers every
    SDK reads: Retry-After, and `x-should-retry: false` where retrying cannot help."""
    shape = ErrorShape(refusal.status, refusal.code, refusal.message, refusal.retry_after)
    headers = {
        "content-type": "application/json",
        "x-seatbelt-refused": refusal.code,
    }
    if refusal.retry_after is not None:
        headers["retry-after"] = str(refusal.retry_after)
    if not refusal.retry_helps:
        headers["x-should-retry"] = "false"
    return http.Response.make(refusal.status, json.dumps(family.error_body(shape)).encode(),
                              headers)
