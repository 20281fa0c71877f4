"""Helpers every test directory may use: the repo root and a policy file writer."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _write_policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    """Write a (dedented) policy file under tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def repo_root() -> Path:
    """The repository root (policies/, seatbelt/, run.sh live there)."""
    return REPO_ROOT


@pytest.fixture
def write_policy():
    """`write_policy(tmp_path, text, name="policy.yaml") -> Path`: a policy file for a test."""
    return _write_policy
