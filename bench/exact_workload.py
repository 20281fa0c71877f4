"""How often an English workload near its cap is refused: the byte bound alone vs exact counts.

    python -m bench.exact_workload [--requests 330] [--cap 8000] [--low 0.2]

One real mitmdump with seatbelt in front of the stand-in, which bills every prompt with
tiktoken's cl100k_base (`#bill:cl100k`, tests/standin/server.py). Request i goes to its
own key with `--cap` tokens left, and needs (by that bill, its 200 output tokens included)
between `--low` (default 20%) and 98% of it. Each request is sent twice: as `gpt-4` (a
public tokenizer: counted exactly where the bound would refuse) and as `house-model` (no
tokenizer: the byte bound stands). Prints how many each way were refused, and whether any
settled past its cap.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.admission import dense
from tests.e2e.conftest import Key, Proxy, http_module, policy_text
from tests.standin import StandIn
from tests.standin.server import billed_prompt

OUTPUT = 200


def _prompt(rng: random.Random, target: int) -> dict[str, Any]:
    """A chat body whose cl100k bill plus OUTPUT is about `target` tokens."""
    words = max(1, target - OUTPUT)
    body: dict[str, Any] = {}
    for _ in range(4):  # billed tokens per word is ~1.05: a few corrections get close
        text = dense.english_text(words, seed=rng.randrange(1 << 30)) + " #bill:cl100k"
        body = {"max_tokens": OUTPUT, "messages": [{"role": "user", "content": text}]}
        got = billed_prompt("chat", body) + OUTPUT
        words = max(1, round(words * target / got))
    return body


def run(requests: int, cap: int, low: float = 0.2, seed: int = 13) -> dict[str, Any]:
    rng = random.Random(seed)
    keys = {(m, i): Key(f"w-{m}-{i}", cap=cap) for m in ("exact", "bound")
            for i in range(requests)}
    bodies = [_prompt(rng, int(cap * rng.uniform(low, 0.98))) for _ in range(requests)]
    http = http_module()
    out: dict[str, Any] = {"requests": requests, "cap": cap, "low": low}
    with StandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        proxy = Proxy(Path(tmp), policy_text(list(keys.values())), upstream=standin.url).start()
        try:
            def one(job: tuple[str, int]) -> tuple[str, int, int]:
                mode, i = job
                model = "gpt-4" if mode == "exact" else "house-model"
                r = http.post(proxy.url + "/v1/chat/completions", timeout=60,
                              headers={"authorization": f"Bearer {keys[job].credential}"},
                              content=json.dumps({"model": model, **bodies[i]}).encode())
                return mode, i, r.status_code

            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(one, keys))
            report = {r.get("key"): r for r in proxy.report()}
            for mode in ("exact", "bound"):
                statuses = [s for m, _, s in results if m == mode]
                rows = [report[keys[(mode, i)].id] for i in range(requests)]
                out[mode] = {"served": statuses.count(200), "refused": statuses.count(429),
                             "other": len(statuses) - statuses.count(200) - statuses.count(429),
                             "over_cap": sum(1 for r in rows if r["spent"] > cap),
                             "max_spent": max(r["spent"] for r in rows)}
        finally:
            proxy.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=330)
    p.add_argument("--cap", type=int, default=8000)
    p.add_argument("--low", type=float, default=0.2, help="smallest need, as a share of --cap")
    a = p.parse_args(argv)
    print(json.dumps(run(a.requests, a.cap, a.low), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
