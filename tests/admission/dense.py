"""Dense prompts: the scripts and shapes that run at more tokens per byte than English.

Shared by the estimate tests and the end-to-end bounds tests (tests/e2e/test_bounds.py).
Deterministic: every text is built from a fixed seed."""

from __future__ import annotations

import base64
import random
import string
import uuid

_RANGES = {
    "cjk": [(0x4E00, 0x9FFF)],
    "hindi": [(0x0900, 0x097F)],
    "thai": [(0x0E01, 0x0E5B)],
    "armenian": [(0x0531, 0x0587)],
    "emoji": [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F)],
}


def _script(rng: random.Random, ranges: list[tuple[int, int]], n: int) -> str:
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def dense_texts(size: int = 600, seed: int = 13) -> dict[str, str]:
    """name -> a text of about `size` characters."""
    rng = random.Random(seed)
    texts = {name: _script(rng, r, size) for name, r in _RANGES.items()}
    texts["digits"] = "".join(rng.choice(string.digits) for _ in range(size))
    texts["hex"] = " ".join(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(size // 37))
    texts["base64"] = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    texts["punctuation"] = "".join(rng.choice(string.punctuation) for _ in range(size))
    return texts


ENGLISH = (
    "The committee met on Tuesday to review the quarterly figures, and after a long "
    "discussion about the budget for the new building it agreed to postpone the decision "
    "until the engineers had finished their survey of the site. "
)


def english_text(words: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    base = ENGLISH.split()
    return " ".join(rng.choice(base) for _ in range(words))


TOOLS_OPENAI = [
    {"type": "function", "function": {
        "name": "lookup", "description": "Look a record up by its id.",
        "parameters": {"type": "object", "properties": {
            "id": {"type": "string", "description": "the record id"},
            "limit": {"type": "integer", "minimum": 1}}, "required": ["id"]}}},
]
TOOLS_ANTHROPIC = [
    {"name": "lookup", "description": "Look a record up by its id.",
     "input_schema": {"type": "object", "properties": {
         "id": {"type": "string", "description": "the record id"}}, "required": ["id"]}},
]
TOOLS_GEMINI = [
    {"functionDeclarations": [{"name": "lookup", "description": "Look a record up by its id.",
                               "parameters": {"type": "OBJECT", "properties": {
                                   "id": {"type": "STRING"}}}}]},
]
