"""The declared floors, proven: a fresh venv on the oldest supported Python gets exactly the lowest version
pyproject.toml admits of each runtime dependency (and the lowest urllib3 that requests floor admits: the
package imports urllib3 directly), and the package imports and generates there as tests/user_machine.py's
SMOKE does. A floor that is only written down lets a user install a combination nobody ever ran.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import ROOT
from user_machine import SMOKE, clean_copy, oldest_python, sh, venv_env

def declared_floors() -> dict:
    """{name: lowest version} from pyproject.toml's runtime dependencies; each must have a `>=` bound."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for line in dependencies:
        requirement = Requirement(line)
        lowest = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(lowest) == 1, f"{line!r} must declare one lower bound (>=)"
        floors[requirement.name.lower()] = lowest[0]
    return floors


def lowest_admitted(python: Path, env: dict, cwd: Path, package: str, dependency: str) -> str:
    """The `>=` bound that the installed `package` puts on `dependency` (read from its metadata)."""
    code = f"import importlib.metadata as m, json; print(json.dumps(m.requires({package!r})))"
    requirements = [Requirement(r) for r in json.loads(sh([str(python), "-c", code], cwd=cwd, env=env))]
    [wanted] = [r for r in requirements if r.name.lower() == dependency]
    [lowest] = [s.version for s in wanted.specifier if s.operator == ">="]
    return lowest


def installed_versions(python: Path, env: dict, cwd: Path) -> dict:
    listed = json.loads(sh([str(python), "-m", "pip", "list", "--format", "json"], cwd=cwd, env=env))
    return {item["name"].lower(): item["version"] for item in listed}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_declared_floors_install_together_and_work_on_the_oldest_python(tmp_path):
    floors = declared_floors()
    assert set(floors) == {"ipywidgets", "ipython", "requests", "pillow", "traitlets"}
    repo = clean_copy(tmp_path / "repo")
    sh([oldest_python(), "-m", "venv", str(tmp_path / "venv")], cwd=tmp_path, env=dict(os.environ), timeout=120)
    bin_dir = tmp_path / "venv" / "bin"
    python, env = bin_dir / "python", venv_env(bin_dir, tmp_path / "home")
    # uv installs what pip would (the same resolution: the versions are checked below), five times faster
    pip = [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", str(python), "-c", "constraints.txt"]

    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in floors.items()))
    sh(pip + [str(repo)], cwd=tmp_path, env=env)
    # urllib3 is imported by the package but comes through requests: its floor is the one requests sets.
    floors["urllib3"] = lowest_admitted(python, env, tmp_path, "requests", "urllib3")
    constraints.write_text(constraints.read_text() + f"urllib3=={floors['urllib3']}\n")
    sh(pip + ["urllib3"], cwd=tmp_path, env=env)
    sh([str(python), "-m", "pip", "check"], cwd=tmp_path, env=env)

    installed = installed_versions(python, env, tmp_path)
    assert {name: Version(installed[name]) for name in floors} == \
        {name: Version(version) for name, version in floors.items()}

    (tmp_path / "smoke.py").write_text(SMOKE)
    smoke_env = venv_env(bin_dir, tmp_path / "home", SCENARIO_NB_HOME=str(tmp_path / "smoke-home"),
                         SCENARIO_NB_SANDBOX_JOB_SECONDS="0.3")
    seen = json.loads(sh([str(python), str(tmp_path / "smoke.py")], cwd=tmp_path, env=smoke_env,
                         timeout=300).strip().splitlines()[-1])
    assert Path(seen["file"]).resolve().is_relative_to((tmp_path / "venv").resolve()), seen["file"]
    assert "scenario_nb._panel" in seen["modules"] and "scenario_nb.sandbox._server" in seen["modules"]
    assert seen["status"] == "success" and min(seen["size"]) > 0


def test_read_retries_back_off_capped_and_jittered_without_urllib3_2_arguments():
    """urllib3's read retries wait what the package's one backoff policy says (0.5 s doubling, capped at 8 s,
    jittered ×0.75–1.25), computed by the package itself, so urllib3 1.26 (which has no backoff_max= or
    backoff_jitter=) retries the same way."""
    from urllib3.exceptions import ConnectTimeoutError
    from urllib3.util.retry import RequestHistory

    from scenario_nb._http import _read_retry

    def after(errors: int) -> float:
        history = tuple(RequestHistory("GET", "/v1/models", ConnectTimeoutError(), None, None)
                        for _ in range(errors))
        retry = _read_retry(10).new(history=history)
        assert type(retry) is type(_read_retry(10))  # urllib3 keeps the subclass across retries
        return retry.get_backoff_time()

    assert after(1) == 0.0
    assert 0.75 <= after(2) <= 1.25 and 1.5 <= after(3) <= 2.5
    assert all(6.0 <= after(n) <= 10.0 for n in (6, 9, 30))  # the cap, jittered: never growing past it
