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


MAX_MODULE_LINES, MAX_CLASS_LINES = 500, 300


def oversized(package) -> list[str]:
    """Every module of `package` over MAX_MODULE_LINES lines and every class over MAX_CLASS_LINES (its
    decorators and docstring included), as 'path: N lines' / 'path:Class: N lines'."""
    import ast
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(package.parent).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                size = (node.end_lineno or node.lineno) - first + 1
                if size > MAX_CLASS_LINES:
                    found.append(f"{where}:{node.name}: {size} lines")
    return found


def test_no_module_over_500_lines_and_no_class_over_300():
    """Issue 23's "done when": small modules, small classes, everywhere in the package (sandbox included)."""
    assert not oversized(ROOT / "scenario_nb")


def test_the_size_check_sees_a_long_module_and_a_long_class(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "at_the_limit.py").write_text("x = 1\n" * 500)
    (package / "sub" / "long.py").write_text("x = 1\n" * 501)
    (package / "big.py").write_text("@dataclass\nclass Big:\n" + "    x = 1\n" * 299)  # 301 lines with its decorator
    (package / "fits.py").write_text("class Fits:\n" + "    x = 1\n" * 299)  # 300 lines
    assert oversized(package) == ["pkg/big.py:Big: 301 lines", "pkg/sub/long.py: 501 lines"]
