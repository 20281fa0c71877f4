"""The WebSocket APIs' event knowledge (seatbelt/sockets/events.py): pure functions."""

from __future__ import annotations

import base64

from seatbelt.sockets import events
from seatbelt.sockets.events import Act, Kind, Seen

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def test_socket_paths() -> None:
    assert events.socket_kind("/v1/realtime") is Kind.REALTIME
    assert events.socket_kind("/openai/realtime") is Kind.REALTIME
    assert events.socket_kind("/v1/responses") is Kind.RESPONSES
    assert events.socket_kind("/backend-api/codex/responses") is Kind.RESPONSES
    assert events.socket_kind(LIVE_PATH) is Kind.LIVE
    assert events.socket_kind(LIVE_PATH + "Constrained") is Kind.LIVE
    assert events.socket_kind("/v1/chat/completions") is None
    assert events.socket_kind("/v1/responses/resp_1") is None


def test_client_events_that_make_output_are_creates_and_unknown_ones_are_refused() -> None:
    assert events.client_act(Kind.REALTIME, {"type": "response.create"}) is Act.CREATE
    assert events.client_act(Kind.RESPONSES, {"type": "response.create"}) is Act.CREATE
    assert events.client_act(Kind.REALTIME, {"type": "session.update"}) is Act.CONFIG
    assert events.client_act(Kind.REALTIME,
                             {"type": "input_audio_buffer.append"}) is Act.CONTENT
    assert events.client_act(Kind.REALTIME, {"type": "response.cancel"}) is Act.PASS
    # A type seatbelt does not know may make output: never passed.
    assert events.client_act(Kind.RESPONSES, {"type": "response.steer"}) is Act.UNKNOWN
    assert events.client_act(Kind.REALTIME, {"type": "response.future"}) is Act.UNKNOWN
    assert events.client_act(Kind.RESPONSES, {"type": "session.update"}) is Act.UNKNOWN
    assert events.client_act(Kind.LIVE, {"setup": {}}) is Act.CONFIG
    assert events.client_act(Kind.LIVE, {"clientContent": {"turns": []}}) is Act.CONTENT
    assert events.client_act(Kind.LIVE, {"clientContent": {"turnComplete": True}}) \
        is Act.CREATE
    assert events.client_act(Kind.LIVE, {"toolResponse": {}}) is Act.CREATE
    assert events.client_act(Kind.LIVE, {"realtimeInput": {}}) is Act.CREATE
    assert events.client_act(Kind.LIVE, {"setup": {}, "toolResponse": {}}) is Act.UNKNOWN
    assert events.client_act(Kind.LIVE, {"somethingNew": {}}) is Act.UNKNOWN


def test_audio_is_bounded_by_duration_not_base64_size() -> None:
    second_of_g711 = base64.b64encode(b"\0" * 8000).decode()
    tokens = events.content_tokens(
        Kind.REALTIME, {"type": "input_audio_buffer.append", "audio": second_of_g711})
    assert tokens == 8000 // events.AUDIO_BYTES_PER_TOKEN + 1
    assert tokens >= 32  # above what any of the APIs counts for a second of audio
    live = {"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000",
                                        "data": second_of_g711}}}
    assert events.content_tokens(Kind.LIVE, live) == tokens
    # Text is bounded like an HTTP prompt (bytes / 4).
    text = {"type": "conversation.item.create", "item": {"content": "x" * 400}}
    assert events.content_tokens(Kind.REALTIME, text) > 100


def test_limits_are_read_and_written_where_each_api_names_them() -> None:
    create: dict = {"type": "response.create"}
    assert events.realtime_limit(create, None, beta=False) is None
    assert events.realtime_limit(create, 77, beta=False) == 77  # the session's
    events.write_realtime_limit(create, 300, beta=False)
    assert create == {"type": "response.create", "response": {"max_output_tokens": 300}}
    beta: dict = {"type": "response.create", "response": {"max_output_tokens": "inf"}}
    events.write_realtime_limit(beta, 300, beta=True)
    assert beta["response"]["max_response_output_tokens"] == 300
    assert events.realtime_limit({"response": {"max_output_tokens": "inf"}}, None,
                                 beta=False) is None
    setup: dict = {"model": "models/m"}
    assert events.live_limit(setup) is None
    events.write_live_limit(setup, 300)
    assert setup["generationConfig"] == {"maxOutputTokens": 300}
    assert events.responses_body({"type": "response.create", "model": "m",
                                  "stream_id": "s"}) == {"model": "m"}


def test_server_events_carry_usage_and_output() -> None:
    done = events.server_event(Kind.REALTIME, {"type": "response.done", "response": {
        "id": "r1", "usage": {"input_tokens": 11, "output_tokens": 7}}})
    assert (done.seen, done.response_id) == (Seen.DONE, "r1")
    assert done.usage is not None and (done.usage.prompt_tokens,
                                       done.usage.completion_tokens) == (11, 7)
    completed = events.server_event(Kind.RESPONSES, {"type": "response.completed",
                                                     "response": {"id": "r2", "usage": {
                                                         "input_tokens": 3,
                                                         "output_tokens": 4}}})
    assert completed.usage is not None and completed.usage.total == 7
    no_usage = events.server_event(Kind.RESPONSES, {"type": "response.failed",
                                                    "response": {"id": "r3"}})
    assert (no_usage.seen, no_usage.usage) == (Seen.DONE, None)
    delta = events.server_event(Kind.REALTIME, {"type": "response.output_text.delta",
                                                "delta": "x" * 40})
    assert (delta.seen, delta.output_tokens) == (Seen.OUTPUT, 10)
    live = events.server_event(Kind.LIVE, {"usageMetadata": {
        "promptTokenCount": 5, "responseTokenCount": 6, "thoughtsTokenCount": 1}})
    assert live.usage is not None and (live.usage.prompt_tokens,
                                       live.usage.completion_tokens) == (5, 7)
    # A prompt-only snapshot does not end the turn.
    assert events.server_event(Kind.LIVE, {"usageMetadata": {
        "promptTokenCount": 5}}).seen is Seen.OTHER
    assert events.server_event(Kind.REALTIME, {"type": "error"}).seen is Seen.ERROR


def test_only_json_objects_are_messages() -> None:
    assert events.parse_message(b'{"type":"x"}') == {"type": "x"}
    assert events.parse_message(b"[1]") is None
    assert events.parse_message(b"\xff\xfe") is None
    assert events.parse_message(b"[" * 100_000) is None
