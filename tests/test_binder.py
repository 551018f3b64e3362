"""What Binder builds, as far as this machine allows: repo2docker's rules for binder/, then a fresh virtual
environment set up from binder/'s files alone, postBuild run, start run (tests/user_machine.py builds it once
for the run; test_notebooks reads the notebooks it executed there).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from user_machine import sh

BINDER = ROOT / "binder"


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


# -- The image (tests/user_machine.py builds it once for the run) -----------------------------------------

@pytest.mark.slow
def test_post_build_installs_the_package(user_machine):
    print("the run's fresh machine, seconds per stage:", user_machine["seconds"])
    bin_dir = user_machine["bin"]
    assert user_machine["binder_import"].is_relative_to(bin_dir.parent.resolve()), \
        f"scenario_nb imported from {user_machine['binder_import']}"
    assert "4.6." in user_machine["lab_version"]
    settings = user_machine["home"] / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    notification = json.loads((settings / "notification.jupyterlab-settings").read_text())
    assert notification == {"fetchNews": "false", "checkForUpdates": False}
    extensions = user_machine["lab_extensions"]
    assert "@jupyter-widgets/jupyterlab-manager" in extensions and "enabled" in extensions


@pytest.mark.slow
def test_start_sets_defaults_and_execs(user_machine):
    env = {k: v for k, v in user_machine["env"].items() if k != "SCENARIO_NB_SANDBOX_JOB_SECONDS"}
    out = sh(["binder/start", "python", "-c", "import os, sys; print(sys.prefix); "
              "print(os.environ['SCENARIO_NB_SANDBOX_JOB_SECONDS'])"], cwd=user_machine["repo"], env=env, timeout=60)
    prefix, seconds = out.split()
    assert Path(prefix).resolve() == user_machine["bin"].parent.resolve()
    assert float(seconds) > 0
