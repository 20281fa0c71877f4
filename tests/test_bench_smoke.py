"""The benchmark harness's parts: wrk output parsing, the wrk script, the results table and
docs/speed.md block, the profile summary, the bench upstream's canned bytes, the scanner
bench's streams, and the TLS load client (bench/tls.py) for a fraction of a second against
the HTTPS upstream, alone and CONNECTing through seatbelt. No timing is asserted anywhere
(speed lives in `./run.sh bench`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import clients, proxies, report, scanner_bench, tls, upstream, wrk
from bench.profile import parse_collapsed

WRK_OUT = """\
Running 4s test @ http://127.0.0.1:41234/v1/chat/completions
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.02ms    1.10ms  21.30ms   91.20%
    Req/Sec     1.14k    61.22     1.25k    72.50%
  Latency Distribution
     50%  812.00us
     75%    7.20ms
     90%    8.01ms
     99%    1.20s
  4561 requests in 4.00s, 3.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   1140.25
Transfer/sec:    793.51KB
"""


def test_wrk_output_is_parsed():
    r = wrk.parse_output(WRK_OUT)
    assert (r.requests, r.seconds, r.rps) == (4561, 4.0, 1140.25)
    assert r.latency_ms == {"50": 0.812, "75": 7.2, "90": 8.01, "99": 1200.0}
    assert (r.errors, r.non_2xx) == (3, 5)
    assert not r.ok


def test_wrk_clean_run_is_ok_and_garbage_is_an_error():
    clean = "\n".join(line for line in WRK_OUT.splitlines()
                      if "errors" not in line and "Non-2xx" not in line)
    r = wrk.parse_output(clean)
    assert r.ok and r.errors == 0 and r.non_2xx == 0
    with pytest.raises(wrk.WrkError):
        wrk.parse_output("wrk: connection refused\n")
    with pytest.raises(wrk.WrkError):
        wrk.duration_ms("12 parsecs")
    assert wrk.duration_ms("2m") == 120_000


def test_wrk_script_posts_the_body_with_headers():
    body = json.loads(clients.request_body(stream=True))
    assert body["stream"] is True and body["max_tokens"] > 0
    assert body["stream_options"] == {"include_usage": True}
    script = wrk.lua_script(body, {"Authorization": 'Bearer sk-"quoted"'})
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert 'wrk.headers["Authorization"] = "Bearer sk-\\"quoted\\""' in script
    line = next(x for x in script.splitlines() if x.startswith("wrk.body"))
    assert json.loads(json.loads(line.split("=", 1)[1])) == body


def _result(seatbelt_json: float, seatbelt_p50: float) -> dict:
    tp = {b: {"plain": {"rps": 1150.0, "cpu_us": 870}, "passthrough": {"rps": 1000.0,
                                                                     "cpu_us": 1000},
              "seatbelt": {"rps": seatbelt_json, "cpu_us": round(1e6 / seatbelt_json)}}
          for b in ("json", "sse")}
    lat = {b: {c: {"p50_ms": p, "p99_ms": 2 * p} for c, p in
               (("plain", 0.8), ("passthrough", 0.9), ("seatbelt", seatbelt_p50))}
           for b in ("json", "sse")}
    return {
        "quick": False,
        "env": {"date": "2026-01-02", "machine": "2 x CPU", "python": "3.13.0",
                "mitmproxy": "12.3.1", "wrk": "4.1.0", "load_before": 0.2, "load_after": 0.3,
                "method": "5 rounds."},
        "upstream": {"json": {"rps": 30000}, "sse": {"rps": 12000}},
        "throughput": tp,
        "latency": lat,
        "ttfb_wait_ms": 50,
        "ttfb": {c: {"ttfb_ms": 51.0} for c in ("upstream", "plain", "passthrough", "seatbelt")},
        "memory_mb": 100,
        "memory": {"seatbelt": {"rss_before_mb": 90.0, "rss_peak_mb": 93.5, "growth_mb": 3.5,
                                "mb_per_s": 120.0, "received_mb": 100.0}},
        "scanner": {"openai-sse 64k": {"mb_per_s": 350.0, "us_per_call": 180.0,
                                       "calls_per_stream": 7}},
        "ledger": {"sqlite": {"pairs_per_s": 6000, "p50_us": 80.0, "p99_us": 300.0}},
        "stall": {"mb": 10, "idle_stall_ms": 1.5, "cases": {
            "deep": {"openai": {"stall_ms": 12.5, "admit_ms": 900.0, "status": 200}},
            "too_deep": {"openai": {"stall_ms": 0.4, "admit_ms": 1.0, "status": 400}}}},
        "checks": ["bytes unchanged"],
    }


def test_goals_are_judged_from_the_same_run():
    values = report.goal_values(_result(seatbelt_json=950.0, seatbelt_p50=1.2))
    assert values["json_ratio"] == 0.95
    assert values["added_p50_ms"] == pytest.approx(0.3)
    assert values["growth_mb"] == 3.5 and values["sqlite_pairs_s"] == 6000
    ab_parts = ("ab_", "abreast_", "instructions_")  # judged only when an A/B part ran
    assert all(report.goal_met(n, v) for n, v in values.items() if not n.startswith(ab_parts))
    assert all(v is None for n, v in values.items() if n.startswith(ab_parts))
    slow = report.goal_values(_result(seatbelt_json=500.0, seatbelt_p50=2.0))
    assert report.goal_met("json_ratio", slow["json_ratio"]) is False
    assert report.goal_met("added_p50_ms", slow["added_p50_ms"]) is False
    assert report.goal_met("json_ratio", None) is None


def test_markdown_table_names_the_machine_and_every_goal():
    text = report.markdown(_result(seatbelt_json=500.0, seatbelt_p50=0.95))
    assert "Python 3.13.0, mitmproxy 12.3.1" in text and "2026-01-02" in text
    assert "load average 0.2 before, 0.3 after" in text
    assert "| throughput, JSON, seatbelt / pass-through | >= 0.9 | 0.500 | **no** |" in text
    assert "| added p50 latency at 1 connection (JSON) | <= 0.5 | 0.050 | yes |" in text
    assert "| small JSON | 30,000 | 1,150 | 1,000 | 500 | 0.50 | 0.43 |" in text
    assert "| small JSON | 870 | 1,000 | 2,000 | +1,000 | 0.50 |" in text  # CPU per request
    assert "| seatbelt | 90.0 | 93.5 | 3.5 | 120.0 |" in text
    assert "| sqlite | 6,000 | 80.0 | 300.0 |" in text
    assert "| deep | 12.5 / 900 (200) |" in text and "| too_deep | 0.4 / 1 (400) |" in text
    assert "| worst event-loop stall admitting a 10 MB worst-shape body (ms) | < 100 | 12 " \
           "| yes |" in text
    assert "Checks: bytes unchanged." in text


def test_the_stall_shapes_are_json_of_the_depth_they_claim():
    from bench import stall_shapes
    from seatbelt.codec.requestbody import MAX_DEPTH, too_deep

    assert stall_shapes.MAX_DEPTH == MAX_DEPTH
    for family in stall_shapes.FAMILIES:
        for shape in stall_shapes.SHAPES:
            if shape == "very_deep":
                continue  # deeper than json.loads goes: its text is checked by hand below
            body = json.loads(stall_shapes.body(shape, family, 20_000))
            assert isinstance(body, dict)
            assert too_deep(body, MAX_DEPTH) is (shape == "too_deep"), (shape, family)
            assert not too_deep(body, MAX_DEPTH - 1) or shape in ("deep", "too_deep")
        text = stall_shapes.body("very_deep", family, 20_000)
        assert text.count(b"[") == text.count(b"]") >= 9_000


def test_readme_block_is_replaced_between_the_markers_only():
    readme = f"# x\n\nbefore\n{report.BEGIN}\nold table\n{report.END}\nafter\n"
    out = report.replace_block(readme, "new table\n")
    assert out == f"# x\n\nbefore\n{report.BEGIN}\nnew table\n{report.END}\nafter\n"
    assert report.replace_block(out, "new table") == out  # idempotent
    with pytest.raises(ValueError):
        report.replace_block("# no markers\n", "t")


def test_the_bench_block_lives_in_docs_speed_md():
    """`./run.sh bench --write` writes docs/speed.md (bench/__main__.py): its markers are there."""
    speed = (Path(__file__).resolve().parents[1] / "docs" / "speed.md").read_text(encoding="utf-8")
    assert report.replace_block(speed, "t").count(report.BEGIN) == 1
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert report.BEGIN not in readme


def test_profile_summary_counts_inclusive_and_self_samples():
    text = ("main (a/x.py:1);hook (seatbelt/admission/gate.py:10);reserve (ledger/sqlite.py:5) 6\n"
            "main (a/x.py:1);hook (admission/gate.py:12) 4\n"
            "garbage line\n")
    inclusive, own, total = parse_collapsed(text)
    assert total == 10
    assert inclusive["hook (admission/gate.py)"] == 10
    assert own["reserve (ledger/sqlite.py)"] == 6 and own["hook (admission/gate.py)"] == 4


def test_upstream_canned_sse_is_chunked_frame_by_frame():
    raw = upstream.SSE_RESPONSE
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head and b"text/event-stream" in head
    body, chunks = b"", 0
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
        chunks += 1
    assert body == upstream.SSE_BODY
    assert chunks == upstream.SSE_FRAMES + 3  # content frames, finish, usage, [DONE]
    assert body.endswith(b"data: [DONE]\n\n") and b'"prompt_tokens": 19' in body
    head, _, content = upstream.JSON_RESPONSE.partition(b"\r\n\r\n")
    assert f"content-length: {len(content)}".encode() in head
    assert json.loads(content)["usage"]["total_tokens"] == 27


@pytest.mark.parametrize("fixture", list(scanner_bench.STREAMS.values()))
def test_scanner_bench_streams_are_metered_like_the_captures(fixture):
    frames, case = scanner_bench.long_stream(fixture, frames=20)
    assert len(frames) > 20
    sc = case.scanner()
    for piece in frames:
        sc(piece)
    sc(b"")
    scanner_bench.settle_reads(sc)
    assert sc.scan_error is None and sc.output_seen and sc.output_chars > 0
    assert (sc.usage.prompt_tokens is None) == ("no_usage" in fixture)


def test_scanner_bench_gzip_case_decodes():
    case = scanner_bench.gzip_json_case(answer_bytes=4096)
    sc = case.scanner()
    for piece in case.pieces:
        sc(piece)
    sc(b"")
    assert sc.usage.prompt_tokens is not None and sc.output_chars > 4000


def test_tls_table_shows_every_configuration_and_the_added_p50():
    row = {c: {"rps": rps, "p50_ms": p50, "cpu_us": cpu} for c, rps, p50, cpu in
           (("plain", 600, 1.5, 1000), ("passthrough", 500, 1.75, 1200),
            ("seatbelt", 400, 2.0, 1500))}
    text = report.markdown({**_result(950.0, 1.0), "tls": {"upstream": {"json": 3000},
                                                           "json": row}})
    assert ("| small JSON | 3,000 | 600 | 500 | 400 | 0.80 | 1,000 / 1,200 / 1,500 | "
            "1.50 / 1.75 / 2.00 | +0.25 |") in text
    assert "Explicit proxy with TLS" in text and "SSE, 200 frames | -" not in text


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


def test_tls_client_reads_whole_responses_both_framings():
    async def both() -> list[tuple[int, bytes]]:
        r = _reader(upstream.JSON_RESPONSE + upstream.SSE_RESPONSE)
        return [await tls.read_response(r), await tls.read_response(r)]

    assert asyncio.run(both()) == [(200, upstream.JSON_BODY), (200, upstream.SSE_BODY)]
    raw = tls.request_bytes("127.0.0.1:9", "sse", {"Authorization": "Bearer x"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert json.loads(body) == json.loads(clients.request_body(True))
    assert f"Content-Length: {len(body)}".encode() in head and b"Authorization: Bearer x" in head


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tls-upstream")
    cert, key = tls.make_cert(d)
    up = proxies.start_upstream(d, None, (cert, key))
    yield up, cert
    up.stop()


@pytest.mark.parametrize("body", ["json", "sse"])
def test_tls_client_gets_the_upstreams_bytes_over_https(tls_upstream, body):
    up, cert = tls_upstream
    res = tls.run(0, f"127.0.0.1:{up.port}", cert, body, {}, connections=2, seconds=0.3)
    assert res.ok and res.requests > 0, res


@pytest.mark.e2e
def test_tls_client_connects_through_seatbelt_and_is_metered(tls_upstream, tmp_path):
    """CONNECT, TLS with the proxy's CA, HTTPS upstream verified against its own cert:
    every answer the upstream's bytes, and seatbelt's audit has them served from usage."""
    up, cert = tls_upstream
    with proxies.started(("seatbelt",), up.port, tmp_path, None, cert) as procs:
        p = procs["seatbelt"]
        res = tls.run(p.port, f"127.0.0.1:{up.port}", Path(p.extra["ca"]), "json",
                      proxies.auth_headers(p), connections=2, seconds=0.5)
    assert res.ok and res.requests > 0, res
    lines = [json.loads(x) for x in Path(p.extra["audit"]).read_text().splitlines()]
    assert len(lines) == res.requests
    assert {(x["outcome"], x["usage_source"]) for x in lines} == {("served", "reported")}


def test_an_ab_run_is_judged_against_the_other_commit():
    r = _result(seatbelt_json=950.0, seatbelt_p50=1.2)
    for body, rps in (("json", 1000.0), ("sse", 900.0)):
        r["throughput"][body]["seatbelt@abc123"] = {"rps": rps, "cpu_us": 700}
    r["latency"]["json"]["seatbelt@abc123"] = {"p50_ms": 1.1, "p99_ms": 2.0}
    values = report.goal_values(r)
    assert values["ab_json_ratio"] == 0.95  # 950 / 1000: slower than that commit
    assert report.goal_met("ab_json_ratio", values["ab_json_ratio"]) is False
    text = report.markdown(r)
    assert "A/B against abc123" in text
    assert "| small JSON | 950 | 1,000 | 0.95 |" in text
    plain = report.goal_values(_result(seatbelt_json=950.0, seatbelt_p50=1.2))
    assert plain["ab_json_ratio"] is None  # no A/B: not judged


def test_against_extracts_that_commits_entry_file(tmp_path):
    from bench import proxies
    entry = proxies.checkout("HEAD", tmp_path)
    assert entry == tmp_path / "rev-HEAD" / "seatbelt" / "addon.py" and entry.is_file()
    with pytest.raises(RuntimeError, match="git archive failed"):
        proxies.checkout("no-such-rev-xyz", tmp_path)


def test_the_other_commit_runs_on_the_same_ledger_as_this_one(tmp_path):
    """The A/B compares commits, not ledgers: seatbelt@REV once ran on memory:// against
    this commit's SQLite and charged the ledger's cost to the code."""
    from bench import proxies
    ours = proxies.seatbelt_options("seatbelt", tmp_path, 1)
    assert proxies.seatbelt_options("seatbelt@abc123", tmp_path, 1) == ours
    assert f"seatbelt_ledger=sqlite:///{tmp_path / 'ledger.db'}" in ours
    assert "seatbelt_ledger=memory://" in proxies.seatbelt_options("seatbelt-memory", tmp_path, 1)

def test_the_exact_part_reports_cost_per_kb_and_the_hot_path_a_b():
    exact = {"count": {"english 1 KB": {"bound_us_per_kb": 2.0, "exact_us_per_kb": 9.5,
                                        "tiktoken_us_per_kb": 60.0, "bound": 1125,
                                        "exact": 298}},
             "hot_path": {"base": "4ebbf857008f", "rounds": 3, "requests": 1000,
                          "this_json_us": 101.0, "base_json_us": 100.0, "this_sse_us": 150.0,
                          "base_sse_us": 151.0}}
    text = report.markdown({**_result(seatbelt_json=500.0, seatbelt_p50=0.95), "exact": exact})
    assert "| english 1 KB | 2.0 | 9.5 | 60.0 | 1125 | 298 |" in text
    assert "this tree vs 4ebbf857008f: JSON 101.0 vs 100.0 us, SSE 150.0 vs 151.0 us" in text
    assert "Exact prompt count" not in report.markdown(_result(seatbelt_json=500.0,
                                                                seatbelt_p50=0.95))


def test_the_side_by_side_a_b_is_judged_on_the_ratio_within_each_window():
    """REV's CPU per request over this commit's, window by window: a machine that slows
    down in one window slows both proxies in it and leaves the ratio alone."""
    from bench import abreast
    windows = [abreast.Window("json", new, old, 1e6 / new, 1e6 / old)
               for new, old in ((1000, 950), (2000, 1900), (1500, 1470))]
    windows.append(abreast.Window("sse", 10_000, 10_100, 100, 99))
    ab = {"against": "abc123", "seconds": 3, "starts": 1, **abreast.summarize(windows)}
    assert ab["json"] == {"windows": 3, "cpu_ratio": 0.95, "cpu_ratio_min": 0.95,
                          "cpu_ratio_max": 0.98, "rps_ratio": 0.95, "new_cpu_us": 1500,
                          "old_cpu_us": 1470}
    r = {**_result(seatbelt_json=500.0, seatbelt_p50=0.95), "abreast": ab}
    values = report.goal_values(r)
    assert (values["abreast_json_cpu"], values["abreast_sse_cpu"]) == (0.95, 1.01)
    assert report.goal_met("abreast_json_cpu", 0.95) is False
    text = report.markdown(r)
    assert "A/B side by side against abc123" in text
    assert "| small JSON | 3 | 1,500 | 1,470 | 0.950 | 0.950-0.980 | 0.950 |" in text
    assert "side by side against" not in report.markdown(_result(500.0, 0.95))


@pytest.mark.e2e
def test_the_side_by_side_a_b_loads_both_commits_at_once(tmp_path):
    """Two real mitmdumps (this tree and HEAD's archive) loaded by two threads at once: each
    window's figures come from both, and both metered every request."""
    import time

    from bench import abreast

    def load(p: proxies.Proc, body: str, seconds: float) -> wrk.WrkResult:
        t0, n = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            status, _ = clients.fetch(p.port, proxies.auth_headers(p), body == "sse")
            assert status == 200
            n += 1
        took = time.monotonic() - t0
        return wrk.WrkResult(requests=n, seconds=took, rps=n / took)

    up = proxies.start_upstream(tmp_path, None)
    try:
        ab = abreast.run("HEAD", up.port, tmp_path, None, load, windows=1, seconds=0.4)
    finally:
        up.stop()
    for body in ("json", "sse"):
        row = ab[body]
        assert row["windows"] == 1 and row["new_cpu_us"] > 0 and row["old_cpu_us"] > 0, ab
    for config in ("seatbelt", "seatbelt@HEAD"):
        text = (tmp_path / "abreast" / config / "audit.jsonl").read_text()
        sources = [json.loads(x)["usage_source"] for x in text.splitlines()]
        assert len(sources) >= 4 and set(sources) == {"reported"}, config


def test_the_instruction_a_b_reads_callgrind_totals_and_judges_them():
    from bench import instructions
    assert instructions.callgrind_total("events: Ir\nfl=x\n1 5\ntotals: 123456\n") == 123456
    assert instructions.callgrind_total("events: Ir\nsummary: 77\n") == 77
    # counting switched on late: the header's summary is 0, the totals line has the count
    assert instructions.callgrind_total("summary: 0\nfl=x\ntotals: 4100\n") == 4100
    with pytest.raises(ValueError):
        instructions.callgrind_total("events: Ir\n")
    ir = {"against": "abc123", "requests": 300, **instructions.summarize(
        {"json": {"seatbelt": 10_800_000, "seatbelt@abc123": 10_584_000},
         "sse": {"seatbelt": 40_000_000, "seatbelt@abc123": 40_400_000}},
        "seatbelt", "seatbelt@abc123")}
    assert ir["json"] == {"new_ir": 10_800_000, "old_ir": 10_584_000, "ratio": 0.98}
    values = report.goal_values({**_result(500.0, 0.95), "instructions": ir})
    assert (values["instructions_json"], values["instructions_sse"]) == (0.98, 1.01)
    assert report.goal_met("instructions_json", 0.98) is False
    assert report.goal_met("instructions_sse", 1.01) is True
    text = report.markdown({**_result(500.0, 0.95), "instructions": ir})
    assert "| small JSON | 10,800,000 | 10,584,000 | 0.9800 |" in text


@pytest.mark.e2e
@pytest.mark.slow
def test_the_instruction_a_b_counts_a_real_proxy_under_callgrind(tmp_path):
    """seatbelt's mitmdump under callgrind, counting switched on for a few requests only:
    millions of instructions per request, and every request metered."""
    from bench import instructions
    up = proxies.start_upstream(tmp_path, None)
    try:
        per_request = instructions.count("seatbelt", up.port, tmp_path, "json", 3, warm_up=2)
    finally:
        up.stop()
    assert 1e6 < per_request < 1e9, per_request
    audit = tmp_path / "instructions" / "json" / "seatbelt" / "audit.jsonl"
    sources = [json.loads(x)["usage_source"] for x in audit.read_text().splitlines()]
    assert sources == ["reported"] * 5
