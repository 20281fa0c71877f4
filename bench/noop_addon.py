"""Baseline 1 for the benchmark: mitmdump with an addon that does nothing.

    mitmdump -s bench/noop_addon.py --mode reverse:http://127.0.0.1:PORT
"""

from __future__ import annotations


class NoOp:
    """Loaded like seatbelt (a script), so both pay the same script-loader cost."""


addons = [NoOp()]
