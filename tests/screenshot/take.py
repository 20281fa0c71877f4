"""Take docs/mitmweb.png: mitmweb with seatbelt flows, rendered by headless Chromium.

    .venv/bin/python -m tests.screenshot.take [OUT.png]

It starts the stand-in LLM API and a mitmweb with the addon (as tests/e2e/test_mitmweb.py
does), sends metered traffic (a streamed chat, a tool call, an Anthropic message) and one
request over its key's balance, then opens the streamed flow's Response tab (the LLM view)
in headless Chromium with the flow list's comment column showing each flow's budget.
Offline; needs Debian's `chromium` package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import Key, anthropic_client, chat, openai_client, policy_text, tag
from tests.e2e.test_mitmweb import WebProxy
from tests.standin import StandIn

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "mitmweb.png"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1800,560", "--virtual-time-budget=8000",
]
COLUMNS = ["icon", "method", "status", "time", "comment", "path"]
AGENT = Key("agent-zero", cap=200_000, account="research")
INTERN = Key("intern", cap=300, account="research")


@dataclass
class Shot:
    png: Path
    dom: str  # the page as Chromium rendered it, to check what the picture shows
    url: str


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def traffic(proxy: WebProxy) -> None:
    """What an agent team's afternoon looks like, in four requests."""
    t = tag()
    oa = openai_client(proxy, AGENT)
    oa.chat.completions.create(**chat(f"{t} Summarise the incident report #len:40"))
    # Served verbatim from a real capture's shape (tests/wire): a streamed tool call.
    stream = oa.chat.completions.create(
        **chat(f"{t} What is the weather in Paris? #wire:openai_chat_stream_tools"),
        stream=True)
    for _ in stream:
        pass
    ac = anthropic_client(proxy, AGENT)
    ac.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=256,
        messages=[{"role": "user", "content": f"{t} Draft a status update #len:30"}])
    with ac.messages.stream(
        model="claude-sonnet-4-20250514", max_tokens=1024,
        messages=[{"role": "user", "content": f"{t} #wire:anthropic_messages_stream"}],
    ) as events:
        for _ in events:
            pass
    for key, ask, status in [(INTERN, "Write the whole quarterly report", 429),
                             ("sk-not-in-the-policy", "hello", 401)]:
        try:
            openai_client(proxy, key).chat.completions.create(**chat(f"{t} {ask}",
                                                                     max_tokens=2000))
        except Exception as e:  # the refusal is the point
            if getattr(e, "status_code", None) != status:
                raise


def take(out: Path, chromium: str, workdir: Path) -> Shot:
    with StandIn() as standin:
        proxy = WebProxy(workdir, policy_text([AGENT, INTERN]), upstream=standin.url,
                         extra_args=[a for c in COLUMNS for a in ("--set", f"web_columns={c}")])
        proxy.start()
        try:
            traffic(proxy)
            from tests.e2e.test_mitmweb import WebApi, by_comment

            api = WebApi(proxy)
            flows = api.json("/flows")
            streamed = next(f for f in by_comment(flows, "seatbelt: key=agent-zero")
                            if "usage_requested" in f["comment"])  # the tool call
            query = f"?token={proxy.token}" if proxy.needs_token else ""
            url = f"http://127.0.0.1:{proxy.web_port}/{query}#/flows/{streamed['id']}/response"
            profile = workdir / "chromium-profile"
            base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
            subprocess.run([*base, f"--screenshot={out}", url], check=True,
                           capture_output=True, timeout=120)
            dom = subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True,
                                 text=True, timeout=120).stdout
        finally:
            proxy.stop()
    return Shot(out, dom, url)


def main(argv: list[str]) -> int:
    chromium = chromium_binary()
    if chromium is None:
        print("take: chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shot = take(out.resolve(), chromium, Path(tmp))
    print(f"take: wrote {out} ({out.stat().st_size} bytes) from {shot.url.split('?')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
