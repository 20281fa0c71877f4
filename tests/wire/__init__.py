"""Wire fixtures: exact response bodies as the LLM APIs send them (see WIRE.md).

Each file is served verbatim by the stand-in LLM server (`#wire:NAME`) and scanned by the
unit tests. `FIXTURES[name]` says which endpoint produced it, a request that would have
produced it, and the usage seatbelt must read from it (normalised to the contract:
prompt counts cache reads and writes; None = not reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> bytes:
    """The exact bytes of a fixture, by file name with or without its extension."""
    path = HERE / name
    if not path.is_file():
        matches = [p for p in HERE.iterdir() if p.stem == name and p.suffix in (".sse", ".json")]
        if len(matches) != 1:
            raise KeyError(f"no wire fixture named {name!r}")
        path = matches[0]
    return path.read_bytes()


def _usage(prompt=None, completion=None, cached=None, cache_write=None, reasoning=None):
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }


def _filler(n_bytes: int) -> str:
    """Plain English-like text of about n_bytes (~4.3 bytes per token in common tokenizers)."""
    sentence = (
        "the budget of every agent is checked before each request leaves the proxy and "
        "settled once the response ends so that no key can spend more than its cap"
    )
    words = sentence.split(" ")
    out: list[str] = []
    size = 0
    i = 0
    while size < n_bytes:
        w = words[i % len(words)]
        out.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(out)


@dataclass(frozen=True)
class Fixture:
    file: str
    family: str  # openai | anthropic
    path: str  # request path that produced it
    content_type: str
    request: dict[str, Any]
    usage: dict[str, int | None]
    output_text: str  # the generated text/arguments, concatenated (for output_chars)
    upstream_error: bool = False
    injected_frames: int = 0  # usage-only frames a client that did not ask must not see
    notes: str = ""

    @property
    def name(self) -> str:
        return self.file.rsplit(".", 1)[0]

    @property
    def body(self) -> bytes:
        return load(self.file)


_CHAT = "/v1/chat/completions"
_MSG = "/v1/messages"
_SSE = "text/event-stream"
_JSON = "application/json"

FIXTURES: dict[str, Fixture] = {
    f.name: f
    for f in [
        Fixture(
            "openai_chat.json", "openai", _CHAT, _JSON,
            {"model": "gpt-4.1-2025-04-14",
             "messages": [{"role": "user", "content": "Say hi, briefly."}]},
            _usage(19, 200, 0, None, 0), "Hi!",
        ),
        Fixture(
            "openai_chat_stream.sse", "openai", _CHAT, _SSE,
            {"model": "gpt-4.1-2025-04-14", "stream": True,
             "messages": [{"role": "user", "content": "Say hi, briefly."}]},
            _usage(19, 238, 0, None, 0), "Hi", injected_frames=1,
        ),
        Fixture(
            "openai_chat_stream_unicode.sse", "openai", _CHAT, _SSE,
            {"model": "o4-mini", "stream": True, "reasoning_effort": "medium",
             "messages": [{"role": "system", "content": _filler(4200)},
                          {"role": "user", "content": "Greet everyone in three languages."}]},
            _usage(1130, 347, 1024, None, 320),
            'Bonjour à tous — 世界 🎉 line\nbreak "quoted" \\ back fin.', injected_frames=1,
            notes="multi-byte UTF-8, escapes, cached and reasoning tokens, obfuscation",
        ),
        Fixture(
            "openai_chat_stream_no_usage.sse", "openai", _CHAT, _SSE,
            {"model": "gpt-4o-mini", "stream": True,
             "messages": [{"role": "user", "content": "Finish the pangram: the quick"}]},
            _usage(), "The quick brown fox jumps over the lazy dog.",
            notes="no include_usage: no usage at all, output must be estimated",
        ),
        Fixture(
            "openai_chat_stream_azure.sse", "openai",
            "/openai/deployments/gpt-4o/chat/completions", _SSE,
            {"stream": True, "messages": [{"role": "user", "content": "Say hello from Azure"}]},
            _usage(14, 5, 0, None, 0), "Azure says hello.", injected_frames=1,
            notes="first chunk: empty choices + prompt_filter_results, no usage",
        ),
        Fixture(
            "openai_chat_stream_tools.sse", "openai", _CHAT, _SSE,
            {"model": "gpt-4.1-mini", "stream": True,
             "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
             "tools": [{"type": "function", "function": {
                 "name": "get_weather", "description": "Current weather for a place",
                 "parameters": {"type": "object", "properties": {
                     "location": {"type": "string"}}, "required": ["location"]}}}]},
            _usage(81, 17, 0, None, 0), '{"location":"Paris, France"}', injected_frames=1,
        ),
        Fixture(
            "openai_chat_stream_vllm.sse", "openai", _CHAT, _SSE,
            {"model": "m", "stream": True,
             "stream_options": {"include_usage": True, "continuous_usage_stats": True},
             "messages": [{"role": "user", "content": "Count to three"}]},
            _usage(12, 28), "One two three",
            notes="cumulative usage on every chunk: the last wins",
        ),
        Fixture(
            "openai_chat_stream_error.sse", "openai", _CHAT, _SSE,
            {"model": "gpt-4o-mini", "stream": True,
             "messages": [{"role": "user", "content": "Write a long answer"}]},
            _usage(), "Partial answ", upstream_error=True,
        ),
        Fixture(
            "openai_completions_stream.sse", "openai", "/v1/completions", _SSE,
            {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "stream": True},
            _usage(5, 7), "Hi", injected_frames=1,
        ),
        Fixture(
            "openai_embeddings.json", "openai", "/v1/embeddings", _JSON,
            {"input": "hello world", "model": "text-embedding-3-small"},
            _usage(8, 0), "",
        ),
        Fixture(
            "anthropic_messages.json", "anthropic", _MSG, _JSON,
            {"model": "claude-sonnet-4-20250514", "max_tokens": 1024,
             "messages": [{"role": "user", "content": "Say hi!"}]},
            _usage(18, 254, 0, 0), "Hi!",
        ),
        Fixture(
            "anthropic_messages_stream.sse", "anthropic", _MSG, _SSE,
            {"model": "claude-sonnet-4-20250514", "max_tokens": 1024, "stream": True,
             "messages": [{"role": "user", "content": "Say hi!"}]},
            _usage(18, 240, 0, 0), "Hi",
            notes="real capture shape, padding whitespace inside data kept",
        ),
        Fixture(
            "anthropic_messages_stream_delta_usage.sse", "anthropic", _MSG, _SSE,
            {"model": "claude-sonnet-4-5", "max_tokens": 2048, "stream": True,
             "system": [{"type": "text", "text": _filler(86000),
                         "cache_control": {"type": "ephemeral"}}],
             "messages": [{"role": "user", "content": "Summarise the policy above."}]},
            _usage(21762, 28, 1280, 0), "Here is the summary: über-größe ✓",
            notes="message_start zeros; message_delta carries input and cache counts",
        ),
        Fixture(
            "anthropic_messages_stream_cache.sse", "anthropic", _MSG, _SSE,
            {"model": "claude-opus-4-1", "max_tokens": 4096, "stream": True,
             "thinking": {"type": "enabled", "budget_tokens": 2048},
             "system": [{"type": "text", "text": _filler(25000),
                         "cache_control": {"type": "ephemeral"}}],
             "tools": [{"name": "get_weather", "description": "Weather for a place",
                        "input_schema": {"type": "object",
                                         "properties": {"location": {"type": "string"}}}}],
             "messages": [{"role": "user", "content": "Weather in Paris?"}]},
            _usage(6156, 89, 4096, 2048),
            'Let me check the weather.{"location": "Paris"}',
            notes="CRLF, cache write+read, thinking, tool input, two cumulative deltas",
        ),
        Fixture(
            "anthropic_messages_stream_error.sse", "anthropic", _MSG, _SSE,
            {"model": "claude-sonnet-4-20250514", "max_tokens": 1024, "stream": True,
             "messages": [{"role": "user", "content": "Tell me a story"}]},
            _usage(25, None, 0, 0), "Once upon", upstream_error=True,
            notes="overloaded_error after output began; message_start's output_tokens is a "
            "placeholder, so completion stays unknown (estimated)",
        ),
    ]
}

# name -> expected usage (the normalised Usage fields), for the stand-in and the tests.
USAGE: dict[str, dict[str, int | None]] = {name: f.usage for name, f in FIXTURES.items()}
