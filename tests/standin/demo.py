"""`./run.sh demo`: seatbelt end to end on a machine with no internet, in under a minute.

Starts the stand-in LLM API on loopback, mitmdump with the addon in reverse mode in front of
it (a small demo policy; ledger, audit log and saved flows under `state/demo/`), sends a burst
of real OpenAI and Anthropic SDK traffic through it, prints what was metered and refused,
and how to open the same flows in mitmweb. Exit status 0 when the burst was both served and
refused as expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.standin.server import StandIn

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / "state" / "demo"
APP_CRED = "sk-demo-app-0001"  # demo-only secrets: never written anywhere by the proxy
AGENT_CRED = "sk-demo-agent-0002"
UNKNOWN_CRED = "sk-demo-nobody-0003"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


POLICY = f"""\
version: 1
require_auth: true
fallback_max_output: 1024
models:
  gpt-4o-mini: {{max_output: 16384}}
  claude-sonnet-4-0: {{max_output: 64000}}
accounts:
  demo: {{cap: 100000, window: balance}}
keys:
  - id: app              # a well-behaved app with a balance budget
    account: demo
    credential_sha256: {_sha(APP_CRED)}
    cap: 2000
  - id: agent            # a runaway agent on a small hourly budget
    account: demo
    credential_sha256: {_sha(AGENT_CRED)}
    cap: 400
    window: {{rolling: 3600}}
"""


def _binary(name: str) -> str:
    if name == "mitmdump" and os.environ.get("SEATBELT_MITMDUMP"):
        return os.environ["SEATBELT_MITMDUMP"]
    return str(Path(sys.executable).with_name(name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(port: int, metrics: int) -> bool:
    """Listen port bound (probed by binding it, not by connecting) and /readyz says 200."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            pass
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def start_proxy(upstream: str, port: int, metrics: int) -> subprocess.Popen[bytes]:
    """mitmdump with the addon, its output in state/demo/mitmdump.log; fails loudly."""
    cmd = [
        _binary("mitmdump"), "-s", str(REPO / "seatbelt" / "addon.py"),
        "--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1", "-p", str(port),
        "-w", str(STATE / "flows.mitm"),
        "--set", f"seatbelt_policy={STATE / 'policy.yaml'}",
        "--set", f"seatbelt_ledger=sqlite:///{STATE / 'ledger.db'}",
        "--set", f"seatbelt_audit={STATE / 'audit.jsonl'}",
        "--set", f"seatbelt_metrics=127.0.0.1:{metrics}",
        "--set", f"confdir={STATE / 'confdir'}",
    ]
    with open(STATE / "mitmdump.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _ready(port, metrics):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_proxy(proc)
            raise SystemExit("mitmdump did not start:\n" + _log_tail())
        time.sleep(0.1)
    return proc


def stop_proxy(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _log_tail() -> str:
    try:
        return (STATE / "mitmdump.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def burst(base: str) -> list[tuple[str, str]]:
    """Real SDK traffic; returns (what, result) per request."""
    import anthropic
    import openai

    results: list[tuple[str, str]] = []
    app = openai.OpenAI(base_url=base + "/v1", api_key=APP_CRED, max_retries=0)
    claude = anthropic.Anthropic(base_url=base, api_key=APP_CRED, max_retries=0)
    user = [{"role": "user", "content": "Say hello in a few words. #len:12"}]

    def run(what: str, call: Any) -> None:
        try:
            call()
            results.append((what, "served"))
        except (openai.APIStatusError, anthropic.APIStatusError) as e:
            refused = e.response.headers.get("x-seatbelt-refused", "upstream error")
            results.append((what, f"{e.status_code} {refused}"))

    run("app: openai chat", lambda: app.chat.completions.create(
        model="gpt-4o-mini", messages=user, max_tokens=50))
    run("app: openai chat, streamed", lambda: list(app.chat.completions.create(
        model="gpt-4o-mini", messages=user, stream=True, max_tokens=50)))
    run("app: openai embeddings", lambda: app.embeddings.create(
        model="text-embedding-3-small", input=["seatbelt", "budget"]))
    run("app: anthropic message", lambda: claude.messages.create(
        model="claude-sonnet-4-0", max_tokens=64, messages=user))

    def claude_stream() -> None:
        with claude.messages.stream(model="claude-sonnet-4-0", max_tokens=64,
                                    messages=user) as s:
            s.get_final_message()

    run("app: anthropic message, streamed", claude_stream)
    run("app: asks for more than its budget", lambda: app.chat.completions.create(
        model="gpt-4o-mini", messages=user, max_tokens=5000))
    nobody = openai.OpenAI(base_url=base + "/v1", api_key=UNKNOWN_CRED, max_retries=0)
    run("unknown key", lambda: nobody.chat.completions.create(
        model="gpt-4o-mini", messages=user, max_tokens=5))

    # The runaway agent: 12 concurrent streams against a 400-token hourly cap.
    agent_msgs = [{"role": "user", "content": "Plan the next step. #len:40 #slow:20"}]
    lock = threading.Lock()

    def agent_call(i: int) -> None:
        client = openai.OpenAI(base_url=base + "/v1", api_key=AGENT_CRED, max_retries=0)
        try:
            list(client.chat.completions.create(model="gpt-4o-mini", messages=agent_msgs,
                                                stream=True, max_tokens=40))
            outcome = "served"
        except openai.APIStatusError as e:
            outcome = f"{e.status_code} {e.response.headers.get('x-seatbelt-refused')}"
        with lock:
            results.append((f"agent: fan-out stream {i:2d}", outcome))

    threads = [threading.Thread(target=agent_call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _wait_audit(count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            text = (STATE / "audit.jsonl").read_text()
            lines = [json.loads(x) for x in text.splitlines() if x.strip()]
        except OSError:
            pass
        if len(lines) >= count:
            break
        time.sleep(0.1)
    return lines


def show(results: list[tuple[str, str]], audit: list[dict[str, Any]]) -> None:
    print("\n== requests ==")
    for what, outcome in results:
        print(f"  {what:38} {outcome}")
    print("\n== audit log (state/demo/audit.jsonl), one line per request; a few of them ==")
    picks = [a for a in audit if a.get("outcome") == "served"][:3]
    picks += [a for a in audit if a.get("outcome") != "served"][:3]
    for a in picks:
        short = {k: a.get(k) for k in ("key", "provider", "model", "stream", "reserved",
                                       "prompt_tokens", "completion_tokens", "usage_source",
                                       "outcome", "status", "edits")}
        print("  " + json.dumps(short))
    print("\n== report (python -m seatbelt.cli.report) ==")
    report = subprocess.run(
        [sys.executable, "-m", "seatbelt.cli.report", "--ledger",
         f"sqlite:///{STATE / 'ledger.db'}", "--policy", str(STATE / "policy.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    print(report.stdout.rstrip() or report.stderr.rstrip())


def main() -> int:
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    (STATE / "policy.yaml").write_text(POLICY)
    port, metrics = _free_port(), _free_port()
    with StandIn() as api:
        print(f"stand-in LLM API on {api.url}; seatbelt (mitmdump) on http://127.0.0.1:{port}")
        proc = start_proxy(api.url, port, metrics)
        try:
            results = burst(f"http://127.0.0.1:{port}")
            audit = _wait_audit(len(results))
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
                spend = [line for line in r.read().decode().splitlines()
                         if line.startswith("seatbelt_spend_tokens_total")]
        finally:
            stop_proxy(proc)
        upstream_hits = len(api.received())
    show(results, audit)
    print("\n== metrics (seatbelt_spend_tokens_total) ==")
    for line in spend:
        print("  " + line)
    served = sum(1 for _, o in results if o == "served")
    refused = len(results) - served
    print(f"\n{served} served, {refused} refused; the upstream saw {upstream_hits} requests "
          "(refusals never reach it).")
    secrets = [c.encode() for c in (APP_CRED, AGENT_CRED, UNKNOWN_CRED)]
    leaked = [p.name for p in STATE.iterdir() if p.is_file() and p.name != "policy.yaml"
              and any(c in p.read_bytes() for c in secrets)]
    print("raw credentials in the saved flows, audit log and proxy log: "
          + (", ".join(leaked) if leaked else "none"))
    print("\nOpen the same flows in mitmweb:")
    print(f"  ./run.sh web --rfile {STATE.relative_to(REPO) / 'flows.mitm'}"
          "   (the LLM view, comments and refusal marks come with the addon)")
    print("Or run it live: python -m tests.standin --port 8000, then")
    print("  ./run.sh web --mode reverse:http://127.0.0.1:8000 -p 8080")
    print("  (policies/default.yaml's demo key: base_url http://127.0.0.1:8080/v1, "
          "api_key sk-seatbelt-demo)")
    ok = (served >= 5 and refused >= 2 and upstream_hits == served
          and len(audit) == len(results) and not leaked)
    if not ok:
        print("\ndemo FAILED: unexpected outcome; mitmdump log tail:\n" + _log_tail())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
