"""Wire fixtures: exact response bodies as the LLM APIs send them (read by seatbelt/apis/).

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
        matches = [p for p in HERE.iterdir()
                   if p.stem == name and p.suffix in (".sse", ".json", ".ndjson")]
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
    family: str  # openai | anthropic | responses | gemini | ollama
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
_NDJSON = "application/x-ndjson"
_RESP = "/v1/responses"
_GEM = "/v1beta/models/gemini-2.5-flash"
_RQ = ("Explain in one sentence what a token budget for an LLM agent is and why it must be "
       "reserved before the call.")
_RESP_ANSWER = (
    "A token budget caps how much an agent may spend; the proxy reserves the worst case before "
    "each call and settles the real usage afterwards, so retries and fan-out can never push "
    "the total past the cap."
)
_GQ = "In two sentences, how does a metering proxy keep an agent under its token cap?"
_G_ANSWER = (
    "Seatbelt reserves each request's worst case before it leaves the proxy, streams the answer "
    "through untouched, and settles the tokens the API reports once it ends."
)
_OQ = "Why is the sky blue? One sentence."
_O_ANSWER = (
    "The sky looks blue because air molecules scatter short blue wavelengths of sunlight far "
    "more than the longer red ones."
)

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
        # -- OpenAI Responses --
        Fixture(
            "responses.json", "responses", _RESP, _JSON,
            {"model": "gpt-5-mini", "instructions": "Answer in one sentence.", "input": _RQ},
            _usage(39, 48, 0, None, 0), _RESP_ANSWER,
        ),
        Fixture(
            "responses_stream.sse", "responses", _RESP, _SSE,
            {"model": "gpt-5-mini", "instructions": "Answer in one sentence.", "input": _RQ,
             "stream": True, "reasoning": {"effort": "low"}},
            _usage(39, 112, 0, None, 64), _RESP_ANSWER,
            notes="usage in response.completed; the text repeats in .done events (counted once)",
        ),
        Fixture(
            "responses_stream_incomplete.sse", "responses", _RESP, _SSE,
            {"model": "gpt-5-mini", "instructions": "Answer in one sentence.", "input": _RQ,
             "stream": True, "max_output_tokens": 88},
            _usage(39, 88, 0, None, 64), _RESP_ANSWER[:96],
            notes="response.incomplete (max_output_tokens) carries the usage",
        ),
        Fixture(
            "responses_stream_failed.sse", "responses", _RESP, _SSE,
            {"model": "gpt-5-mini", "input": _RQ, "stream": True},
            _usage(), _RESP_ANSWER[:40], upstream_error=True,
            notes="error event, then response.failed with usage null: estimated",
        ),
        Fixture(
            "responses_stream_tools.sse", "responses", _RESP, _SSE,
            {"model": "gpt-5-mini", "stream": True,
             "input": [{"role": "user", "content": "What is the weather in Paris right now? "
                        "Use the tool."}],
             "tools": [{"type": "function", "name": "get_weather",
                        "description": "Current weather for a place",
                        "parameters": {"type": "object", "properties": {
                            "location": {"type": "string"}, "unit": {"type": "string"}}}}]},
            _usage(96, 18, 64, None, 0), '{"location":"Paris, France","unit":"celsius"}',
            notes="function_call_arguments deltas, cached input",
        ),
        # -- Gemini --
        Fixture(
            "gemini.json", "gemini", _GEM + ":generateContent", _JSON,
            {"contents": [{"role": "user", "parts": [
                {"text": "Where and when were the 2024 Olympics held?"}]}],
             "tools": [{"google_search": {}}]},
            _usage(13 + 41, 18 + 88, 0, None, 88),
            "The 2024 Olympic Games were held in Paris, France, from 26 July to 11 August.",
            notes="prompt includes toolUsePromptTokenCount; completion includes thoughts",
        ),
        Fixture(
            "gemini_stream.sse", "gemini", _GEM + ":streamGenerateContent", _SSE,
            {"contents": [{"role": "user", "parts": [{"text": _GQ}]}],
             "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}},
            _usage(23, 39 + 212, None, None, 212), _G_ANSWER,
            notes="?alt=sse, CRLF frames, usageMetadata on every chunk: the last wins",
        ),
        Fixture(
            "gemini_stream_array.json", "gemini", _GEM + ":streamGenerateContent", _JSON,
            {"contents": [{"role": "user", "parts": [{"text": _GQ}]}],
             "generationConfig": {"maxOutputTokens": 256}},
            _usage(23, 39), _G_ANSWER,
            notes="no alt=sse: one pretty-printed JSON array, CRLF between elements",
        ),
        Fixture(
            "gemini_stream_array_error.json", "gemini", _GEM + ":streamGenerateContent", _JSON,
            {"contents": [{"role": "user", "parts": [{"text": _GQ}]}]},
            _usage(23), "Seatbelt reserves each request's worst case before",
            upstream_error=True,
            notes="an error element after output: prompt reported, completion estimated",
        ),
        # -- Ollama native --
        Fixture(
            "ollama_chat_stream.ndjson", "ollama", "/api/chat", _NDJSON,
            {"model": "llama3.2", "messages": [{"role": "user", "content": _OQ}]},
            _usage(18, 28), _O_ANSWER, notes="streams by default; counts on done:true",
        ),
        Fixture(
            "ollama_chat.json", "ollama", "/api/chat", "application/json; charset=utf-8",
            {"model": "llama3.2", "stream": False, "options": {"num_predict": 128},
             "messages": [{"role": "user", "content": _OQ}]},
            _usage(18, 28), _O_ANSWER,
        ),
        Fixture(
            "ollama_generate_stream.ndjson", "ollama", "/api/generate", _NDJSON,
            {"model": "qwen3:4b", "prompt": "Write a haiku about rain.", "think": True,
             "options": {"num_predict": -1}},
            _usage(None, 36),
            "The user wants a haiku about rain, five seven five syllables."
            "Soft rain on the roof\nwhispers to the sleeping town\nmorning smells of earth",
            notes="KV-cached prompt: no prompt_eval_count (unknown, estimated); thinking text",
        ),
        Fixture(
            "ollama_chat_stream_error.ndjson", "ollama", "/api/chat", _NDJSON,
            {"model": "llama3.2", "messages": [{"role": "user", "content": _OQ}]},
            _usage(), _O_ANSWER[:50], upstream_error=True,
            notes="a final {\"error\": ...} line after a 200",
        ),
    ]
}

# name -> expected usage (the normalised Usage fields), for the stand-in and the tests.
USAGE: dict[str, dict[str, int | None]] = {name: f.usage for name, f in FIXTURES.items()}
