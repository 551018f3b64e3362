"""What Binder builds, as far as this machine allows: repo2docker's rules for binder/, then a fresh virtual
environment set up from binder/'s files alone, postBuild run, start run, and every notebook executed in it.

Slow (a new venv and a few installs from the package index), but part of the default run, as CI runs it.
The helpers here (a clean copy of the checkout, a fresh venv) are shared with test_readme.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from conftest import CREDENTIAL_VARS, ROOT
from test_notebooks import NOTEBOOKS, problems, widget_images

BINDER = ROOT / "binder"
INSTALL_TIMEOUT = 300


# -- Shared helpers (test_readme uses them too) ---------------------------------------------------------

def clean_copy(dest: Path) -> Path:
    """The working tree as a fresh clone would have it: tracked and new unignored files, no .git, no builds."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def fresh_venv(path: Path) -> Path:
    """A new virtual environment WITHOUT the system site packages; returns its bin directory."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    cfg = (path / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg
    return path / "bin"


def venv_env(bin_dir: Path, home: Path, **extra: str) -> dict:
    """The environment of a shell in that venv: its bin first on PATH, a private HOME, no credentials."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS and k not in ("PYTHONPATH", "PYTHONHOME")}
    home.mkdir(parents=True, exist_ok=True)
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(bin_dir.parent),
                "HOME": str(home), "PIP_NO_INPUT": "1", **extra})
    return env


def sh(args, *, cwd: Path, env: dict, timeout: float = INSTALL_TIMEOUT, shell: bool = False) -> str:
    """Run a command; on failure, fail the test with its output."""
    proc = subprocess.run(args, cwd=cwd, env=env, timeout=timeout, shell=shell, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          executable="/bin/bash" if shell else None)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc.stdout


# -- repo2docker's rules for binder/ ----------------------------------------------------------------------

def tracked_mode(path: Path) -> str:
    out = subprocess.run(["git", "ls-files", "-s", str(path.relative_to(ROOT))], cwd=ROOT, capture_output=True,
                         text=True).stdout.split()
    return out[0] if out else oct(path.stat().st_mode)[-6:]


def test_binder_folder_follows_repo2docker_rules():
    # A binder/ folder makes repo2docker ignore root-level config: everything it needs must be in binder/.
    assert {p.name for p in BINDER.iterdir()} <= {"requirements.txt", "postBuild", "start", "environment.yml",
                                                   "apt.txt", "runtime.txt"}
    assert (BINDER / "requirements.txt").is_file()
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        # Paths in it would resolve against the repository root, not binder/: the package comes from postBuild.
        assert not line.strip().startswith(("-e", ".", "/")), f"binder/requirements.txt: {line!r}"
    for script in ("postBuild", "start"):
        path = BINDER / script
        assert path.read_text().startswith("#!"), f"binder/{script} needs a shebang"
        assert os.access(path, os.X_OK) and tracked_mode(path) == "100755", f"binder/{script} must be executable"
    body = [line.strip() for line in (BINDER / "postBuild").read_text().splitlines()[1:] if line.strip()
            and not line.lstrip().startswith("#")]
    assert body[0].startswith("set -e"), "binder/postBuild must start with set -e"
    assert any("pip install" in line and " ." in f"{line} " for line in body), "postBuild must install the package"
    start = [line.strip() for line in (BINDER / "start").read_text().splitlines() if line.strip()]
    assert start[-1] == 'exec "$@"', 'binder/start must end with exec "$@"'
    assert not any(var in (BINDER / "start").read_text() for var in ("SCENARIO_API_KEY", "SCENARIO_API_SECRET"))


def test_readme_links_binder_to_the_quickstart():
    readme = (ROOT / "README.md").read_text()
    assert "https://mybinder.org/badge_logo.svg" in readme
    assert "/HEAD?urlpath=lab/tree/notebooks/01-quickstart.ipynb" in readme
    assert (ROOT / "notebooks" / "01-quickstart.ipynb").is_file()


# -- The image, built in a fresh venv ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def binder_image(tmp_path_factory):
    """A clean checkout with binder/requirements.txt and binder/postBuild applied in a fresh venv."""
    base = tmp_path_factory.mktemp("binder")
    repo = clean_copy(base / "repo")
    bin_dir = fresh_venv(base / "venv")
    env = venv_env(bin_dir, base / "home")
    # repo2docker: pip install -r binder/requirements.txt, then binder/postBuild, both from the repository root.
    sh([str(bin_dir / "python"), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], cwd=repo, env=env)
    sh(["binder/postBuild"], cwd=repo, env=env)
    return {"repo": repo, "bin": bin_dir, "env": env, "home": base / "home", "base": base}


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_post_build_installs_the_package(binder_image):
    bin_dir, env = binder_image["bin"], binder_image["env"]
    where = sh([str(bin_dir / "python"), "-c", "import scenario_nb, ipywidgets, ipykernel; "
                "print(scenario_nb.__file__)"], cwd=binder_image["base"], env=env).strip()
    assert Path(where).resolve().is_relative_to(bin_dir.parent.resolve()), f"scenario_nb imported from {where}"
    assert "4.6." in sh([str(bin_dir / "jupyter"), "lab", "--version"], cwd=binder_image["base"], env=env)
    settings = binder_image["home"] / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    notification = json.loads((settings / "notification.jupyterlab-settings").read_text())
    assert notification == {"fetchNews": "false", "checkForUpdates": False}
    extensions = sh([str(bin_dir / "jupyter"), "labextension", "list"], cwd=binder_image["base"], env=env)
    assert "@jupyter-widgets/jupyterlab-manager" in extensions and "enabled" in extensions


@pytest.mark.slow
def test_start_sets_defaults_and_execs(binder_image):
    out = sh(["binder/start", "python", "-c", "import os, sys; print(sys.prefix); "
              "print(os.environ['SCENARIO_NB_SANDBOX_JOB_SECONDS'])"], cwd=binder_image["repo"],
             env=binder_image["env"], timeout=60)
    prefix, seconds = out.split()
    assert Path(prefix).resolve() == binder_image["bin"].parent.resolve()
    assert float(seconds) > 0


RUNNER = textwrap.dedent("""
    import sys, nbformat
    from nbclient import NotebookClient
    source, target, cwd = sys.argv[1:]
    nb = nbformat.read(source, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel prefix:', sys.prefix)"))
    client = NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": cwd}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, target)
""")


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 300)
def test_every_notebook_runs_in_the_binder_image(binder_image):
    repo, base = binder_image["repo"], binder_image["base"]
    runner = base / "run_notebook.py"
    runner.write_text(RUNNER)
    found = []
    for path in NOTEBOOKS:
        # As Binder runs it: through binder/start, no credentials (so on the embedded sandbox).
        env = venv_env(binder_image["bin"], binder_image["home"], SCENARIO_NB_HOME=str(base / "nb-home"),
                       SCENARIO_NB_SANDBOX_JOB_SECONDS="1")
        executed = base / f"{path.stem}.executed.ipynb"
        sh(["binder/start", "python", str(runner), str(repo / "notebooks" / path.name), str(executed),
            str(repo / "notebooks")], cwd=repo, env=env, timeout=300)
        nb = nbformat.read(executed, as_version=4)
        prefix = nb.cells[-1].outputs[0].text.split("kernel prefix:")[1].strip()
        assert Path(prefix).resolve() == binder_image["bin"].parent.resolve(), f"{path.name} ran in {prefix}"
        nb.cells = nb.cells[:-1]
        found += problems(nb, path.name)
        if path.stem.startswith("02") and not widget_images(nb):
            found.append("02: the panel's gallery holds no image in the saved widget state")
    assert not found, "\n".join(found)
