"""The start-up guards of seatbelt/addon.py, with nothing but mitmproxy and the standard library.

mitmproxy keeps proxying when a `-s` script fails to import (a missing dependency) or when
its options fail to convert (an option given twice or without a value): the script is
dropped and traffic flows unmetered. `Closed` is what addon.py loads instead when seatbelt
itself cannot be imported: it declares the options, says why in one error line (mitmproxy's
start-up error check then exits non-zero) and, should the proxy run anyway (a script
reload), refuses every request: without seatbelt no route can be told apart, so none is
forwarded.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from mitmproxy import http, optmanager

from seatbelt.config.options import OPTIONS

logger = logging.getLogger("seatbelt")

# How mitmproxy 11 and 12 keep a `--set NAME=VALUE` for an option no addon declared yet.
_UNCONVERTED: Any = getattr(optmanager, "_UnconvertedStrings", None)


def given_strings(value: Any) -> list[str] | None:
    """The command-line strings of a deferred option value; None for a typed value."""
    if _UNCONVERTED is not None and isinstance(value, _UNCONVERTED):
        return list(value.val)
    return None


def refusal(reason: str) -> http.Response:
    """503 in the OpenAI error shape (the one most clients parse), never forwarded."""
    body = {"error": {"message": f"seatbelt is not running ({reason}); the request was not "
                                 "sent upstream.", "type": "ledger_unavailable",
                      "code": "ledger_unavailable"}}
    return http.Response.make(503, json.dumps(body), {
        "content-type": "application/json",
        "x-seatbelt-refused": "ledger_unavailable",
        "x-should-retry": "false",
    })


class Closed:
    """Stands in for seatbelt when it cannot be imported: one error line, every request
    refused."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.reported = False

    def load(self, loader: Any) -> None:
        for name, (default, help_text) in OPTIONS.items():
            loader.add_option(name, str, default, help_text)

    def configure(self, updated: set[str]) -> None:
        if not self.reported:
            self.reported = True
            logger.error(f"seatbelt: cannot start: {self.reason}")

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            flow.response = refusal(self.reason)
            flow.comment = "seatbelt: refused (seatbelt is not running)"
            flow.marked = ":no_entry:"


def import_failure(error: ImportError) -> str:
    """One line naming what is missing and the fix."""
    return (f"{' '.join(str(error).split())}; fix: install seatbelt's dependencies into the "
            f"Python that runs mitmproxy ({sys.executable}): `pip install .` in the "
            "checkout, or start it with ./run.sh (which builds .venv/)")
