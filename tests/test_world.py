"""The embedded sandbox is one world per home: every credential-less kernel of a SCENARIO_NB_HOME shares one
sandbox server, whose models, trainings, jobs and assets are kept on disk; one command empties it. The
catalog's demo training moves on and ends in sandbox time.

Checked by effect: what the home's sandbox server answers (its jobs, assets and models), its files, its
processes. The suite's own sandboxes (fixtures with explicit state) keep nothing on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

from conftest import Kernel, kernel_env, text_of, until
from scenario_nb import sandbox as sandbox_mod
from scenario_nb.sandbox._training_demo import DEMO_MODEL
from test_training_kernel import make_set

AUTH = ("sandbox-key", "sandbox-secret")  # the embedded sandbox's own credentials


def world_env(home: Path) -> dict:
    return dict(kernel_env(home), SCENARIO_NB_SANDBOX_TRAIN_SECONDS="3")


def server_of(home: Path) -> dict:
    return json.loads((home / "sandbox" / "server.json").read_text())


def world_servers(home: Path) -> list:
    """The sandbox processes serving this home (any state: a server that failed to start counts too)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "scenario_nb.sandbox" in cmdline and str(home) in cmdline:
            found.append(proc.pid)
    return found


def get(url: str) -> requests.Response:
    return requests.get(url, auth=AUTH, timeout=10)


def kill_server(home: Path) -> None:
    """The server dies without saving (SIGKILL), once its last save holds everything so far."""
    pid = server_of(home)["pid"]
    os.kill(pid, signal.SIGKILL)
    until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
          what="the server's end")


def saved(home: Path, what: str = "jobs") -> dict:
    """What the world's file holds: its jobs, or its models that differ from the catalog."""
    try:
        return json.loads((home / "sandbox" / "state.json").read_text())[what]
    except (OSError, ValueError):
        return {}


def test_a_model_trained_in_one_kernel_runs_in_another_on_the_same_home(tmp_path):
    home, folder = tmp_path / "home", make_set(tmp_path / "tiles")
    first, second = Kernel(world_env(home)), Kernel(world_env(home))
    try:
        first.run("%load_ext scenario_nb")
        first.run(f'%scenario train "World Knight" --images "{folder}" --captions none -o k')
        model_id, status = text_of(first.run("print(k.model_id, k.status)")).split()[:2]
        assert status == "trained"
        second.run("%load_ext scenario_nb")  # the other notebook, open at the same time
        out = text_of(second.run("import scenario_nb\nc = scenario_nb.client()\n"
                                 f"t = c.training({model_id!r})\ng = c.generate(t.model(), 'a knight').wait(60)\n"
                                 "print('RAN', g.ok, g.job_id, c.base_url)"))
        ok, job_id, url = out.split("RAN ")[-1].split()[:3]
        assert ok == "True"
        assert url == server_of(home)["url"] and len(world_servers(home)) == 1  # one server for the home
        job = get(f"{url}/jobs/{job_id}").json()["job"]
        assert job["status"] == "success" and model_id in json.dumps(job)  # the LoRA ran, in the shared world
    finally:
        first.kill()
        second.kill()


def test_a_kernel_restart_and_a_dead_server_keep_models_jobs_and_assets_and_reset_removes_them(tmp_path):
    home = tmp_path / "home"
    first = Kernel(world_env(home))
    try:
        first.run("%load_ext scenario_nb")
        out = text_of(first.run("%%scenario Gemini -o g\na lantern in the fog"))
        assert "success" in out
        job_id, asset_id = text_of(first.run("print(g.job_id, g.outputs[0].asset_id)")).split()[:2]
        model_id = requests.post(f"{server_of(home)['url']}/models", auth=AUTH, timeout=10,
                                 json={"name": "Kept Model", "type": "flux.2-dev-lora"}).json()["model"]["id"]
    finally:
        first.kill()
    until(lambda: job_id in saved(home) and model_id in saved(home, "models"), what="the job and model on disk")
    kill_server(home)  # the kernel restarts, and the server is gone too: the world comes back from disk

    second = Kernel(world_env(home))
    try:
        second.run("%load_ext scenario_nb")
        url = text_of(second.run("import scenario_nb\nprint(scenario_nb.client().base_url)")).strip()
        assert get(f"{url}/jobs/{job_id}").json()["job"]["status"] == "success"
        asset = get(f"{url}/assets/{asset_id}").json()["asset"]
        assert get(asset["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
        assert get(f"{url}/models/{model_id}").json()["model"]["name"] == "Kept Model"
        again = text_of(second.run("%%scenario Gemini -o h\na second lantern\n"))
        assert "success" in again
        new_job = text_of(second.run("print(h.job_id)")).strip()
        assert new_job != job_id and new_job[4:10] != job_id[4:10]  # another server: another id salt

        said = text_of(second.run("%scenario sandbox reset"))
        assert "removed 1 model, 2 jobs and 2 assets" in said, said
        assert get(f"{url}/jobs/{job_id}").status_code == 404 and get(f"{url}/models/{model_id}").status_code == 404
        assert get(f"{url}/assets/{asset_id}").status_code == 404
    finally:
        second.kill()


def test_the_command_line_reset_empties_a_world_with_no_server_running(tmp_path):
    home = tmp_path / "home"
    kernel = Kernel(world_env(home))
    try:
        kernel.run("%load_ext scenario_nb\n%scenario sandbox")
        kernel.run("%%scenario Gemini -o g\na lantern")
        job_id = text_of(kernel.run("print(g.job_id)")).strip()
    finally:
        kernel.kill()
    until(lambda: job_id in saved(home) and saved(home, "assets"), what="the job and its image saved to disk")
    kill_server(home)
    env = dict(os.environ, SCENARIO_NB_HOME=str(home))
    said = subprocess.run([sys.executable, "-m", "scenario_nb.sandbox", "--reset"], env=env, capture_output=True,
                          text=True, timeout=60).stdout
    assert "removed 1 job and 1 asset" in said, said
    assert not (home / "sandbox" / "state.json").exists() and world_servers(home) == []


def test_two_kernels_at_once_share_one_server_and_lose_no_job(tmp_path):
    home = tmp_path / "home"
    kernels = [Kernel(world_env(home)) for _ in range(2)]
    ids: dict = {}

    def submit(n: int) -> None:
        kernels[n].run("%load_ext scenario_nb")
        kernels[n].run("%%scenario Gemini --each --no-wait -o b\n" + "\n".join(f"crate {n}-{i}" for i in range(5)))
        out = text_of(kernels[n].run("for x in b: x.wait(60)\nprint('IDS', *(x.job_id for x in b))"))
        ids[n] = out.split("IDS ")[-1].split()
    try:
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert len(world_servers(home)) == 1, "two kernels started two servers for one home"
        every = ids[0] + ids[1]
        assert len(set(every)) == 10 and all(i.startswith("job_") for i in every), ids
        url = server_of(home)["url"]
        assert all(get(f"{url}/jobs/{i}").json()["job"]["status"] == "success" for i in every)
        until(lambda: set(every) <= set(saved(home)), what="every job saved to disk")
    finally:
        for kernel in kernels:
            kernel.kill()


def test_the_world_server_stops_once_no_kernel_uses_it(tmp_path):
    home = tmp_path / "home"
    kernel = Kernel(world_env(home))
    try:
        kernel.run("%load_ext scenario_nb\nimport scenario_nb\nscenario_nb.client()")
        pid = server_of(home)["pid"]
    finally:
        kernel.kill()
    until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=40,
          what="the unused server's end")
    assert not (home / "sandbox" / "server.json").exists() and (home / "sandbox" / "state.json").exists()


def test_the_demo_training_moves_on_and_ends_trained_in_sandbox_time(clock):
    with sandbox_mod.start(train_seconds=30, clock=clock, demo_training=True) as sb:
        def model() -> dict:
            return get(f"{sb.url}/models/{DEMO_MODEL}").json()["model"]
        first = model()
        assert first["status"] == "training" and 0.35 <= first["trainingProgress"]["progress"] <= 0.5
        assert sb.state.trainings.active() == 0  # the demo does not take the user's one training slot
        clock.now += 5
        later = model()
        assert later["status"] == "training" and later["trainingProgress"]["progress"] > first["trainingProgress"][
            "progress"]
        clock.now += 30
        done = model()
        assert done["status"] == "trained" and done["trainingStats"]["endedAt"]
        job = requests.post(f"{sb.url}/generate/custom/model_bfl-flux-2-dev", auth=AUTH, timeout=10,
                            json={"prompt": "a dragon", "modelId": DEMO_MODEL}).json()["job"]
        assert job["status"] == "queued"


def test_the_suites_own_sandboxes_keep_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCENARIO_NB_HOME", str(tmp_path / "home"))
    with sandbox_mod.start(job_seconds=0.1) as sb:
        requests.post(f"{sb.url}/generate/custom/model_bfl-flux-2-dev", auth=AUTH, timeout=10, json={"prompt": "x"})
        assert sb.world is None
        time.sleep(0.6)
    assert list(tmp_path.iterdir()) == []


def test_a_kernel_whose_world_server_died_starts_it_again_on_the_same_address(tmp_path):
    home = tmp_path / "home"
    kernel = Kernel(world_env(home))
    try:
        kernel.run("%load_ext scenario_nb")
        kernel.run("%%scenario Gemini -o g\na lantern")
        job_id = text_of(kernel.run("print(g.job_id)")).strip()
        until(lambda: job_id in saved(home), what="the job saved to disk")
        before = server_of(home)
        kill_server(home)
        out = text_of(kernel.run("%%scenario Gemini -o h\na second lantern"))
        assert "success" in out and "embedded sandbox" in out, out  # it says where it runs now
        after = server_of(home)
        assert after["pid"] != before["pid"] and after["url"] == before["url"]
        assert get(f"{after['url']}/jobs/{job_id}").json()["job"]["status"] == "success"
    finally:
        kernel.kill()
