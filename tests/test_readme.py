"""The README's two set-up commands stay true.

Command 2 (the tests) is what `.ci/run` runs, verbatim. Command 1 (the main job) is run for real in a fresh
virtual environment on a clean copy of the checkout: it installs, then JupyterLab serves the quickstart on
loopback (started as a subprocess instead of blocking, with a random token), and is stopped.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import json
from pathlib import Path

import pytest

from conftest import ROOT
from test_binder import INSTALL_TIMEOUT, clean_copy, fresh_venv, sh, venv_env

README = ROOT / "README.md"
MAIN_JOB = 'pip install -e ".[dev]" && jupyter lab --ServerApp.ip=127.0.0.1 notebooks/01-quickstart.ipynb'
TESTS = 'pip install -q -e ".[test]" && python -m pytest'


def commands() -> list:
    """The one-line commands of the README's shell blocks that start with `pip install`, in order."""
    blocks = re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", README.read_text(), flags=re.S)
    lines = [l.strip() for b in blocks for l in b.strip().splitlines()]
    return [l for l in lines if l.startswith("pip install")]


def test_readme_has_exactly_the_two_setup_commands():
    assert commands() == [MAIN_JOB, TESTS]


def test_ci_runs_the_readme_test_command_verbatim():
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()
             if l.strip() and not l.strip().startswith("#")]
    assert lines[-1] == commands()[1]
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_readme_pictures_and_placeholders_exist():
    text = README.read_text()
    for picture in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        if not picture.startswith("http"):
            assert (ROOT / picture).is_file(), f"README shows {picture}, which is missing"
    assert "docs/panel.png" in text and "docs/magic-output.png" in text
    for mark in ("<!-- bench:poller -->", "<!-- bench:notebook -->", "<!-- bench:soak -->"):
        assert mark in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 180)
def test_main_job_opens_the_quickstart_in_jupyterlab(tmp_path):
    install, launch = (part.strip() for part in commands()[0].split("&&"))
    assert shlex.split(launch)[:2] == ["jupyter", "lab"]
    repo = clean_copy(tmp_path / "repo")
    bin_dir = fresh_venv(tmp_path / "venv")
    env = venv_env(bin_dir, tmp_path / "home")

    # The install half, as typed, in a shell whose `pip` is the venv's.
    sh(install, cwd=repo, env=env, shell=True)
    where = sh([str(bin_dir / "python"), "-c", "import scenario_nb; print(scenario_nb.__file__)"], cwd=tmp_path,
               env=env).strip()
    assert Path(where).resolve().is_relative_to(repo.resolve()), f"not an editable install of the copy: {where}"

    # The JupyterLab half, as typed, made non-blocking: no browser, a free port, a random token.
    port, token = free_port(), secrets.token_hex(16)
    argv = shlex.split(launch) + ["--no-browser", f"--port={port}", f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(argv, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/contents/01-quickstart.ipynb?token={token}"
    try:
        status, body, deadline = None, b"", time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    status, body = answer.status, answer.read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert status == 200, f"the quickstart was not served ({status}):\n{(tmp_path / 'jupyter.log').read_text()}"
        model = json.loads(body)
        assert model["type"] == "notebook" and model["content"]["cells"]
        assert any("%load_ext scenario_nb" in "".join(c["source"]) for c in model["content"]["cells"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as answer:
            assert answer.status == 200  # JupyterLab itself is up
        with pytest.raises(urllib.error.HTTPError) as refused:  # and nobody without the token gets in
            urllib.request.urlopen(url.split("?")[0], timeout=10)
        assert refused.value.code == 403
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
