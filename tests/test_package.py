"""The package as PyPI users get it: an sdist and a wheel built from a clean copy of the checkout, the wheel
installed into a fresh venv of the oldest Python that `requires-python` admits, and used there for real
(tests/user_machine.py builds and installs them once for the run).
"""

from __future__ import annotations

import ast
import hashlib
import email
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, require
from user_machine import PROBES, requires_python

pytestmark = pytest.mark.slow

def source_version() -> str:
    """`__version__` as written in scenario_nb/_version.py (the one place)."""
    tree = ast.parse((ROOT / "scenario_nb" / "_version.py").read_text())
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"])


def test_sdist_carries_the_licence_and_the_readme_pictures(user_machine):
    with tarfile.open(user_machine["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    local = [p for p in pictures if not p.startswith("http")]
    assert local and all(p.startswith("docs/") for p in local)
    docs_pngs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.png")}
    assert set(local) | docs_pngs <= names, f"missing from the sdist: {(set(local) | docs_pngs) - names}"
    assert {"LICENSE", "README.md", "pyproject.toml", "scenario_nb/py.typed"} <= names
    assert set(user_machine["data"]) <= names, \
        f"sandbox data missing from the sdist: {set(user_machine['data']) - names}"
    # Tests without their conftest, notebooks and binder cannot pass: the sdist ships none.
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks")]


def test_twine_accepts_the_sdist_and_the_wheel(user_machine):
    """What PyPI would refuse at upload (metadata, the README rendered as the long description)."""
    require("twine")
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(user_machine["sdist"]),
                              str(user_machine["wheel"])], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_wheel_metadata(user_machine):
    version = source_version()
    assert user_machine["wheel"].name == f"scenario_nb-{version}-py3-none-any.whl"
    with zipfile.ZipFile(user_machine["wheel"]) as wheel:
        names = set(wheel.namelist())
        meta = email.message_from_bytes(wheel.read(f"scenario_nb-{version}.dist-info/METADATA"))
    assert f"scenario_nb-{version}.dist-info/licenses/LICENSE" in names
    assert "Copyright (c) 2026 scenario_nb developers" in (ROOT / "LICENSE").read_text()
    assert meta["License-Expression"] == "MIT" and meta["Version"] == version
    assert meta["Requires-Python"] == ">={}.{}".format(*requires_python())
    classifiers = meta.get_all("Classifier")
    assert {"Framework :: Jupyter", "Framework :: IPython", "Typing :: Typed"} <= set(classifiers)
    assert not [c for c in classifiers if c.startswith("License ::")], "the SPDX expression replaces these"
    assert meta.get_all("Project-URL") and meta["Keywords"]
    runtime = {re.split(r"[<>=!; ]", r)[0].lower() for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert runtime == {"ipywidgets", "ipython", "requests", "pillow", "traitlets"}
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


def test_wheel_installs_and_runs_on_the_oldest_supported_python(user_machine):
    """The wheel, installed into the fresh venv of the oldest Python, imports every module and generates
    through the magics on the embedded sandbox (tests/user_machine.py's SMOKE)."""
    seen, base = user_machine["smoke"], user_machine["base"]
    assert tuple(seen["python"]) == requires_python()
    assert Path(seen["file"]).resolve().is_relative_to((base / "venv").resolve()), seen["file"]
    version = source_version()
    assert seen["version"] == seen["dist_version"] == version and seen["user_agent"] == f"scenario_nb/{version}"
    assert {"scenario_nb._magics", "scenario_nb._panel", "scenario_nb.sandbox._server"} <= set(seen["modules"])
    assert seen["status"] == "success" and min(seen["size"]) > 0
    installed = seen["files"]  # path: sha256, as installed
    assert "scenario_nb/py.typed" in installed
    assert set(user_machine["data"]) >= set(PROBES) and set(user_machine["data"]) <= set(installed), \
        f"sandbox data not installed: {set(user_machine['data']) - set(installed)}"
    for name in user_machine["data"]:
        assert installed[name] == hashlib.sha256((user_machine["repo"] / name).read_bytes()).hexdigest(), name
