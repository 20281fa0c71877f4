"""The tree stays ruff-clean: CI enforces what the style guide asks."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert exe, "ruff is part of the dev extra; reinstall with ./run.sh"
    result = subprocess.run([exe, "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_logger_name():
    """Every module logs to the one "seatbelt" logger (its messages start with "seatbelt:"),
    so one handler or level on it covers all of them."""
    import re

    pattern = re.compile(r"getLogger\(([^)]*)\)")
    for path in sorted((ROOT / "seatbelt").rglob("*.py")):
        for name in pattern.findall(path.read_text()):
            assert name == '"seatbelt"', f"{path.relative_to(ROOT)}: getLogger({name})"
