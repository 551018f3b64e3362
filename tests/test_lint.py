"""The code stays clean by the project's own rules: ruff (pycodestyle, pyflakes, bugbear) and mypy, as
configured in pyproject.toml. Part of the test command, so the README's one command checks everything."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_ruff_finds_nothing():
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_finds_nothing():
    done = run("mypy", "scenario_nb")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
