"""Shared fixtures: a real sandbox over loopback, an isolated home, and a real IPython shell."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenario_nb import _session
from scenario_nb import sandbox as sandbox_mod

ROOT = Path(__file__).resolve().parents[1]
CREDENTIAL_VARS = ("SCENARIO_API_KEY", "SCENARIO_API_SECRET", "SCENARIO_API_URL", "SCENARIO_SDK_API_KEY",
                   "SCENARIO_SDK_API_SECRET", "SCENARIO_BASE_URL")


def reset_session() -> None:
    if _session._session is not None:
        _session._session.close()
    _session._session = None


@pytest.fixture
def sandbox():
    with sandbox_mod.start(job_seconds=0.3, job_jitter=0.1, seed=11) as server:
        yield server


@pytest.fixture
def env(sandbox, tmp_path, monkeypatch):
    """The shared session pointed at the sandbox, with history and images under tmp_path."""
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCENARIO_API_KEY", sandbox.api_key)
    monkeypatch.setenv("SCENARIO_API_SECRET", sandbox.api_secret)
    monkeypatch.setenv("SCENARIO_API_URL", sandbox.url)
    monkeypatch.setenv("SCENARIO_NB_HOME", str(tmp_path / "home"))
    reset_session()
    yield sandbox
    reset_session()


@pytest.fixture
def ip(env):
    """A real IPython shell with the extension loaded."""
    from IPython.testing.globalipapp import get_ipython
    shell = get_ipython()
    from scenario_nb._magics import ScenarioMagics
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
    shell.config.pop("ScenarioMagics", None)
    import scenario_nb
    scenario_nb.load_ipython_extension(shell)  # a fresh ScenarioMagics each test, as %load_ext makes
    yield shell
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sandbox_process(tmp_path):
    """The sandbox as its own process, so it outlives kernels (as the real cloud does)."""
    key, secret = "sk_proc_KEY_5521", "ss_proc_SECRET_8834"
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--port", "0", "--api-key", key,
                             "--api-secret", secret, "--job-seconds", "1"], stdout=subprocess.PIPE, text=True)
    url = None
    deadline = time.time() + 30
    while url is None and time.time() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        url = found[1] if found else None
    assert url, "the sandbox did not start"
    yield {"url": url, "key": key, "secret": secret, "proc": proc}
    proc.terminate()
    proc.wait(timeout=10)


def kernel_env(home: Path, server: dict = None, job_seconds: str = "1") -> dict:
    """A kernel environment: no credentials (embedded sandbox) or the given sandbox process."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update({"SCENARIO_NB_HOME": str(home), "SCENARIO_NB_SANDBOX_JOB_SECONDS": job_seconds})
    if server:
        env.update({"SCENARIO_API_URL": server["url"], "SCENARIO_API_KEY": server["key"],
                    "SCENARIO_API_SECRET": server["secret"]})
    return env
