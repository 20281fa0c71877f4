"""WebSockets through a real mitmdump (reverse mode) to a WebSocket stand-in upstream:
the handshake is authenticated, every response holds budget first (its limit written in),
is refused in-band when no cap can hold it, is settled on its usage or when the socket
ends; one audit line per response; what cannot be metered closes the socket."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import Key, Proxy, policy_text, tag, wait_for
from tests.standin.ws import OUTPUT, PROMPT, WsStandIn

LIVE = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@pytest.fixture(scope="module")
def ws_standin() -> Iterator[WsStandIn]:
    server = WsStandIn().start()
    yield server
    server.stop()


KEYS = {name: Key(name) for name in ("rt", "resp", "live", "cut", "unknown", "sdk")}
KEYS.update(vad=Key("vad"), small=Key("small", cap=200), vadsmall=Key("vadsmall", cap=100))


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any, ws_standin: WsStandIn) -> Proxy:
    policy = policy_text(list(KEYS.values()), models={"gpt-realtime": 500},
                         fallback_max_output=300)
    return proxy_factory("ws", policy, upstream=ws_standin.url)


def ws_url(proxy: Proxy, path: str) -> str:
    return proxy.url.replace("http://", "ws://") + path


def bearer(key: Key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.credential}"}


def until(ws: Any, *types: str) -> list[dict[str, Any]]:
    """Events up to and including the first of `types`."""
    seen = []
    while True:
        event = json.loads(ws.recv(timeout=10))
        seen.append(event)
        if event.get("type") in types:
            return seen


def test_unknown_credential_is_refused_at_the_handshake(proxy: Proxy,
                                                        ws_standin: WsStandIn) -> None:
    before = len(ws_standin.sockets)
    with pytest.raises(InvalidStatus) as exc:
        connect(ws_url(proxy, "/v1/responses"), additional_headers={
            "Authorization": "Bearer sk-not-a-policy-key"}, open_timeout=10)
    response = exc.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(InvalidStatus) as exc:
        connect(ws_url(proxy, LIVE + "?key=AIza-not-a-key"), open_timeout=10)
    assert exc.value.response.status_code == 401
    assert json.loads(exc.value.response.body)["error"]["status"] == "UNAUTHENTICATED"
    assert len(ws_standin.sockets) == before  # the upstream was never contacted


def test_realtime_response_is_held_limited_and_settled(proxy: Proxy,
                                                       ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["rt"]
    with connect(ws_url(proxy, "/v1/realtime?model=gpt-realtime"),
                 additional_headers=bearer(key), open_timeout=10) as ws:
        until(ws, "session.created")
        ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": t}]}}))
        ws.send(json.dumps({"type": "response.create"}))
        done = until(ws, "response.done")[-1]
    assert done["response"]["usage"]["output_tokens"] == OUTPUT
    (sock,) = ws_standin.received(t)
    create = [m for m in sock.messages if m["type"] == "response.create"][0]
    assert create["response"]["max_output_tokens"] == 500  # the model's limit, written in
    assert sock.headers["authorization"] == f"Bearer {key.credential}"
    (line,) = proxy.wait_audit("rt", 1)
    assert (line["outcome"], line["usage_source"]) == ("served", "reported")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (PROMPT, OUTPUT)
    assert line["reserved"] > 500 and line["provider"] == "openai"
    assert "limit_written" in line["edits"]
    assert proxy.row("rt")["spent"] == PROMPT + OUTPUT
    m = proxy.metrics()
    assert m.total("seatbelt_requests_total", key="rt", outcome="served") == 1


def test_responses_websocket_mode_is_metered(proxy: Proxy, ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["resp"]
    with connect(ws_url(proxy, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10) as ws:
        for _ in range(2):
            ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": t}))
            assert until(ws, "response.completed", "error")[-1]["type"] == "response.completed"
    creates = [m for s in ws_standin.received(t) for m in s.messages]
    assert [m["max_output_tokens"] for m in creates] == [300, 300]  # fallback, written in
    lines = proxy.wait_audit("resp", 2)
    assert [(a["completion_tokens"], a["usage_source"]) for a in lines] == \
        [(OUTPUT, "reported")] * 2
    assert len({a["flow_id"] for a in lines}) == 2  # one line per response
    assert proxy.row("resp")["spent"] == 2 * (PROMPT + OUTPUT)


def test_over_cap_create_is_refused_in_band_and_never_sent(proxy: Proxy,
                                                           ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["small"]
    with connect(ws_url(proxy, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": t,
                            "max_output_tokens": 1000}))
        error = until(ws, "error", "response.completed")[-1]
        assert error["type"] == "error" and error["status"] == 429
        assert error["error"]["code"] == "insufficient_quota"
        # The socket stays usable: a create that fits is served.
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": t,
                            "max_output_tokens": 20}))
        assert until(ws, "error", "response.completed")[-1]["type"] == "response.completed"
    sent = [m for s in ws_standin.received(t) for m in s.messages]
    assert [m.get("max_output_tokens") for m in sent] == [20]  # the refused one never left
    lines = proxy.wait_audit("small", 2)
    assert [a["outcome"] for a in lines] == ["refused_quota", "served"]


def test_socket_cut_short_settles_what_is_open(proxy: Proxy, ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["cut"]
    with connect(ws_url(proxy, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5",
                            "input": t + " #hang"}))
        until(ws, "response.output_text.delta")
    (line,) = proxy.wait_audit("cut", 1)
    assert (line["outcome"], line["usage_source"]) == ("aborted", "estimated")
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] >= 1
    assert proxy.row("cut")["spent"] == line["prompt_tokens"] + line["completion_tokens"]
    assert proxy.row("cut")["reserved"] == 0  # no hold left open


def test_gemini_live_turn_is_metered(proxy: Proxy, ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["live"]
    with connect(ws_url(proxy, LIVE + f"?key={key.credential}"), open_timeout=10) as ws:
        ws.send(json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}))
        assert "setupComplete" in json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"clientContent": {"turns": [
            {"role": "user", "parts": [{"text": t}]}], "turnComplete": True}}))
        while "usageMetadata" not in json.loads(ws.recv(timeout=10)):
            pass
    (sock,) = ws_standin.received(t)
    assert sock.messages[0]["setup"]["generationConfig"]["maxOutputTokens"] == 300
    (line,) = proxy.wait_audit("live", 1)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (PROMPT, OUTPUT)
    assert (line["provider"], line["usage_source"]) == ("gemini", "reported")


def test_unknown_client_event_seals_the_socket(proxy: Proxy, ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["unknown"]
    before = len(ws_standin.sockets)
    with connect(ws_url(proxy, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10) as ws:
        ws.send(json.dumps({"type": "response.steer", "input": t}))
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and "cannot be metered" in error["error"]["message"]
        # Sealed: not even a create that would be metered passes any more.
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": t}))
    upstream = ws_standin.sockets[before]
    wait_for("the upstream socket to close", lambda: upstream.closed or None)
    assert upstream.messages == []
    assert proxy.audit_for("unknown") == []  # nothing was held, nothing charged


def test_openai_sdk_realtime_client(proxy: Proxy, ws_standin: WsStandIn) -> None:
    import openai

    t, key = tag(), KEYS["sdk"]
    client = openai.OpenAI(api_key=key.credential, base_url=proxy.url + "/v1",
                           websocket_base_url=ws_url(proxy, "/v1"), max_retries=0)
    # openai<2 (the Python 3.11 pass) has the beta client, which sends `realtime=v1`.
    realtime = client.realtime if hasattr(client, "realtime") else client.beta.realtime
    with realtime.connect(model="gpt-realtime") as conn:
        conn.conversation.item.create(item={"type": "message", "role": "user",
                                            "content": [{"type": "input_text", "text": t}]})
        conn.response.create()
        for event in conn:
            if event.type == "response.done":
                assert event.response.usage is not None
                assert event.response.usage.output_tokens == OUTPUT
                break
    (line,) = proxy.wait_audit("sdk", 1)
    assert (line["completion_tokens"], line["usage_source"]) == (OUTPUT, "reported")


def test_realtime_refusal_is_the_realtime_error_event(proxy: Proxy,
                                                      ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["small"]
    with connect(ws_url(proxy, "/v1/realtime?model=gpt-realtime"),
                 additional_headers=bearer(key), open_timeout=10) as ws:
        until(ws, "session.created")
        ws.send(json.dumps({"type": "response.create", "response": {"instructions": t}}))
        error = until(ws, "error", "response.done")[-1]
    assert error["type"] == "error" and error["event_id"].startswith("seatbelt_")
    assert error["error"]["code"] == "insufficient_quota"
    assert error["error"]["type"]  # Realtime errors always name their type
    assert ws_standin.received(t) == []  # dropped: it never reached the upstream


def realtime_audio_turn(proxy: Proxy, key: Key, t: str, *, refused: bool = False
                        ) -> list[dict[str, Any]]:
    """Audio in, then a commit: the upstream answers unasked, as server VAD does."""
    with connect(ws_url(proxy, "/v1/realtime?model=gpt-realtime"),
                 additional_headers=bearer(key), open_timeout=10) as ws:
        until(ws, "session.created")
        ws.send(json.dumps({"type": "input_audio_buffer.append", "event_id": t,
                            "audio": "UklGRg==" * 100}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        seen = until(ws, "response.done")
        if refused and not any(e["type"] == "error" for e in seen):
            seen += until(ws, "error")  # injected: it may follow the upstream's events
        return seen


def test_server_started_response_is_held_and_settled(proxy: Proxy) -> None:
    realtime_audio_turn(proxy, KEYS["vad"], tag())
    (line,) = proxy.wait_audit("vad", 1)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (PROMPT, OUTPUT)
    assert line["reserved"] > 500  # the session's limit, on the audio's bound
    assert proxy.row("vad")["spent"] == PROMPT + OUTPUT


def test_server_started_response_over_cap_is_cancelled_and_still_charged(
        proxy: Proxy, ws_standin: WsStandIn) -> None:
    t = tag()
    events = realtime_audio_turn(proxy, KEYS["vadsmall"], t, refused=True)
    error = next(e for e in events if e["type"] == "error")
    assert error["error"]["code"] == "insufficient_quota"
    (sock,) = ws_standin.received(t)
    wait_for("the cancel upstream",
             lambda: any(m["type"] == "response.cancel" for m in sock.messages) or None)
    lines = proxy.wait_audit("vadsmall", 2)
    assert [a["outcome"] for a in lines] == ["refused_quota", "served"]
    assert "cancelled_over_cap" in lines[1]["edits"]
    # It ran upstream before it could be refused: what it spent is still charged.
    wait_for("the charge", lambda: proxy.row("vadsmall")["spent"] == PROMPT + OUTPUT or None)


def test_proxy_stopping_settles_open_sockets(proxy_factory: Any, ws_standin: WsStandIn) -> None:
    key = Key("stop")
    p = proxy_factory("ws-stop", policy_text([key], fallback_max_output=300),
                      upstream=ws_standin.url)
    with connect(ws_url(p, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": "#hang"}))
        until(ws, "response.output_text.delta")
        assert p.stop() == 0  # with the socket and its response still open
    (line,) = p.audit_for("stop")
    assert (line["outcome"], line["usage_source"]) == ("aborted", "estimated")
    row = p.row("stop")
    assert row["spent"] == line["prompt_tokens"] + line["completion_tokens"] > 0
    assert row["reserved"] == 0


def test_live_refusal_and_no_credential_in_the_log(proxy: Proxy,
                                                   ws_standin: WsStandIn) -> None:
    t, key = tag(), KEYS["small"]
    with connect(ws_url(proxy, LIVE + f"?key={key.credential}"), open_timeout=10) as ws:
        ws.send(json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}))
        assert "setupComplete" in json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"clientContent": {"turns": [
            {"role": "user", "parts": [{"text": t}]}], "turnComplete": True}}))
        error = json.loads(ws.recv(timeout=10))["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert ws_standin.received(t) == []
    log = proxy.log()
    assert KEYS["live"].credential not in log and key.credential not in log
    assert all(key.credential not in json.dumps(a) for a in proxy.audit())


def test_max_concurrent_counts_sockets_and_a_refused_upgrade_gives_its_slot_back(
        proxy_factory: Any, ws_standin: WsStandIn) -> None:
    key = Key("one")
    policy = policy_text([key]).replace(f"    credential_sha256: {key.fp}\n",
                                        f"    credential_sha256: {key.fp}\n"
                                        "    max_concurrent: 1\n")
    p = proxy_factory("ws-one", policy, upstream=ws_standin.url)
    for _ in range(3):  # each upstream refusal gives the slot back
        with pytest.raises(InvalidStatus) as exc:
            connect(ws_url(p, "/deny/v1/responses"), additional_headers=bearer(key),
                    open_timeout=10)
        assert exc.value.response.status_code == 403
    with connect(ws_url(p, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10):
        with pytest.raises(InvalidStatus) as exc:
            connect(ws_url(p, "/v1/responses"), additional_headers=bearer(key),
                    open_timeout=10)
        assert exc.value.response.status_code == 429  # the open socket holds the slot
    # Closed: the slot is free again (the proxy sees the close before our next upgrade).
    wait_for("the slot", lambda: _opens(p, key) or None)


def _opens(p: Proxy, key: Key) -> bool:
    try:
        with connect(ws_url(p, "/v1/responses"), additional_headers=bearer(key),
                     open_timeout=10):
            return True
    except InvalidStatus:
        return False


def test_open_socket_follows_a_policy_reload(proxy_factory: Any, ws_standin: WsStandIn) -> None:
    key = Key("reload")
    p = proxy_factory("ws-reload", policy_text([key]), upstream=ws_standin.url)
    create = json.dumps({"type": "response.create", "model": "gpt-5", "input": "hi",
                         "max_output_tokens": 5})
    with connect(ws_url(p, "/v1/responses"), additional_headers=bearer(key),
                 open_timeout=10) as ws:
        ws.send(create)
        assert until(ws, "response.completed", "error")[-1]["type"] == "response.completed"
        tmp = p.policy_path.with_suffix(".tmp")
        tmp.write_text(policy_text([key]).replace(f"    credential_sha256: {key.fp}\n",
                                                  f"    credential_sha256: {key.fp}\n"
                                                  "    disabled: true\n"))
        os.replace(tmp, p.policy_path)
        wait_for("the reload", lambda: [a for a in p.audit()
                                        if a["outcome"] == "policy_reloaded"] or None)
        ws.send(create)
        error = until(ws, "response.completed", "error")[-1]
    assert (error["type"], error["status"], error["error"]["code"]) == \
        ("error", 403, "key_disabled")
    assert [a["outcome"] for a in p.audit_for("reload")] == ["served", "forbidden"]


def test_live_streamed_input_opens_a_turn_and_an_unanswered_one_is_released(
        proxy: Proxy, ws_standin: WsStandIn) -> None:
    key = Key("stream")
    KEYS["stream"] = key
    tmp = proxy.policy_path.with_suffix(".tmp")
    tmp.write_text(policy_text(list(KEYS.values()), models={"gpt-realtime": 500},
                               fallback_max_output=300))
    os.replace(tmp, proxy.policy_path)  # atomic: a live reload never reads half a file
    wait_for("the new key", lambda: _key_admitted(proxy, key) or None)
    audio = {"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000",
                                         "data": "AAAA" * 1000}}}
    with connect(ws_url(proxy, LIVE + f"?key={key.credential}"), open_timeout=10) as ws:
        ws.send(json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}))
        assert "setupComplete" in json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(audio))  # opens the turn: held
        ws.send(json.dumps({"realtimeInput": {"text": "hi"}}))  # same turn, answered
        while "usageMetadata" not in json.loads(ws.recv(timeout=10)):
            pass
        ws.send(json.dumps(audio))  # a new turn, never answered before the close
    lines = proxy.wait_audit("stream", 2)
    assert [(a["outcome"], a["usage_source"]) for a in lines] == \
        [("served", "reported"), ("aborted", "none")]
    assert lines[0]["reserved"] >= 3000 // 100 + 300  # audio bound + the setup's limit
    assert proxy.row("stream")["spent"] == PROMPT + OUTPUT


def _key_admitted(p: Proxy, key: Key) -> bool:
    """The (live-reloaded) policy knows `key`: a handshake with it is admitted."""
    try:
        with connect(ws_url(p, LIVE + f"?key={key.credential}"), open_timeout=10):
            return True
    except InvalidStatus:
        return False


def test_openai_sdk_responses_websocket_client(proxy: Proxy, ws_standin: WsStandIn) -> None:
    import openai

    t, key = tag(), KEYS["sdk"]
    before = len(proxy.audit_for("sdk"))
    client = openai.OpenAI(api_key=key.credential, base_url=proxy.url + "/v1",
                           websocket_base_url=ws_url(proxy, "/v1"), max_retries=0)
    if not hasattr(client.responses, "connect"):
        pytest.skip("this openai SDK generation has no Responses WebSocket client; "
                    "test_responses_websocket_mode_is_metered covers the wire")
    with client.responses.connect(max_retries=0) as conn:
        conn.response.create(model="gpt-5", input=t)
        for event in conn:
            if event.type == "response.completed":
                assert event.response.usage is not None
                break
    (sent,) = [m for s in ws_standin.received(t) for m in s.messages]
    assert sent["max_output_tokens"] == 300
    lines = proxy.wait_audit("sdk", before + 1)
    assert (lines[-1]["completion_tokens"], lines[-1]["usage_source"]) == (OUTPUT, "reported")


def test_upstream_error_before_the_response_releases_its_hold(proxy: Proxy) -> None:
    key = Key("rejected")
    KEYS["rejected"] = key
    tmp = proxy.policy_path.with_suffix(".tmp")
    tmp.write_text(policy_text(list(KEYS.values()), models={"gpt-realtime": 500},
                               fallback_max_output=300))
    os.replace(tmp, proxy.policy_path)
    wait_for("the new key", lambda: _key_admitted(proxy, key) or None)
    with connect(ws_url(proxy, "/v1/realtime?model=gpt-realtime"),
                 additional_headers=bearer(key), open_timeout=10) as ws:
        until(ws, "session.created")
        ws.send(json.dumps({"type": "response.create", "event_id": "ev_mine",
                            "response": {"instructions": "#reject"}}))
        error = until(ws, "error")[-1]
        assert error["error"]["event_id"] == "ev_mine"
    (line,) = proxy.wait_audit("rejected", 1)
    assert (line["outcome"], line["usage_source"]) == ("upstream_error", "none")
    assert proxy.row("rejected")["spent"] == 0 and proxy.row("rejected")["reserved"] == 0
