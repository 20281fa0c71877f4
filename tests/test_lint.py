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


# Code modules without a test module of their own, each with the reason.
UNMIRRORED: dict[str, str] = {}


def test_every_code_module_has_its_mirrored_test_module():
    """tests/ mirrors seatbelt/: seatbelt/a/b.py is tested in tests/a/test_b.py, so the test
    of a module is found without a search (a package's __init__.py is exempt)."""
    missing = []
    for path in sorted((ROOT / "seatbelt").rglob("*.py")):
        rel = path.relative_to(ROOT / "seatbelt")
        if rel.name == "__init__.py" or str(rel) in UNMIRRORED:
            continue
        mirror = ROOT / "tests" / rel.parent / f"test_{rel.name}"
        if not mirror.is_file():
            missing.append(f"seatbelt/{rel} -> tests/{rel.parent / ('test_' + rel.name)}")
    assert not missing, "no mirrored test module:\n" + "\n".join(missing)
    stale = [name for name in UNMIRRORED if not (ROOT / "seatbelt" / name).is_file()]
    assert not stale, f"UNMIRRORED names modules that are gone: {stale}"


def test_every_test_directory_is_a_package():
    """tests/a/ has its __init__.py like seatbelt/a/, so two test_x.py never clash."""
    for directory in sorted((ROOT / "seatbelt").rglob("*/")):
        if directory.name == "__pycache__":
            continue
        mirror = ROOT / "tests" / directory.relative_to(ROOT / "seatbelt")
        if mirror.is_dir():
            assert (mirror / "__init__.py").is_file(), f"{mirror.relative_to(ROOT)}: no __init__.py"
