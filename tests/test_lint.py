"""The code is linted (ruff, with the rules of pyproject.toml) and typed (mypy) as
part of the tests, the Colab cells included: they are real Python, not strings."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    proc = _run("ruff", "check", "--output-format", "concise", "orchestrator", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_finds_nothing_in_the_package() -> None:
    proc = _run("mypy", "--no-error-summary", "orchestrator")
    assert proc.returncode == 0, proc.stdout + proc.stderr
