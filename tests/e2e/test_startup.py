"""A bad configuration stops mitmdump at start-up: one line, no traceback, non-zero (§2)."""

from __future__ import annotations

import os
import shutil
import site
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, Key, Proxy, mitmdump_binary, policy_text
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

GOOD = policy_text([Key("k", cap=10)])
BROKEN = GOOD + "  - id: k\n    account: team\n    credential_sha256: " + "ab" * 32 + "\n"


def run_to_exit(proxy: Proxy, command: list[str] | None = None,
                env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Start mitmdump and wait for it to give up (it must not keep proxying)."""
    try:
        out = subprocess.run(command or proxy.command(), cwd=proxy.workdir,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=45, env=env)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, text
    return out.returncode, out.stdout + out.stderr


CASES = {
    "broken-policy": ({}, BROKEN, "seatbelt_policy"),
    "missing-policy": ({"seatbelt_policy": "does/not/exist.yaml"}, GOOD, "seatbelt_policy"),
    "bad-ledger-url": ({"seatbelt_ledger": "postgres://127.0.0.1/x"}, GOOD, "seatbelt_ledger"),
    "non-boolean": ({"seatbelt_inject_usage": "maybe"}, GOOD, "seatbelt_inject_usage"),
    "unknown-option": ({"seatbelt_ledgr": "memory://"}, GOOD, "seatbelt_ledgr"),
    "bad-metrics-address": ({"seatbelt_metrics": "nohost"}, GOOD, "seatbelt_metrics"),
    "bad-boolean-hashes-only": ({"seatbelt_hashes_only": "2"}, GOOD, "seatbelt_hashes_only"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_configuration_stops_start_up(
    tmp_path: Path, standin: StandIn, case: str
) -> None:
    options, policy, named = CASES[case]
    proxy = Proxy(tmp_path, policy, upstream=standin.url, options=options)
    code, output = run_to_exit(proxy)
    assert code is not None, f"mitmdump kept running with a bad configuration:\n{output}"
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if named in line]
    assert len(lines) == 1, f"expected one line naming {named}:\n{output}"
    if case == "broken-policy":
        assert "policy.yaml" in lines[0], lines[0]


def test_metrics_port_in_use_stops_start_up(tmp_path: Path, standin: StandIn) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proxy = Proxy(tmp_path, GOOD, upstream=standin.url)
        proxy.metrics_port = busy.getsockname()[1]
        code, output = run_to_exit(proxy)
    assert code is not None and code != 0, output
    assert "Traceback" not in output, output
    assert any("seatbelt_metrics" in line for line in output.splitlines()), output


def test_good_configuration_starts(proxy_factory: Any) -> None:
    """The control case: the same harness with a good policy is ready and exits 0."""
    proxy = proxy_factory("startup-good", GOOD)
    code = proxy.stop()
    log = proxy.log()
    assert code == 0, log
    assert "Traceback" not in log, log


def without_option(command: list[str], name: str) -> list[str]:
    """The command minus its `--set NAME=...` pair."""
    out: list[str] = []
    for arg in command:
        if out and out[-1] == "--set" and arg.startswith(f"{name}="):
            out.pop()
            continue
        out.append(arg)
    return out


def assert_one_line_exit(code: int | None, output: str, named: str) -> None:
    assert code is not None, f"mitmdump kept running (unmetered):\n{output}"
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if named in line]
    assert len(lines) == 1, f"expected one line naming {named}:\n{output}"


# Each of these made mitmproxy drop the script without a word and proxy unmetered: the
# conversion of a deferred option raised inside the script loader's task.
SPELLINGS = {
    "given-twice": (["--set", "seatbelt_metrics=127.0.0.1:1"], None, "set 2 times"),
    "policy-without-value": (["--set", "seatbelt_policy"], "seatbelt_policy", "no value"),
    "audit-without-value": (["--set", "seatbelt_audit"], "seatbelt_audit", "no value"),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_option_spellings_mitmproxy_cannot_convert_stop_start_up(
    tmp_path: Path, standin: StandIn, spelling: str
) -> None:
    extra, dropped, says = SPELLINGS[spelling]
    proxy = Proxy(tmp_path, GOOD, upstream=standin.url)
    command = proxy.command()
    if dropped is not None:
        command = without_option(command, dropped)
    code, output = run_to_exit(proxy, command + extra)
    named = extra[1].split("=")[0]
    assert_one_line_exit(code, output, named)
    assert says in output, output


# --------------------------------------------------------------------------- the `seatbelt` command


class CommandProxy(Proxy):
    """The same proxy started as `EXE... run ARGS` (seatbelt built in) instead of `mitmdump -s`."""

    def __init__(self, *args: Any, exe: list[str], drop: tuple[str, ...] = (), **kw: Any) -> None:
        self.exe = exe
        self.drop = drop
        super().__init__(*args, **kw)

    def command(self) -> list[str]:
        command = super().command()
        assert command[1] == "-s"
        for name in self.drop:
            command = without_option(command, name)
        return [*self.exe, "run", *command[3:]]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --no-deps .` into a fresh venv that borrows this one's dependencies:
    the wheel pip builds (console script, package data), not the checkout."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "seatbelt", source / "seatbelt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lib = next((venv / "lib").glob("python*/site-packages"))
    (lib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "--disable-pip-version-check", "-q", str(source)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


def post_unknown_key(proxy: Proxy) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        proxy.url + "/v1/chat/completions", method="POST",
        data=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
        headers={"content-type": "application/json", "authorization": "Bearer sk-unknown"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_installed_seatbelt_help_check_and_run_with_the_packaged_policy(
    tmp_path: Path, standin: StandIn, installed: Path
) -> None:
    exe = str(installed / "bin" / "seatbelt")
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert help_text.startswith("usage: seatbelt COMMAND")
    packaged = next(installed.glob("lib/python*/site-packages/seatbelt/policies/default.yaml"))
    assert str(packaged) in help_text
    assert list(packaged.parent.glob("examples/*.yaml")), "examples are package data too"
    check = subprocess.run([exe, "check", str(packaged)], capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("OK "), check.stderr
    # Run from a directory without policies/: the packaged default policy is found.
    proxy = CommandProxy(tmp_path, GOOD, upstream=standin.url, exe=[exe],
                         drop=("seatbelt_policy",)).start()
    try:
        assert post_unknown_key(proxy) == 401  # metered: an unknown key never reaches upstream
    finally:
        assert proxy.stop() == 0
    assert f"policy {packaged}" in proxy.log(), proxy.log()


# The Python of the mitmdump under test (the compat pass runs mitmproxy 11 this way too).
SEATBELT = [str(Path(mitmdump_binary()).with_name("python")), "-m", "seatbelt.cli.main"]


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_seatbelt_run_refuses_the_same_spellings_before_it_listens(
    tmp_path: Path, standin: StandIn, spelling: str
) -> None:
    """Built in, mitmproxy itself checks the typed option before start: one line, exit 1."""
    extra, dropped, _ = SPELLINGS[spelling]
    proxy = CommandProxy(tmp_path, GOOD, upstream=standin.url, exe=SEATBELT,
                         drop=(dropped,) if dropped else ())
    code, output = run_to_exit(proxy, proxy.command() + extra)
    assert_one_line_exit(code, output, extra[1].split("=")[0])
    assert "listening" not in output, output


@pytest.mark.parametrize("case", ["non-boolean", "unknown-option", "bad-ledger-url"])
def test_seatbelt_run_stops_on_bad_values_in_one_line(
    tmp_path: Path, standin: StandIn, case: str
) -> None:
    options, policy, named = CASES[case]
    proxy = CommandProxy(tmp_path, policy, upstream=standin.url, options=options, exe=SEATBELT)
    code, output = run_to_exit(proxy)
    assert_one_line_exit(code, output, named)


def test_run_sh_help_is_seatbelts_and_an_unknown_command_is_an_error() -> None:
    run_sh = str(REPO / "run.sh")
    shown = subprocess.run([run_sh, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: seatbelt COMMAND"), shown
    assert "test [pytest args]" in shown.stdout
    wrong = subprocess.run([run_sh, "foo"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and wrong.stdout == "", wrong
    assert wrong.stderr.strip().splitlines() == [
        "run.sh: unknown command 'foo'; fix: one of run, web, report, admin, hash, check, "
        "demo, test, bench, lint (./run.sh --help)"]


@pytest.mark.parametrize("how", ["mitmdump -s", "seatbelt run"])
def test_missing_dependency_stops_start_up_in_one_line(
    tmp_path: Path, standin: StandIn, how: str
) -> None:
    """PyYAML missing from mitmproxy's Python (shadowed by a module that fails to import):
    one line naming it and the fix, no traceback, non-zero exit."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "yaml.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'yaml'\", name='yaml')\n")
    if how == "mitmdump -s":
        proxy = Proxy(tmp_path / "proxy", GOOD, upstream=standin.url)
    else:
        proxy = CommandProxy(tmp_path / "proxy", GOOD, upstream=standin.url, exe=SEATBELT)
    env = {**os.environ, "PYTHONPATH": str(shadow)}
    code, output = run_to_exit(proxy, env=env)
    assert_one_line_exit(code, output, "No module named 'yaml'")
    assert "seatbelt: cannot start" in output and "fix:" in output, output


def test_seatbelt_options_in_mitmproxys_config_yaml_load(tmp_path: Path, standin: StandIn) -> None:
    """`seatbelt_redact: false` in config.yaml is a YAML bool; mitmproxy would refuse it for
    a str option with a traceback. It is taken as the text "false"."""
    proxy = Proxy(tmp_path, GOOD, upstream=standin.url)
    proxy.confdir.mkdir()
    (proxy.confdir / "config.yaml").write_text("seatbelt_redact: false\n")
    proxy.start()
    try:
        assert post_unknown_key(proxy) == 401
    finally:
        code = proxy.stop()
    log = proxy.log()
    assert code == 0 and "Traceback" not in log and "Error" not in log, log


def test_seatbelt_run_with_a_yaml_bool_in_config_yaml_is_one_line(
    tmp_path: Path, standin: StandIn
) -> None:
    """Built in, the option is typed before config.yaml is read; mitmproxy's type check then
    raises outside its one-line handling: one line, exit 1, never a traceback or exit 0."""
    proxy = CommandProxy(tmp_path, GOOD, upstream=standin.url, exe=SEATBELT)
    proxy.confdir.mkdir()
    (proxy.confdir / "config.yaml").write_text("seatbelt_redact: false\n")
    code, output = run_to_exit(proxy)
    assert_one_line_exit(code, output, "seatbelt_redact")
    assert "config.yaml" in output and "listening" not in output, output
