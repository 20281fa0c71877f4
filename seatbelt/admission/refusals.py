"""Refusals: which answer a request gets when it may not go upstream (contract §5).

Pure: builds the status, headers and message; the API family spells the body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mitmproxy import http

from seatbelt.apis.base import ApiFamily, ErrorShape
from seatbelt.ledger.base import CapRefusal, Window

# code -> metrics outcome
OUTCOMES = {
    "insufficient_quota": "refused_quota",
    "rate_limit_exceeded": "refused_rate",
    "invalid_api_key": "unauthorized",
    "model_not_allowed": "forbidden",
    "host_not_allowed": "forbidden",
    "key_disabled": "forbidden",
    "endpoint_not_metered": "forbidden",
    "invalid_request": "rejected",
    "ledger_unavailable": "unavailable",
    "internal_error": "unavailable",
}
NO_RETRY = {
    "insufficient_quota",
    "invalid_api_key",
    "model_not_allowed",
    "host_not_allowed",
    "key_disabled",
    "endpoint_not_metered",
    "invalid_request",
}


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after: int | None = None

    @property
    def outcome(self) -> str:
        return OUTCOMES[self.code]


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
            f"{r.limit}-token balance; this request needs up to {r.requested} tokens. "
            "The balance does not reset: ask the operator for a top-up."
        )
        return Refusal(429, "insufficient_quota", msg)
    r = max(refusals, key=lambda x: x.retry_after or 1)
    retry = max(1, r.retry_after or 1)
    who = _describe_subject(r.subject, key_id)
    window = _window_text(windows.get(r.subject, Window()))
    if r.exceeds_cap:
        msg = (
            f"seatbelt: this request needs up to {r.requested} tokens, more than the whole "
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
            f"request needs up to {r.requested} tokens. Retry in {retry} s."
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
    body = family.error_body(ErrorShape(refusal.status, refusal.code, refusal.message))
    headers = {
        "content-type": "application/json",
        "x-seatbelt-refused": refusal.code,
    }
    if refusal.retry_after is not None:
        headers["retry-after"] = str(refusal.retry_after)
    if refusal.code in NO_RETRY:
        headers["x-should-retry"] = "false"
    return http.Response.make(refusal.status, json.dumps(body).encode(), headers)
