"""The package as PyPI users get it: an sdist and a wheel built from a clean copy of the checkout, the wheel
installed into a fresh venv of the oldest Python that `requires-python` admits, and used there for real.

Slow (a build and a venv with the runtime dependencies from the package index), but part of the default run.
"""

from __future__ import annotations

import ast
import email
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from test_binder import INSTALL_TIMEOUT, clean_copy, sh, venv_env

pytestmark = pytest.mark.slow

# Data files a colleague could add to the sandbox (a sample video, fixtures), also in a sub-folder: the copy
# that is built gets one of each kind, so the packaging rules are proven before such a file is committed.
PROBES = ("scenario_nb/sandbox/_package_probe.json", "scenario_nb/sandbox/_package_probe.mp4",
          "scenario_nb/sandbox/media/_package_probe.mp4")


def requires_python() -> tuple:
    """The lower bound of requires-python in pyproject.toml, e.g. (3, 10)."""
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, flags=re.M)
    assert found, "requires-python must be a plain lower bound, >=X.Y"
    return int(found[1]), int(found[2])


def source_version() -> str:
    """`__version__` as written in scenario_nb/_version.py (the one place)."""
    tree = ast.parse((ROOT / "scenario_nb" / "_version.py").read_text())
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"])


def oldest_python() -> str:
    """An interpreter of the oldest supported version: on PATH, or one of pyenv's."""
    major, minor = requires_python()
    candidates = [shutil.which(f"python{major}.{minor}")]
    for root in (os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv"), "/root/.pyenv"):
        if root:
            candidates += sorted(glob.glob(f"{root}/versions/{major}.{minor}.*/bin/python{major}.{minor}"))
    for candidate in filter(None, candidates):
        version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True).stdout.strip()
        if version == str((major, minor)):
            return candidate
    message = f"no Python {major}.{minor} to prove requires-python (>={major}.{minor}) with"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI must prove requires-python: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`python -m build` on a clean copy: the sdist, then the wheel built from that sdist (as pip would)."""
    base = tmp_path_factory.mktemp("package")
    src = clean_copy(base / "src")
    for probe in PROBES:
        (src / probe).parent.mkdir(parents=True, exist_ok=True)
        (src / probe).write_bytes(f"probe {probe}".encode())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    sh([sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(src)], cwd=base, env=env)
    [wheel], [sdist] = (sorted((base / "dist").glob(pattern)) for pattern in ("*.whl", "*.tar.gz"))
    data = sorted(p.relative_to(src).as_posix() for p in (src / "scenario_nb" / "sandbox").rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)
    return {"base": base, "src": src, "wheel": wheel, "sdist": sdist, "data": data}


def test_sdist_carries_the_licence_and_the_readme_pictures(built):
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    local = [p for p in pictures if not p.startswith("http")]
    assert local and all(p.startswith("docs/") for p in local)
    docs_pngs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.png")}
    assert set(local) | docs_pngs <= names, f"missing from the sdist: {(set(local) | docs_pngs) - names}"
    assert {"LICENSE", "README.md", "pyproject.toml", "scenario_nb/py.typed"} <= names
    assert set(built["data"]) <= names, f"sandbox data missing from the sdist: {set(built['data']) - names}"


def test_wheel_metadata(built):
    version = source_version()
    assert built["wheel"].name == f"scenario_nb-{version}-py3-none-any.whl"
    with zipfile.ZipFile(built["wheel"]) as wheel:
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


SMOKE = textwrap.dedent("""
    import compileall, importlib, importlib.metadata, json, os, pkgutil, sys
    from pathlib import Path

    import scenario_nb
    from scenario_nb import _http, sandbox

    package = Path(scenario_nb.__file__).parent
    # pip byte-compiles quietly and ignores failures: compile every module again, loudly, on this Python.
    assert compileall.compile_dir(str(package), quiet=1, force=True), "a module does not compile on this Python"
    modules = [m.name for m in pkgutil.walk_packages([str(package)], "scenario_nb.") if not m.name.endswith("__main__")]
    for name in modules:
        importlib.import_module(name)

    # The magics, end to end, on the embedded sandbox (no credentials): an image comes back.
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "scenario_nb")
    result = shell.run_cell("%%scenario Gemini -n 1 -o smoke\\na lighthouse, smoke test")
    assert result.success, result.error_in_exec
    generation = shell.user_ns["smoke"]
    print(json.dumps({
        "python": list(sys.version_info[:2]), "file": scenario_nb.__file__, "version": scenario_nb.__version__,
        "dist_version": importlib.metadata.version("scenario_nb"), "user_agent": _http.USER_AGENT,
        "modules": modules, "status": generation.status, "size": list(generation.images[0].size),
        "files": sorted(p.relative_to(package.parent).as_posix() for p in package.rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts),
    }))
""")


@pytest.mark.timeout(INSTALL_TIMEOUT + 300)
def test_wheel_installs_and_runs_on_the_oldest_supported_python(built):
    python = oldest_python()
    base = built["base"]
    sh([python, "-m", "venv", str(base / "venv")], cwd=base, env=dict(os.environ), timeout=120)
    bin_dir = base / "venv" / "bin"
    env = venv_env(bin_dir, base / "home", SCENARIO_NB_HOME=str(base / "nb-home"),
                   SCENARIO_NB_SANDBOX_JOB_SECONDS="0.3")
    sh([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(built["wheel"])], cwd=base, env=env)
    (base / "smoke.py").write_text(SMOKE)
    run = sh([str(bin_dir / "python"), str(base / "smoke.py")], cwd=base, env=env, timeout=300)
    seen = json.loads(run.strip().splitlines()[-1])

    assert tuple(seen["python"]) == requires_python()
    assert Path(seen["file"]).resolve().is_relative_to((base / "venv").resolve()), seen["file"]
    version = source_version()
    assert seen["version"] == seen["dist_version"] == version and seen["user_agent"] == f"scenario_nb/{version}"
    assert {"scenario_nb._magics", "scenario_nb._panel", "scenario_nb.sandbox._server"} <= set(seen["modules"])
    assert seen["status"] == "success" and min(seen["size"]) > 0
    installed = set(seen["files"])
    assert "scenario_nb/py.typed" in installed
    assert set(built["data"]) >= set(PROBES) and set(built["data"]) <= installed, \
        f"sandbox data not installed: {set(built['data']) - installed}"
    site = Path(seen["file"]).parent
    for name in built["data"]:
        assert (site.parent / name).read_bytes() == (built["src"] / name).read_bytes(), name
