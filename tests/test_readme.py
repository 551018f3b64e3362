"""The README's two set-up commands stay true.

Command 2 (the tests) is what `.ci/run` runs, verbatim. Command 1 (the main job) is run for real on the run's
fresh machine (tests/user_machine.py): it installs a clean copy of the checkout, then JupyterLab serves the
quickstart on loopback (started as a subprocess instead of blocking, with a random token), and is stopped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import CREDENTIAL_VARS, ROOT, free_port
from user_machine import readme_commands as commands

README = ROOT / "README.md"
MAIN_JOB = 'pip install -e ".[dev]" && jupyter lab --ServerApp.ip=127.0.0.1 notebooks/01-quickstart.ipynb'
TESTS = 'pip install -q -e ".[test]" && python -m pytest'


def test_readme_has_exactly_the_two_setup_commands():
    assert commands() == [MAIN_JOB, TESTS]


def test_the_main_jobs_extra_brings_jupyterlab_and_a_kernel():
    """tests/user_machine.py runs the main job's install on top of Binder's, which already brings JupyterLab:
    the extra itself must name what the job needs on a machine that has nothing."""
    import tomllib
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert {re.split(r"[<>=!; \[]", r)[0].lower() for r in dev} >= {"jupyterlab", "ipykernel", "notebook"}


def test_readme_says_root_needs_allow_root():
    """Issue 25 item 14: `jupyter lab` as root (a container) stops at once unless told `--allow-root`."""
    text = " ".join(README.read_text().split())
    command = "jupyter lab --allow-root --ServerApp.ip=127.0.0.1 notebooks/01-quickstart.ipynb"
    assert "As root" in text and command in text


def test_ci_runs_the_readme_test_command_verbatim():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines.count(commands()[1]) == 1, "the README's test command, byte for byte, on a line of its own"
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def run_ci(tmp_path: Path, pytest_args: str) -> subprocess.CompletedProcess:
    """.ci/run for real, except that `pip` answers at once (this machine already has the test extra) and
    `chromium` is found; pytest runs for real on the given arguments, as CI runs it (CI=true, no stdin)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("pip", "chromium"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update(PATH=f"{stubs}{os.pathsep}{env['PATH']}", CI="true", PYTEST_ADDOPTS=pytest_args,
               PYTHONPATH=str(ROOT))
    return subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


def test_ci_fails_when_pytest_collects_no_test(tmp_path):
    run = run_ci(tmp_path, "tests/test_readme.py -n 0 -p no:cacheprovider -k no_test_has_this_name")
    assert "deselected" in run.stdout, run.stdout + run.stderr  # pytest ran, and selected nothing
    assert run.returncode == 1 and "collected no test" in run.stderr, (run.returncode, run.stderr)


def test_ci_passes_when_the_tests_pass(tmp_path):
    run = run_ci(tmp_path, "tests/test_readme.py -n 0 -p no:cacheprovider -k test_readme_has_exactly_the_two_setup")
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_require_fails_under_ci_and_skips_elsewhere(monkeypatch):
    from conftest import require

    def outcome(ci: str) -> type:
        monkeypatch.setenv("CI", ci)
        with pytest.raises(BaseException) as caught:  # skip and fail are BaseExceptions: catch both, compare
            require("scenario_nb_no_such_module")
        assert "scenario_nb_no_such_module" in str(caught.value)
        return caught.type

    assert require("json").dumps([]) == "[]"
    assert outcome("true") is outcome("1") is pytest.fail.Exception
    assert outcome("") is outcome("false") is pytest.skip.Exception


def test_readme_pictures_and_placeholders_exist():
    text = README.read_text()
    for picture in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        if not picture.startswith("http"):
            assert (ROOT / picture).is_file(), f"README shows {picture}, which is missing"
    assert "docs/panel.png" in text and "docs/magic-output.png" in text
    for mark in ("<!-- bench:poller -->", "<!-- bench:notebook -->", "<!-- bench:soak -->", "<!-- bench:suite -->"):
        assert mark in text


def test_readme_lists_every_setting_and_subcommand():
    from scenario_nb._magics import SUBCOMMANDS, ScenarioMagics
    text = README.read_text()
    for setting in ScenarioMagics.class_traits(config=True):
        assert f"`{setting}`" in text, f"README does not mention the setting {setting}"
    glance = text[text.index("## The magics at a glance"):text.index("## The Python API")]
    for command in SUBCOMMANDS:
        assert re.search(rf"\b{command}\b", glance), f"README does not mention %scenario {command}"


def test_readme_python_api_runs_on_the_sandbox(tmp_path):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(code) == 2 and len(code[0].strip().splitlines()) == 6
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update(SCENARIO_NB_HOME=str(tmp_path / "home"), SCENARIO_NB_SANDBOX_JOB_SECONDS="0.5")
    run = subprocess.run([sys.executable, "-c", code[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "success" in run.stdout
    assert len(list((tmp_path / "out").glob("*.png"))) == 2 and list((tmp_path / "out").glob("*.json"))


def test_readme_workbench_runs_on_the_sandbox(tmp_path):
    """The training-and-grid block, as written, on a folder of six drawn images; then what it left behind."""
    code = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[1]
    setup = ("import scenario_nb\nfrom PIL import Image, ImageDraw\nfrom pathlib import Path\n"
             "Path('potion-set').mkdir()\nfor i in range(6):\n"
             "    im = Image.new('RGB', (1024, 1024), (200, 30 * i, 90))\n"
             "    ImageDraw.Draw(im).ellipse((100 + 40 * i, 200, 700, 900), fill=(30, 60, 200))\n"
             "    im.save(f'potion-set/p{i}.png')\nclient = scenario_nb.client()\n")
    check = ("\nsheet.wait()\nprint('trained:', training.status, '| tiles ok:', sum(t.ok for t in sheet.tiles),"
             " '| best:', best.status, best.job_id)\n")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update(SCENARIO_NB_HOME=str(tmp_path / "home"), SCENARIO_NB_SANDBOX_JOB_SECONDS="0.5",
               SCENARIO_NB_SANDBOX_TRAIN_SECONDS="3")
    run = subprocess.run([sys.executable, "-c", setup + code + check], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained: trained | tiles ok: 6 | best: success" in run.stdout, run.stdout
    from scenario_nb._history import History
    history = History(tmp_path / "home" / "history.sqlite")
    try:
        assert [t.status for t in history.trainings("embedded-sandbox")] == ["trained"]
        assert history.count() >= 6  # every tile is a recorded job
    finally:
        history.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.mark.slow
def test_main_job_opens_the_quickstart_in_jupyterlab(user_machine, tmp_path):
    """Command 1 on the run's fresh machine: its install half (run as typed by tests/user_machine.py) made an
    editable install of the copy; its JupyterLab half serves the quickstart."""
    install, launch = (part.strip() for part in commands()[0].split("&&"))
    assert shlex.split(launch)[:2] == ["jupyter", "lab"]
    repo, env = user_machine["repo"], user_machine["env"]
    assert user_machine["readme_import"].is_relative_to(repo.resolve()), \
        f"not an editable install of the copy: {user_machine['readme_import']}"

    # The JupyterLab half, as typed, made non-blocking: no browser, a free port, a random token.
    port, token = free_port(), secrets.token_hex(16)
    argv = shlex.split(launch) + ["--no-browser", f"--port={port}", f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(argv, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not answers(f"{base}/api/status?token={token}"):
            assert server.poll() is None and time.monotonic() < deadline, \
                f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()}"
            time.sleep(0.5)
        # Given a notebook, Jupyter serves from the notebook's folder (the command sets no root_dir): find
        # the served root in the log and ask for the quickstart under it.
        served = re.search(r"Serving notebooks from local directory: (.+)", (tmp_path / "jupyter.log").read_text())
        root = Path(served[1].strip()) if served else repo
        path = (repo / "notebooks" / "01-quickstart.ipynb").relative_to(root).as_posix()
        with urllib.request.urlopen(f"{base}/api/contents/{path}?token={token}", timeout=10) as answer:
            assert answer.status == 200
            model = json.loads(answer.read())
        assert model["type"] == "notebook" and model["content"]["cells"]
        assert any("%load_ext scenario_nb" in "".join(c["source"]) for c in model["content"]["cells"])
        with urllib.request.urlopen(f"{base}/lab/tree/{path}?token={token}", timeout=10) as answer:
            assert answer.status == 200 and b"JupyterLab" in answer.read()  # Lab opens on it
        with pytest.raises(urllib.error.HTTPError) as refused:  # and nobody without the token gets in
            urllib.request.urlopen(f"{base}/api/contents/{path}", timeout=10)
        assert refused.value.code == 403
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
