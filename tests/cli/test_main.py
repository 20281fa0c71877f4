"""seatbelt/cli/main.py: the `seatbelt` command's dispatch (its processes: tests/e2e/
test_startup.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seatbelt.cli import main as cli


def test_help_is_seatbelts_and_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seatbelt COMMAND")
    for name in cli.COMMANDS:
        assert f"\n  {name} " in out, name
    assert str(cli.PACKAGED_POLICIES / "default.yaml") in out


def test_an_unknown_command_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'foo'" in err and "run" in err


def test_options_alone_mean_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setitem(cli.COMMANDS, "run", lambda args: seen.append(list(args)) or 0)
    assert cli.main(["--mode", "reverse:http://x"]) == 0
    assert cli.main([]) == 0
    assert seen == [["--mode", "reverse:http://x"], []]


def test_the_packaged_default_policy_is_used_only_when_none_is_at_hand(tmp_path: Path) -> None:
    packaged = ["--set", f"seatbelt_policy={cli.PACKAGED_POLICIES / 'default.yaml'}"]
    assert (cli.PACKAGED_POLICIES / "default.yaml").is_file()
    assert cli.policy_defaults([], tmp_path) == packaged
    assert cli.policy_defaults(["--set", "seatbelt_policy=p.yaml"], tmp_path) == []
    assert cli.policy_defaults(["--set", "seatbelt_policy"], tmp_path) == []  # mitmproxy says
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text("version: 1\n")
    assert cli.policy_defaults([], tmp_path) == []


def test_check_and_hash_go_to_the_policy_tools(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.main(["check", str(cli.PACKAGED_POLICIES / "default.yaml")]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    assert cli.main(["check"]) == 2
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("password"))
    assert cli.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == (
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8")


def test_reading_a_file_in_web_turns_off_what_would_clash_with_a_running_proxy():
    from seatbelt.cli.main import reading_defaults

    assert reading_defaults(["--mode", "regular"]) == []
    out = reading_defaults(["-r", "flows.mitm", "--set", "seatbelt_audit=x.jsonl"])
    sets = dict(v.split("=", 1) for v in out[1::2])
    assert sets["seatbelt_metrics"] == "" and sets["server"] == "false"
    assert sets["seatbelt_ledger"] == "memory://" and int(sets["web_port"]) > 0
    assert "seatbelt_audit" not in sets  # the user's own value stands


def test_seatbelt_runs_last_and_its_hider_first() -> None:
    """seatbelt checks the request every other addon rewrote (it runs last); its HideFirst
    hides a new flow's credentials before mitmweb's view shows it."""
    import asyncio

    from mitmproxy import options
    from mitmproxy.tools.web.master import WebMaster

    from seatbelt import addon
    from seatbelt.cli.main import with_seatbelt

    async def chain() -> list[type]:
        master = with_seatbelt(WebMaster)(options.Options(), with_termlog=False)
        return [type(a) for a in master.addons.chain]

    types = asyncio.run(chain())
    assert types[0] is addon.HideFirst
    assert types[-len(addon.addons):] == [type(a) for a in addon.addons]
    assert types.count(addon.HideFirst) == 1
