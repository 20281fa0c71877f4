"""Results -> the table printed by `./run.sh bench`, bench/results.md and docs/speed.md's block.

Pure functions over the result dict the harness builds (tests/test_bench_smoke.py runs
them on a hand-made result), so the docs/speed.md table is generated, never typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.ledger_bench import CALLERS, CONCURRENT

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

# goal name -> (description, comparison, target)
GOALS: dict[str, tuple[str, str, float]] = {
    "json_ratio": ("throughput, JSON, seatbelt / pass-through", ">=", 0.90),
    "sse_ratio": ("throughput, SSE, seatbelt / pass-through", ">=", 0.90),
    "added_p50_ms": ("added p50 latency at 1 connection (JSON)", "<=", 0.5),
    "scanner_sse_mb_s": ("scanner, uncompressed SSE (OpenAI, 64 KiB reads)", ">=", 300.0),
    "growth_mb": ("proxy growth while 100 MB streams through", "<", 16.0),
    "sqlite_pairs_s": ("SQLite reserve+settle pairs/s", ">=", 5000.0),
    # `--against REV`: no slower than that commit, within the rounds' noise (~3%).
    "ab_json_ratio": ("throughput, JSON, seatbelt / seatbelt@REV (same-run A/B)", ">=", 0.97),
    "ab_sse_ratio": ("throughput, SSE, seatbelt / seatbelt@REV (same-run A/B)", ">=", 0.97),
    # The `abreast` part: REV's proxy CPU per request over this commit's, both loaded at once.
    "abreast_json_cpu": ("proxy CPU per JSON request, seatbelt@REV / seatbelt (side by side)",
                         ">=", 0.97),
    "abreast_sse_cpu": ("proxy CPU per SSE request, seatbelt@REV / seatbelt (side by side)",
                        ">=", 0.97),
    # The `instructions` part: a count, not a timing, so no allowance for noise beyond the
    # ~0.3% two runs of one commit differ by.
    "instructions_json": ("instructions per JSON request, seatbelt@REV / seatbelt", ">=",
                          0.995),
    "instructions_sse": ("instructions per SSE request, seatbelt@REV / seatbelt", ">=", 0.995),
    "stall_ms": ("worst event-loop stall admitting a 10 MB worst-shape body (ms)", "<", 100.0),
}


def against(r: dict[str, Any]) -> str | None:
    """The `seatbelt@REV` configuration of an A/B run, if there was one."""
    for row in r.get("throughput", {}).values():
        for c in row:
            if c.startswith("seatbelt@"):
                return str(c)
    return None


def _num(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{round(x):,}"


def goal_values(r: dict[str, Any]) -> dict[str, float | None]:
    """The figure each goal is judged on, from a result dict (None: not measured)."""
    tp = r.get("throughput", {})
    lat = r.get("latency", {})
    mem = r.get("memory", {})
    out: dict[str, float | None] = {}
    for body in ("json", "sse"):
        base = tp.get(body, {}).get("passthrough", {}).get("rps")
        ours = tp.get(body, {}).get("seatbelt", {}).get("rps")
        out[f"{body}_ratio"] = round(ours / base, 3) if base and ours else None
    base = lat.get("json", {}).get("passthrough", {}).get("p50_ms")
    ours = lat.get("json", {}).get("seatbelt", {}).get("p50_ms")
    out["added_p50_ms"] = round(ours - base, 3) if base is not None and ours is not None \
        else None
    out["scanner_sse_mb_s"] = r.get("scanner", {}).get("openai-sse 64k", {}).get("mb_per_s")
    out["growth_mb"] = mem.get("seatbelt", {}).get("growth_mb")
    out["sqlite_pairs_s"] = r.get("ledger", {}).get("sqlite", {}).get("pairs_per_s")
    rev = against(r)
    for body in ("json", "sse"):
        old = tp.get(body, {}).get(rev, {}).get("rps") if rev else None
        ours = tp.get(body, {}).get("seatbelt", {}).get("rps")
        out[f"ab_{body}_ratio"] = round(ours / old, 3) if old and ours else None
    for body in ("json", "sse"):
        out[f"abreast_{body}_cpu"] = r.get("abreast", {}).get(body, {}).get("cpu_ratio")
        out[f"instructions_{body}"] = r.get("instructions", {}).get(body, {}).get("ratio")
    stall = r.get("stall", {})
    cases = [c["stall_ms"] for row in stall.get("cases", {}).values() for c in row.values()]
    out["stall_ms"] = max(cases) if cases and stall.get("mb") == 10 else None
    return out


def goal_met(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    _, op, target = GOALS[name]
    return {">=": value >= target, "<=": value <= target, "<": value < target}[op]


def _ab_table(r: dict[str, Any]) -> list[str]:
    """`--against REV`: this commit's seatbelt beside REV's, same rounds, same load."""
    rev = against(r)
    if rev is None:
        return []
    tp, lat = r.get("throughput", {}), r.get("latency", {})
    lines = ["", f"A/B against {rev.split('@', 1)[1]} (same run, alternating rounds; "
             "requests/s and proxy CPU us per request, median of rounds; p50 ms at 1 "
             "connection):", "",
             f"| response | seatbelt rps | {rev} rps | ratio | seatbelt CPU us | {rev} CPU us "
             f"| seatbelt p50 | {rev} p50 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for body, label in (("json", "small JSON"), ("sse", "SSE, 200 frames")):
        row, lrow = tp.get(body, {}), lat.get(body, {})
        new, old = row.get("seatbelt", {}), row.get(rev, {})
        lines.append(
            f"| {label} | {_num(new.get('rps'))} | {_num(old.get('rps'))} | "
            f"{_ratio(new.get('rps'), old.get('rps'))} | {_num(new.get('cpu_us'))} | "
            f"{_num(old.get('cpu_us'))} | {_ms(lrow.get('seatbelt', {}).get('p50_ms'))} | "
            f"{_ms(lrow.get(rev, {}).get('p50_ms'))} |")
    return lines


def _abreast_table(ab: dict[str, Any]) -> list[str]:
    """The `abreast` part: both commits' proxies loaded at the same time on one core."""
    return _part_table(
        ab, lambda rev: f"A/B side by side against {rev} (bench/abreast.py: both proxies on "
        f"one core, each loaded by its own wrk at the same time, {ab.get('seconds')} s windows "
        f"over {ab.get('starts')} start(s); proxy CPU us per request, median of windows; "
        f"ratio: {rev}'s CPU over this commit's, above 1 is cheaper):",
        ["windows", "seatbelt CPU us", "seatbelt@{rev} CPU us", "ratio", "range",
         "requests/s ratio"],
        lambda row: [str(row["windows"]), _num(row["new_cpu_us"]), _num(row["old_cpu_us"]),
                     f"{row['cpu_ratio']:.3f}",
                     f"{row['cpu_ratio_min']:.3f}-{row['cpu_ratio_max']:.3f}",
                     f"{row['rps_ratio']:.3f}"])


def _instructions_table(ir: dict[str, Any]) -> list[str]:
    """The `instructions` part: user-space instructions per request under callgrind."""
    return _part_table(
        ir, lambda rev: f"A/B in instructions against {rev} (bench/instructions.py: each proxy "
        f"under callgrind, {ir.get('requests')} requests counted after a warm-up; user-space "
        f"instructions per request of the whole process; ratio: {rev}'s over this commit's):",
        ["seatbelt", "seatbelt@{rev}", "ratio"],
        lambda row: [_num(row["new_ir"]), _num(row["old_ir"]), f"{row['ratio']:.4f}"])


def _part_table(part: dict[str, Any], caption: Any, columns: list[str], cells: Any) -> list[str]:
    """An A/B part's table: its caption (given the other commit), a column per figure
    (`{rev}` names the other commit) and a row per body kind it measured."""
    if not any(body in part for body in ("json", "sse")):
        return []
    rev = part.get("against", "?")
    names = [c.format(rev=rev) for c in columns]
    return ["", caption(rev), "", "| response | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(names)] + _body_rows(part, cells)


def _body_rows(part: dict[str, Any], cells: Any) -> list[str]:
    """One table row per body kind the part measured: its label, then cells(its figures)."""
    return [f"| {label} | " + " | ".join(cells(part[body])) + " |"
            for body, label in (("json", "small JSON"), ("sse", "SSE, 200 frames"))
            if part.get(body)]


def markdown(r: dict[str, Any]) -> str:
    """The whole results page (bench/results.md; the docs/speed.md block is the same text)."""
    env = r.get("env", {})
    lines = [
        f"Measured {env.get('date', '?')} by `./run.sh bench`{' --quick' if r.get('quick') else ''}"
        f" on {env.get('machine', '?')}; Python {env.get('python', '?')}, mitmproxy "
        f"{env.get('mitmproxy', '?')}, wrk {env.get('wrk', '?')}; load average "
        f"{env.get('load_before', '?')} before, {env.get('load_after', '?')} after. "
        f"{env.get('method', '')}",
        "",
        "| goal | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    values = goal_values(r)
    for name, (text, op, target) in GOALS.items():
        v = values.get(name)
        met = goal_met(name, v)
        shown = _num(v, 3) if isinstance(v, float) and v < 10 else _num(v)
        verdict = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {text} | {op} {target:g} | {shown} | {verdict} |")
    tp = r.get("throughput", {})
    mem_ledger = any("seatbelt-memory" in row for row in tp.values())
    if tp:
        extra = " seatbelt, memory ledger / pass-through |" if mem_ledger else ""
        lines += ["", "Throughput (requests/s, wrk, 8 connections, median of rounds; "
                  "ratio to the pass-through baseline):", "",
                  "| response | upstream alone | plain mitmdump | pass-through | seatbelt "
                  "| seatbelt / pass-through | seatbelt / plain |" + extra,
                  "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if extra else "")]
        for body, label in (("json", "small JSON"), ("sse", "SSE, 200 frames")):
            row = tp.get(body)
            if not row:
                continue
            up = r.get("upstream", {}).get(body, {}).get("rps")
            plain = row.get("plain", {}).get("rps")
            base = row.get("passthrough", {}).get("rps")
            ours = row.get("seatbelt", {}).get("rps")
            mem = row.get("seatbelt-memory", {}).get("rps")
            lines.append(
                f"| {label} | {_num(up)} | {_num(plain)} | {_num(base)} | {_num(ours)} | "
                f"{_ratio(ours, base)} | {_ratio(ours, plain)} |"
                + (f" {_num(mem)} ({_ratio(mem, base)}) |" if mem_ledger else "")
            )
    if tp and any("cpu_us" in c for row in tp.values() for c in row.values()):
        configs = [c for c in ("plain", "passthrough", "seatbelt", "seatbelt-memory")
                   if any(c in row for row in tp.values())]
        lines += ["", "Proxy CPU time per request under the same load (us, user + system, "
                  "median of rounds): a cross-check of the throughput ratio that another "
                  "tenant's load barely moves. `added` is seatbelt's cost over the "
                  "pass-through baseline; `ratio` is pass-through / seatbelt.", "",
                  "| response | " + " | ".join(configs) + " | added | ratio |",
                  "| --- |" + " --- |" * (len(configs) + 2)]
        for body, label in (("json", "small JSON"), ("sse", "SSE, 200 frames")):
            row = tp.get(body, {})
            cpu = {c: row.get(c, {}).get("cpu_us") for c in configs}
            base, ours = cpu.get("passthrough"), cpu.get("seatbelt")
            added = f"+{ours - base:,}" if base and ours else "-"
            lines.append(f"| {label} | " + " | ".join(_num(cpu[c]) for c in configs)
                         + f" | {added} | {_ratio(base, ours)} |")
    lines += _ab_table(r)
    lines += _abreast_table(r.get("abreast", {}))
    lines += _instructions_table(r.get("instructions", {}))
    lat = r.get("latency", {})
    if lat:
        lines += ["", "Latency at 1 connection (ms, wrk, median of rounds):", "",
                  "| response | plain p50 / p99 | pass-through p50 / p99 | seatbelt p50 / p99 "
                  "| added p50 vs pass-through | added p50 vs plain |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for body, label in (("json", "small JSON"), ("sse", "SSE, 200 frames")):
            row = lat.get(body)
            if not row:
                continue
            cells = [f"{_ms(row.get(c, {}).get('p50_ms'))} / {_ms(row.get(c, {}).get('p99_ms'))}"
                     for c in ("plain", "passthrough", "seatbelt")]
            ours = row.get("seatbelt", {}).get("p50_ms")
            lines.append(f"| {label} | {' | '.join(cells)} | "
                         f"{_delta(ours, row.get('passthrough', {}).get('p50_ms'))} | "
                         f"{_delta(ours, row.get('plain', {}).get('p50_ms'))} |")
    lines += tls_table(r.get("tls", {}))
    ttfb = r.get("ttfb", {})
    if ttfb:
        lines += ["", f"Time to first byte on a slow stream (upstream waits "
                  f"{r.get('ttfb_wait_ms', '?')} ms before its first frame; ms, median):", "",
                  "| upstream alone | plain | pass-through | seatbelt |",
                  "| --- | --- | --- | --- |",
                  "| " + " | ".join(_ms(ttfb.get(c, {}).get("ttfb_ms"))
                                   for c in ("upstream", "plain", "passthrough", "seatbelt"))
                  + " |"]
    mem = r.get("memory", {})
    if mem:
        lines += ["", f"Proxy memory while a {r.get('memory_mb', '?')} MB SSE response streams "
                  "through (RSS, MB):", "",
                  "| proxy | before | peak | growth | MB/s |", "| --- | --- | --- | --- | --- |"]
        for c in ("plain", "passthrough", "seatbelt"):
            m = mem.get(c)
            if m:
                lines.append(f"| {c} | {m['rss_before_mb']} | {m['rss_peak_mb']} | "
                             f"{m['growth_mb']} | {m['mb_per_s']} |")
    sc = r.get("scanner", {})
    if sc:
        lines += ["", "Scanner in-process (MB/s of body; `frame`: one call per frame as a "
                  "per-token flushing server gives it; `64k`: 64 KiB reads):", "",
                  "| stream | MB/s | us per call | calls per stream |", "| --- | --- | --- | --- |"]
        for name, s in sc.items():
            lines.append(f"| {name} | {_num(s['mb_per_s'])} | {s['us_per_call']} | "
                         f"{s['calls_per_stream']} |")
    led = r.get("ledger", {})
    if led:
        lines += ["", "Ledger reserve+settle pairs (key cap + account cap), on the event loop; "
                  f"one caller at a time, then {CALLERS} at once:", "",
                  f"| backend | pairs/s | p50 us | p99 us | pairs/s, {CALLERS} callers |",
                  "| --- | --- | --- | --- | --- |"]
        for name, s in led.items():
            lines.append(f"| {name} | {_num(s['pairs_per_s'])} | {s['p50_us']} | {s['p99_us']} "
                         f"| {_num(s.get(CONCURRENT))} |")
    lines += _exact_lines(r.get("exact", {}))
    lines += _stall_table(r.get("stall", {}))
    checks = r.get("checks", [])
    if checks:
        lines += ["", "Checks: " + "; ".join(checks) + "."]
    return "\n".join(lines) + "\n"


def tls_table(tls: dict[str, Any]) -> list[str]:
    """The explicit-proxy-with-TLS rows: throughput at 8 connections, p50 at 1."""
    if not tls:
        return []
    lines = ["", "Explicit proxy with TLS, the main deployment (CONNECT, TLS to the proxy with "
             "its CA, TLS from the proxy to the upstream; bench/tls.py, an asyncio client with "
             "keep-alive connections, handshakes not timed; requests/s at 8 connections, "
             "p50 ms at 1, median of rounds):", "",
             "| response | upstream alone | plain mitmdump | pass-through | seatbelt "
             "| seatbelt / pass-through | proxy CPU us per request, plain / pass-through / "
             "seatbelt | p50 plain / pass-through / seatbelt | added p50 vs pass-through |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for body, label in (("json", "small JSON"), ("sse", "SSE, 200 frames")):
        row = tls.get(body)
        if not row:
            continue
        rps = {c: row.get(c, {}).get("rps") for c in ("plain", "passthrough", "seatbelt")}
        p50 = {c: row.get(c, {}).get("p50_ms") for c in ("plain", "passthrough", "seatbelt")}
        cpu = [_num(row.get(c, {}).get("cpu_us")) for c in ("plain", "passthrough", "seatbelt")]
        lines.append(
            f"| {label} | {_num(tls.get('upstream', {}).get(body))} | {_num(rps['plain'])} | "
            f"{_num(rps['passthrough'])} | {_num(rps['seatbelt'])} | "
            f"{_ratio(rps['seatbelt'], rps['passthrough'])} | {' / '.join(cpu)} | "
            + " / ".join(_ms(v) for v in p50.values())
            + f" | {_delta(p50['seatbelt'], p50['passthrough'])} |")
    return lines


def _exact_lines(ex: dict[str, Any]) -> list[str]:
    """Exact counting: its cost per KB (paid only where the byte bound would refuse), and
    the hooks' cost for requests that fit under the bound, A/B with the commit before."""
    if not ex:
        return []
    lines = ["", "Exact prompt count (bench/exact_bench.py; gpt-4o chat, o200k_base by "
             "quicktok-v1; us per KB of prompt, fastest run):", "",
             "| prompt | byte bound | exact count | tiktoken encode | bound tokens "
             "| exact tokens |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, c in ex.get("count", {}).items():
        lines.append(f"| {name} | {c['bound_us_per_kb']} | {c['exact_us_per_kb']} | "
                     f"{c['tiktoken_us_per_kb']} | {c['bound']} | {c['exact']} |")
    hp = ex.get("hot_path")
    if hp:
        lines += ["", f"Hooks per request that fits under the bound (bench/hooks_bench.py, "
                  f"{hp['requests']} requests, median of {hp['rounds']} alternating rounds), "
                  f"this tree vs {hp['base']}: JSON {hp['this_json_us']} vs "
                  f"{hp['base_json_us']} us, SSE {hp['this_sse_us']} vs {hp['base_sse_us']} us."]
    return lines


def _stall_table(stall: dict[str, Any]) -> list[str]:
    """Worst event-loop stall (and admission time, and the answer) per shape and family."""
    cases = stall.get("cases", {})
    if not cases:
        return []
    families = list(next(iter(cases.values())))
    lines = ["", f"Event-loop stall while seatbelt admits one {stall.get('mb')} MB body of each "
             "worst shape (bench/stall_shapes.py), in-process, a 1 ms probe task on the same "
             "loop; ms of the worst stall / ms until admitted (answer). The same probe on the "
             f"idle loop: {stall.get('idle_stall_ms', '-')} ms (what the machine adds):", "",
             "| shape | " + " | ".join(families) + " |", "| --- |" + " --- |" * len(families)]
    for shape, row in cases.items():
        cells = [f"{row[f]['stall_ms']:,.1f} / {row[f]['admit_ms']:,.0f} ({row[f]['status']})"
                 if f in row else "-" for f in families]
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _delta(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.2f}"


def replace_block(text: str, block: str) -> str:
    """docs/speed.md text with the generated block between the markers replaced (ValueError when
    the markers are missing or out of order: the harness never guesses where to write)."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{block.rstrip()}\n{END}", text, count=1)


def write_readme(path: Path, block: str) -> bool:
    """Replace the docs/speed.md block; False (untouched) when it has no markers."""
    try:
        text = path.read_text()
        path.write_text(replace_block(text, block))
    except (OSError, ValueError):
        return False
    return True
