"""seatbelt in a real mitmweb: what a developer sees, read through mitmweb's own HTTP API.

One mitmweb (the one next to the mitmdump under test: 12 in the main pass, 11 in the compat
pass) runs the addon with `-w`, takes a streamed and a buffered request and a refusal, and
the test then reads, as the browser UI would: the flow list (`GET /flows`, with the token
mitmweb requires from 11.1.2 on), the auto-selected contentview of a streamed response, and
the `seatbelt.status` command; finally the `-w` file, reloaded with FlowReader.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import io as mitmio

from seatbelt.records.comment import detail
from seatbelt.ui.contentview import summarize
from tests.e2e.conftest import (
    Key,
    Proxy,
    anthropic_client,
    chat,
    mitmdump_binary,
    openai_client,
    policy_text,
    refusal,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

AGENT = Key("agent-zero", cap=200_000, account="research")
POOR = Key("poor", cap=20, account="research")
NO_ENTRY = "\u26d4"  # how mitmweb spells flow.marked == ":no_entry:"


def mitmweb_binary() -> str:
    return str(Path(mitmdump_binary()).with_name("mitmweb"))


def mitmweb_version() -> tuple[int, ...]:
    out = subprocess.run([mitmweb_binary(), "--version"], capture_output=True, text=True,
                         timeout=60).stdout
    m = re.search(r"Mitmproxy:\s*(\d+)\.(\d+)\.(\d+)", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


class WebProxy(Proxy):
    """The e2e Proxy, started as mitmweb with a fixed token and a `-w` file."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.web_port = self._free_port()
        self.token = secrets.token_hex(16)
        self.flows_path = self.workdir / "flows.mitm"
        self.needs_token = mitmweb_version() >= (11, 1, 2)

    @staticmethod
    def _free_port() -> int:
        from tests.e2e.conftest import free_port

        return free_port()

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[0] = mitmweb_binary()
        cmd += ["--web-host", "127.0.0.1", "--web-port", str(self.web_port),
                "--set", "web_open_browser=false", "-w", str(self.flows_path)]
        if self.needs_token:  # 11.0.2 has no such option and no auth
            cmd += ["--set", f"web_password={self.token}"]
        return cmd


class WebApi:
    """mitmweb's HTTP API as its UI uses it: bearer token, XSRF header on POST."""

    def __init__(self, proxy: WebProxy) -> None:
        self.base = f"http://127.0.0.1:{proxy.web_port}"
        self.token = proxy.token

    def _open(self, req: urllib.request.Request) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        return self._open(req)

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def command(self, name: str, *args: str) -> Any:
        """POST /commands/NAME like the command bar. Tornado's XSRF check wants the same
        token in a cookie and a header; the UI gets the cookie over its websocket, a script
        may choose it (11 names the cookie `_xsrf`, 12 `_mitmproxy_xsrf`)."""
        xsrf = secrets.token_hex(16)
        req = urllib.request.Request(
            f"{self.base}/commands/{name}", method="POST",
            data=json.dumps({"arguments": list(args)}).encode(),
            headers={"Content-Type": "application/json", "X-XSRFToken": xsrf,
                     "Cookie": f"_xsrf={xsrf}; _mitmproxy_xsrf={xsrf}",
                     "Authorization": f"Bearer {self.token}"},
        )
        status, body = self._open(req)
        assert status == 200, (name, status, body[:300])
        return json.loads(body)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, standin: StandIn) -> Any:
    proxy = WebProxy(tmp_path_factory.mktemp("mitmweb"), policy_text([AGENT, POOR]),
                     upstream=standin.url)
    proxy.start()
    yield proxy
    proxy.stop()


def by_comment(flows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Flows whose comment's detail (after the glanceable lead) starts with `prefix`."""
    return [f for f in flows if detail(f.get("comment") or "").startswith(prefix)]


def test_developer_sees_budget_view_and_status_in_mitmweb(web: WebProxy,
                                                          standin: StandIn) -> None:
    api = WebApi(web)
    t = tag()
    # 1. a streamed chat the client did not ask usage for, 2. a buffered Anthropic message
    stream = openai_client(web, AGENT).chat.completions.create(
        **chat(f"{t} stream #len:12", max_tokens=40), stream=True)
    said = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    anthropic_client(web, AGENT).messages.create(
        model="claude-sonnet-4-20250514", max_tokens=30,
        messages=[{"role": "user", "content": f"{t} hello #len:5"}])
    # 3. refused: its reservation does not fit in a 20-token balance
    import openai

    with pytest.raises(openai.RateLimitError) as e:
        openai_client(web, POOR).chat.completions.create(**chat(f"{t} refused", max_tokens=50))
    assert refusal(e.value)[0] == 429
    upstream = standin.received(t)
    assert len(upstream) == 2  # the refused request never left the proxy
    audit = web.wait_audit(AGENT.id, 2)
    web.wait_audit(POOR.id, 1)

    if web.needs_token:  # mitmweb >= 11.1.2: the flow list is not readable without it
        assert api.get("/flows", auth=False)[0] == 403
    flows = wait_for("three seatbelt flows in mitmweb", lambda: (
        fl if len(by_comment(fl := api.json("/flows"), "seatbelt:")) >= 3 else None))

    metered = by_comment(flows, f"seatbelt: key={AGENT.id} account=research reserved=")
    assert len(metered) == 2
    comment = re.compile(r"^seatbelt: key=agent-zero account=research reserved=(\d+) "
                         r"spent=(\d+)\+(\d+) \(reported\)( edits=[a-z_,]+)?$")
    spends = []
    for f in metered:
        m = comment.match(detail(f["comment"]))
        assert m, f["comment"]
        spends.append(int(m.group(2)) + int(m.group(3)))
        assert not f["marked"]
    assert sorted(spends) == sorted(a["prompt_tokens"] + a["completion_tokens"] for a in audit)
    streamed = next(f for f in metered if f["request"]["path"].endswith("/chat/completions"))
    assert "usage_requested" in streamed["comment"]  # seatbelt asked upstream for usage

    (refused,) = by_comment(flows, "seatbelt: refused ")
    assert refused["comment"].startswith(
        f"insufficient_quota {POOR.id} · seatbelt: refused insufficient_quota key={POOR.id} "
        "account=research reserved=")
    assert refused["marked"] == NO_ENTRY
    assert refused["response"]["status_code"] == 429
    for f in flows:  # no credential reaches the UI
        assert AGENT.credential not in json.dumps(f) and POOR.credential not in json.dumps(f)

    # The Response tab of the streamed flow: the kept body, auto-shown by the LLM view.
    view = api.json(f"/flows/{streamed['id']}/response/content/auto.json")
    text = view.get("text") or "\n".join(
        "".join(part[1] for part in line) for line in view["lines"])
    if "view_name" in view:  # mitmproxy 12
        assert view["view_name"] == "LLM"
    else:  # mitmproxy 11 reports the view's description
        assert view["description"].startswith("openai chat: SSE")
    assert said and said in text
    assert "── assistant ──" in text and "data:" not in text

    # The command bar: seatbelt.status answers from the runtime's last ledger snapshot
    # (taken within a second of any change; "not read yet" right after start-up).
    def agent_line() -> str | None:
        lines = api.command("seatbelt.status").get("value") or []
        line = next((x for x in lines if x.startswith(f"research/{AGENT.id}:")), "")
        return line if f"spent={sum(spends)} reserved=0" in line else None

    line = wait_for("seatbelt.status to show the settled spend", agent_line)
    assert f"window=balance cap={AGENT.cap} " in line
    assert f"remaining={AGENT.cap - sum(spends)}" in line
    assert any(x.startswith(f"research/{POOR.id}: window=balance cap=20 spent=0 ")
               for x in api.command("seatbelt.status")["value"])

    # `-w`: the saved flows reload with their comments and marks.
    assert web.stop() == 0
    with open(web.flows_path, "rb") as fh:
        saved = {f.id: f for f in mitmio.FlowReader(fh).stream()}
    for f in flows:
        if f["comment"].startswith("seatbelt:"):
            assert saved[f["id"]].comment == f["comment"]
    assert saved[refused["id"]].marked == ":no_entry:"
    kept = saved[streamed["id"]].response
    summary = summarize(kept.content, kept.headers.get("content-type", ""))
    assert summary is not None and summary.output_text() == said


GEM_SSE = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def _hanging_stream(web: WebProxy, path: str, body: dict[str, Any], headers: dict[str, str]
                    ) -> Any:
    """A stream the stand-in holds open after its first frame: the flow is in flight."""
    from tests.e2e.conftest import http_module

    httpx = http_module()
    client = httpx.Client(timeout=30)
    resp = client.send(client.build_request("POST", web.url + path, json=body,
                                            headers=headers), stream=True)
    assert resp.status_code == 200, resp.read()[:300]
    lines = resp.iter_lines()  # kept: a dropped iterator would close the stream
    next(lines)  # the first frame: the request is at the upstream
    return client, resp, lines


def _in_flight_views(web: WebProxy, *path_parts: str) -> tuple[str, bytes]:
    """What mitmweb serves of the flows in flight (one per path part): /flows (its UI) and
    /flows/dump (its download, mitmproxy's own flow format from `get_state`)."""
    api = WebApi(web)

    def in_flight() -> list[dict[str, Any]] | None:
        flows = [f for f in api.json("/flows") if (f.get("response") or {}).get(
            "timestamp_end") is None and any(p in f["request"]["path"] for p in path_parts)]
        return flows if len(flows) == len(path_parts) else None

    flows = wait_for("the flows in flight in mitmweb", in_flight)
    status, dump = api.get("/flows/dump")
    assert status == 200 and dump
    return json.dumps(flows), dump


def test_mitmweb_shows_no_credential_in_flight_not_in_the_query_nor_in_its_dump(
        tmp_path: Path, standin: StandIn) -> None:
    """A Gemini `?key=` and an OpenAI bearer key, both real keys of the client, while their
    streams hang at the upstream (which did receive them): mitmweb's flow list and its
    dump show placeholders (issue 14, item 5)."""
    web = WebProxy(tmp_path / "web", policy_text([AGENT]), upstream=standin.url)
    web.start()
    t = tag()
    gem = {"contents": [{"role": "user", "parts": [{"text": f"{t} gem #hang"}]}],
           "generationConfig": {"maxOutputTokens": 20}}
    opened = [_hanging_stream(web, f"{GEM_SSE}&key={AGENT.credential}", gem, {}),
              _hanging_stream(web, "/v1/chat/completions",
                              {**chat(f"{t} oai #hang", max_tokens=20), "stream": True},
                              {"authorization": f"Bearer {AGENT.credential}"})]
    try:
        (gem_up,) = standin.received(f"{t} gem")
        assert f"key={AGENT.credential}" in gem_up.path  # the real key went upstream
        (oai_up,) = standin.received(f"{t} oai")
        assert oai_up.header("authorization") == f"Bearer {AGENT.credential}"
        shown, dump = _in_flight_views(web, "streamGenerateContent", "/chat/completions")
        assert AGENT.credential not in shown and AGENT.credential.encode() not in dump
        for text in (shown, dump.decode("utf-8", "replace")):
            assert "hidden by seatbelt" in text and "key=[hidden-by-seatbelt]" in text
        assert "alt=sse" in shown  # the rest of the query is as sent
    finally:
        for client, resp, _ in opened:
            resp.close()
            client.close()
        web.stop()


VIRTUAL_REAL = "AIza-real-provider-" + "5" * 20
VIRTUAL_ENV = "SEATBELT_E2E_WEB_UPSTREAM_KEY"


def test_mitmweb_shows_no_virtual_keys_real_query_key_in_flight_nor_in_its_dump(
        tmp_path: Path, standin: StandIn) -> None:
    """The virtual-key swap into `?key=`: the upstream gets the real key, mitmweb's /flows
    and /flows/dump never show it (nor the virtual one)."""
    virtual = Key("web-virtual")
    policy = policy_text([virtual]).replace(
        f"  - id: {virtual.id}\n", f"  - id: {virtual.id}\n    upstream_credential_env: "
        f"{VIRTUAL_ENV}\n    upstream_hosts: [127.0.0.1]\n", 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(VIRTUAL_ENV, VIRTUAL_REAL)
        web = WebProxy(tmp_path / "web", policy, upstream=standin.url)
        web.start()
    try:
        t = tag()
        body = {"contents": [{"role": "user", "parts": [{"text": f"{t} #hang"}]}],
                "generationConfig": {"maxOutputTokens": 20}}
        client, resp, _lines = _hanging_stream(web, f"{GEM_SSE}&key={virtual.credential}", body, {})
        try:
            (up,) = standin.received(t)
            assert f"key={VIRTUAL_REAL}" in up.path
            shown, dump = _in_flight_views(web, "streamGenerateContent")
            for secret in (VIRTUAL_REAL, virtual.credential):
                assert secret not in shown and secret.encode() not in dump
            assert "key=[hidden-by-seatbelt]" in shown
        finally:
            resp.close()
            client.close()
    finally:
        web.stop()
