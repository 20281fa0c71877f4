"""`seatbelt`: the one command (pyproject's console script; ./run.sh dispatches here too).

`seatbelt run` and `seatbelt web` are mitmdump and mitmweb with seatbelt built in (mitmproxy's
custom-tool entry, mitmproxy/tools/main.py `run`): its options are declared before the
command line is read, so a bad `--set seatbelt_...` is refused by mitmproxy itself, in one
line, before anything listens. `mitmdump -s seatbelt/addon.py` loads the same addons.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

PACKAGED_POLICIES = Path(__file__).resolve().parents[1] / "policies"
DEFAULT_POLICY = "policies/default.yaml"  # the option's default, relative to the directory
WEB_COLUMNS = ("icon", "method", "status", "time", "comment", "path")

USAGE = """\
usage: seatbelt COMMAND [ARGS...]

A hard, exact, auditable token budget on every API key that talks to an LLM API.

commands:
  run [mitmdump args]     the proxy (mitmdump with seatbelt built in); `seatbelt [--opt ...]`
                          is the same
  web [mitmweb args]      the same under mitmweb (Comment column on)
  report [--json ...]     spend report (seatbelt report --help)
  admin ACTION ...        audited operator actions: reset, topup, holds, release
  hash                    fingerprint of a credential read from stdin (never echoed)
  check POLICY            validate a policy file: OK or one line saying what to fix
  demo                    stand-in LLM API + proxy + real SDK traffic, offline (from a checkout)

Options are mitmproxy's: --set seatbelt_policy=PATH, seatbelt_ledger=URL, seatbelt_metrics=
HOST:PORT, seatbelt_audit=PATH, ... (docs/options.md; `seatbelt run --options` lists them).
Without ./policies/default.yaml the packaged default policy is used:
  {policies}
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE.format(policies=PACKAGED_POLICIES / "default.yaml"), end="")
        return 0
    if not args or args[0].startswith("-"):
        args = ["run", *args]
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"seatbelt: unknown command {args[0]!r}; fix: one of {', '.join(COMMANDS)} "
              "(seatbelt --help)", file=sys.stderr)
        return 2
    return command(args[1:])


# -- the proxy ---------------------------------------------------------------------------


def with_seatbelt(master_cls: type) -> type:
    """`master_cls` with seatbelt's addons added at construction, before options are read:
    last, so that seatbelt checks the request every other addon has rewritten; and its
    HideFirst (seatbelt/addon.py) first, so that mitmweb's view never shows a new flow's
    credentials."""

    class SeatbeltMaster(master_cls):  # type: ignore[misc, valid-type]
        def __init__(self, options: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(options, *args, **kwargs)
            from seatbelt import addon

            self.addons.add(*addon.first, *addon.addons)
            chain = self.addons.chain
            early = chain[-len(addon.addons) - len(addon.first):-len(addon.addons)]
            del chain[-len(addon.addons) - len(addon.first):-len(addon.addons)]
            chain[0:0] = early

    SeatbeltMaster.__name__ = f"Seatbelt{master_cls.__name__}"
    return SeatbeltMaster


def policy_defaults(args: Sequence[str], cwd: Path) -> list[str]:
    """`--set seatbelt_policy=<packaged default>` when none is given and the directory has
    no policies/default.yaml (an installed seatbelt run anywhere)."""
    named = any(a == "seatbelt_policy" or a.startswith("seatbelt_policy=") for a in args)
    if named or (cwd / DEFAULT_POLICY).exists():
        return []
    return ["--set", f"seatbelt_policy={PACKAGED_POLICIES / 'default.yaml'}"]


def run(args: Sequence[str]) -> int:
    from mitmproxy.tools import cmdline, dump
    from mitmproxy.tools import main as tools

    def extra(parsed: Any) -> dict[str, Any]:  # mitmdump's positional flow filter
        if parsed.filter_args:
            v = " ".join(parsed.filter_args)
            return {"save_stream_filter": v, "readfile_filter": v, "dumper_filter": v}
        return {}

    _prepare()
    argv = [*policy_defaults(args, Path.cwd()), *args]
    try:
        tools.run(with_seatbelt(dump.DumpMaster), cmdline.mitmdump, argv, extra)
    except TypeError as e:
        return _config_yaml_error(e)
    return 0


def web(args: Sequence[str]) -> int:
    from mitmproxy.tools import cmdline
    from mitmproxy.tools import main as tools
    from mitmproxy.tools.web.master import WebMaster

    _prepare()
    columns = [a for c in WEB_COLUMNS for a in ("--set", f"web_columns={c}")]
    argv = [*policy_defaults(args, Path.cwd()), *columns, *reading_defaults(args), *args]
    try:
        tools.run(with_seatbelt(WebMaster), cmdline.mitmweb, argv)
    except TypeError as e:
        return _config_yaml_error(e)
    return 0


def reading_defaults(args: Sequence[str]) -> list[str]:
    """Reading a file (`-r`/`--rfile`) beside a running proxy: no proxy listener, no metrics,
    audit or shared ledger, and a free web port; each only unless the user set it."""
    if not any(a in ("-r", "--rfile") or a.startswith("--rfile=") for a in args):
        return []
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    given = " ".join(args)
    out: list[str] = []
    for option in ("seatbelt_metrics=", "seatbelt_audit=", "seatbelt_ledger=memory://",
                   "server=false", f"web_port={port}"):
        if option.split("=", 1)[0] + "=" not in given:
            out += ["--set", option]
    return out


def _config_yaml_error(error: TypeError) -> int:
    """mitmproxy type-checks config.yaml's values outside its own one-line error handling:
    a YAML `false` for a seatbelt option (declared as text) ends there."""
    print(f"seatbelt: {error} (in mitmproxy's config.yaml); fix: quote the value there, "
          "e.g. seatbelt_redact: \"false\"", file=sys.stderr)
    return 1


def _prepare() -> None:
    os.makedirs("state", exist_ok=True)  # the default ledger and audit live there
    sys.argv[0] = "seatbelt"  # mitmproxy prefixes its one-line option errors with it


# -- the tools ---------------------------------------------------------------------------


def report(args: Sequence[str]) -> int:
    from seatbelt.cli import report as report_cli

    return report_cli.main(list(args))


def admin(args: Sequence[str]) -> int:
    from seatbelt.cli import admin as admin_cli

    return admin_cli.main(list(args))


def hash_credential(args: Sequence[str]) -> int:
    """From stdin; on a terminal, prompted without echo."""
    import io

    from seatbelt.config import policy

    if args:
        print("seatbelt hash: takes no arguments (the credential comes on stdin)",
              file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        sys.stdin = io.StringIO(getpass.getpass("credential (not echoed): "))
    return policy.main(["hash"])


def check(args: Sequence[str]) -> int:
    from seatbelt.config import policy

    if len(args) != 1:
        print("seatbelt check: usage: seatbelt check POLICY", file=sys.stderr)
        return 2
    return policy.main(["check", args[0]])


def demo(args: Sequence[str]) -> int:
    try:
        from tests.standin import demo as standin_demo
    except ImportError:
        print("seatbelt demo: the demo runs from a checkout (its stand-in LLM API lives in "
              "tests/); fix: ./run.sh demo there", file=sys.stderr)
        return 1
    if args:
        print("seatbelt demo: takes no arguments", file=sys.stderr)
        return 2
    return standin_demo.main()


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": run,
    "web": web,
    "report": report,
    "admin": admin,
    "hash": hash_credential,
    "check": check,
    "demo": demo,
}

if __name__ == "__main__":
    sys.exit(main())
