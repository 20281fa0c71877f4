"""The package type-checks: mypy with pyproject.toml's [tool.mypy] (strict on the pure core)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_clean():
    mypy = Path(sys.executable).with_name("mypy")
    exe = str(mypy) if mypy.exists() else shutil.which("mypy")
    assert exe, "mypy is part of the dev extra; reinstall with ./run.sh"
    result = subprocess.run([exe, "--no-incremental", "--cache-dir", "/dev/null"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
