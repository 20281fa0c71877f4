"""The worst request bodies seatbelt's admission can be sent, per API family and shape.

Each shape fills a body of a given size with the structure that costs the admission path
(parse, duplicate-key check, family reads, prompt bound, media walk, re-encoding) the most
per byte: many tiny containers, media parts that each trigger the media walk's work,
nesting up to the depth limit, escapes that decode to more than they look, many messages,
one huge tool schema. bench/stall_bench.py admits them and measures the event loop's lag.
"""

from __future__ import annotations

import json
from typing import Callable

MAX_DEPTH = 128  # seatbelt/codec/requestbody.py's (tests/test_bench_smoke.py checks): a
# constant here so that the same shapes can be sent to a seatbelt from before the limit
MODEL = "gpt-4o-mini"

# family -> (method, path, extra headers)
PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/gemini-2.0-flash:generateContent",
    "responses": "/v1/responses",
}
FAMILIES = tuple(PATHS)

# One media part in each family's spelling: what the media walk must recognise.
_MEDIA = {
    "openai": '{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}',
    "anthropic": '{"type":"image","source":{"type":"base64","media_type":"image/png",'
                 '"data":"AA"}}',
    "gemini": '{"inlineData":{"mimeType":"image/png","data":"AA"}}',
    "responses": '{"type":"input_image","image_url":"data:image/png;base64,AA"}',
}
# The shortest object the walk takes for a media part: a bare part type.
_TYPE = {
    "openai": '{"type":"image_url"}',
    "anthropic": '{"type":"image"}',
    "gemini": '{"fileData":{}}',
    "responses": '{"type":"input_image"}',
}


def _repeat(unit: str, size: int, sep: str = ",") -> str:
    """`unit` joined by `sep`, about `size` characters in all."""
    return sep.join([unit] * max(1, size // (len(unit) + len(sep))))


def _wrap(family: str, content: str) -> str:
    """A body of `family` whose one user message has `content` (a JSON value) as content."""
    if family == "openai":
        return (f'{{"model":"{MODEL}","max_tokens":16,'
                f'"messages":[{{"role":"user","content":{content}}}]}}')
    if family == "anthropic":
        return (f'{{"model":"claude-sonnet-4-5","max_tokens":16,'
                f'"messages":[{{"role":"user","content":{content}}}]}}')
    if family == "gemini":
        return (f'{{"generationConfig":{{"maxOutputTokens":16}},'
                f'"contents":[{{"role":"user","parts":{content}}}]}}')
    return f'{{"model":"{MODEL}","max_output_tokens":16,"input":[{{"role":"user",' \
           f'"content":{content}}}]}}'


# How deep the content value of `_wrap`'s body sits: body {} -> messages [] -> message {}.
_FRAMING = 3


def deep(family: str, size: int) -> str:
    """Arrays nested to the depth limit, each innermost holding "image", side by side."""
    levels = MAX_DEPTH - _FRAMING
    one = "[" * levels + '"image"' + "]" * levels
    return _wrap(family, "[" + _repeat(one[1:-1], size) + "]")


def too_deep(family: str, size: int) -> str:
    """One level deeper than the limit (refused 400 before it is parsed)."""
    levels = MAX_DEPTH - _FRAMING + 1
    return _wrap(family, "[" * levels + '"image"' + "]" * levels)


def very_deep(family: str, size: int) -> str:
    """Nested as deep as the size allows (half a body of '[': ~5 million levels)."""
    levels = size // 2
    return _wrap(family, "[" * levels + "]" * levels)


def tiny_arrays(family: str, size: int) -> str:
    return _wrap(family, "[" + _repeat("[]", size) + "]")


def tiny_objects(family: str, size: int) -> str:
    return _wrap(family, "[" + _repeat("{}", size) + "]")


def media_parts(family: str, size: int) -> str:
    return _wrap(family, "[" + _repeat(_MEDIA[family], size) + "]")


def type_parts(family: str, size: int) -> str:
    return _wrap(family, "[" + _repeat(_TYPE[family], size) + "]")


def data_urls(family: str, size: int) -> str:
    return _wrap(family, "[" + _repeat('"data:image/png;base64,A"', size) + "]")


def escaped(family: str, size: int) -> str:
    """One string of \\uXXXX escapes (6 bytes of JSON for 3 bytes of text)."""
    text = '"' + "\\u4e16" * (size // 6) + '"'
    if family == "gemini":
        return _wrap(family, f'[{{"text":{text}}}]')
    return _wrap(family, text)


def messages(family: str, size: int) -> str:
    """Many short messages (the per-message overhead is counted per message)."""
    if family == "gemini":
        one = '{"role":"user","parts":[{"text":"a"}]}'
        return (f'{{"generationConfig":{{"maxOutputTokens":16}},'
                f'"contents":[{_repeat(one, size)}]}}')
    one = '{"role":"user","content":"a"}'
    key = "input" if family == "responses" else "messages"
    limit = "max_output_tokens" if family == "responses" else "max_tokens"
    return f'{{"model":"{MODEL}","{limit}":16,"{key}":[{_repeat(one, size)}]}}'


def tool_schema(family: str, size: int) -> str:
    """One tool whose parameter schema has as many properties as fit, each an object."""
    prop = '"p":{"type":"object","properties":{"q":{"type":"string","enum":["image"]}}}'
    props = ",".join(prop.replace('"p"', f'"p{i}"') for i in range(size // (len(prop) + 6)))
    schema = f'{{"type":"object","properties":{{{props}}}}}'
    if family == "anthropic":
        tools = f'[{{"name":"t","input_schema":{schema}}}]'
    elif family == "gemini":
        tools = f'[{{"functionDeclarations":[{{"name":"t","parameters":{schema}}}]}}]'
    elif family == "responses":
        tools = f'[{{"type":"function","name":"t","parameters":{schema}}}]'
    else:
        tools = f'[{{"type":"function","function":{{"name":"t","parameters":{schema}}}}}]'
    body = json.loads(_wrap(family, '"hi"'))
    head = json.dumps(body, separators=(",", ":"))[:-1]
    return f'{head},"tools":{tools}}}'


SHAPES: dict[str, Callable[[str, int], str]] = {
    "deep": deep,
    "tiny_arrays": tiny_arrays,
    "tiny_objects": tiny_objects,
    "media_parts": media_parts,
    "type_parts": type_parts,
    "data_urls": data_urls,
    "escaped": escaped,
    "messages": messages,
    "tool_schema": tool_schema,
    "too_deep": too_deep,
    "very_deep": very_deep,
}


def body(shape: str, family: str, size: int) -> bytes:
    return SHAPES[shape](family, size).encode()
