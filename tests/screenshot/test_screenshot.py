"""docs/mitmweb.png is taken by `python -m tests.screenshot.take`; this test takes the same
picture into a temporary directory and checks, through the DOM Chromium rendered, that it
shows what docs/operations.md says: seatbelt comments on every flow, refused flows marked, and the
LLM view of a streamed tool call.

Skipped only when Debian's `chromium` is not installed (`apt-get install -y chromium`;
add `fonts-noto-color-emoji` for the marker glyph): everything else runs in CI.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from tests.screenshot.take import chromium_binary, take

_NO_CHROMIUM = "needs Debian's chromium package (apt-get install chromium)"
# CI installs it (.ci/run): there a missing browser is a failure, not a quiet skip.
_UNDER_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
pytestmark = pytest.mark.skipif(chromium_binary() is None and not _UNDER_CI, reason=_NO_CHROMIUM)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_screenshot_shows_budgets_marks_and_the_llm_view(tmp_path: Path) -> None:
    chromium = chromium_binary()
    assert chromium is not None, _NO_CHROMIUM + "; .ci/run installs it, so CI must have it"
    shot = take(tmp_path / "mitmweb.png", chromium, tmp_path)
    assert png_size(shot.png) == (1800, 560)
    assert shot.png.stat().st_size > 30_000  # a rendered page, not a blank one

    comments = re.findall(r'<td class="col-comment">([^<]*)</td>', shot.dom)
    metered = [c for c in comments if re.fullmatch(
        r"agent-zero \d+\+\d+ · "
        r"seatbelt: key=agent-zero account=research reserved=\d+ spent=\d+\+\d+ \(reported\)"
        r"( edits=[a-z_,]+)?", c)]
    assert len(metered) == 4, comments
    assert any(c.startswith("insufficient_quota intern · seatbelt: refused insufficient_quota "
                            "key=intern account=research reserved=") for c in comments), comments
    assert ("invalid_api_key anonymous · seatbelt: refused invalid_api_key key=anonymous "
            "account=anonymous") in comments
    assert shot.dom.count('<span class="marker float-right">\u26d4</span>') == 2
    assert "── tool call get_weather (call_x1) ──" in shot.dom  # the LLM view, auto-selected
    assert "finish: tool_calls" in shot.dom and "spent=81+17 (reported)" in shot.dom
    assert "sk-" not in shot.dom  # no credential on screen
