"""Front doors take what they are given: a panel, a grid or a client built on the user's own client never
starts the shared session, nor the second embedded sandbox that session would bring."""

from __future__ import annotations

import pytest

import scenario_nb
from conftest import CREDENTIAL_VARS, reset_session
from scenario_nb import _session
from scenario_nb import sandbox as sandbox_mod
from scenario_nb._panel import PUBLIC

pytestmark = pytest.mark.usefixtures("fake_comm")


@pytest.fixture
def sandboxes_started(client, tmp_path, monkeypatch):
    """The sandboxes started from now on (the test's own `sb` is already running): a spy on
    `scenario_nb.sandbox.start`, with no credentials set, so a session would start one."""
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCENARIO_NB_HOME", str(tmp_path / "session-home"))
    monkeypatch.setenv("SCENARIO_NB_SANDBOX_JOB_SECONDS", "0.3")
    reset_session()
    started: list = []
    real_start = sandbox_mod.start

    def spy(*args, **kwargs):
        server = real_start(*args, **kwargs)
        started.append(server)
        return server

    monkeypatch.setattr(sandbox_mod, "start", spy)
    yield started
    reset_session()


def test_a_panel_on_a_given_client_starts_no_session(client, sandboxes_started):
    panel = scenario_nb.Panel(client=client).wait_ready()
    panel.scope.value = PUBLIC
    panel.wait_ready()
    assert panel.client is client and client.base_url in panel.backend_line.value
    panel.select_model("Gemini")
    panel.prompt.value = "a lighthouse at dusk"
    handle = panel.generate()
    assert handle is not None, panel.message.value
    handle.wait(30)
    assert handle.status == "success"
    assert sandboxes_started == [] and _session.current_session() is None


def test_a_panel_on_a_given_client_preselects_the_given_model(client, sandboxes_started):
    model = client.models(public=True)[0]
    panel = scenario_nb.Panel(model=model.id, client=client).wait_ready()
    panel.scope.value = PUBLIC
    panel.wait_ready()
    assert panel.model_menu.value == model.id
    assert sandboxes_started == [] and _session.current_session() is None


def test_a_grid_and_a_client_on_their_own_start_no_session(client, sandboxes_started):
    model = client.models(public=True)[0]
    handle = client.generate(model, "a lighthouse, plain client")
    handle.wait(30)
    grid = scenario_nb.grid("a lighthouse", model=model.id, vary={"seed": [1, 2]}, client=client)
    grid.wait(60)
    assert handle.status == "success"
    assert sandboxes_started == [] and _session.current_session() is None


def test_loading_the_magics_starts_no_session(sandboxes_started, ip_without_session):
    assert sandboxes_started == [] and _session.current_session() is None


@pytest.fixture
def ip_without_session():
    """A real IPython shell with the extension freshly loaded, and nothing else done."""
    from IPython.testing.globalipapp import get_ipython

    from scenario_nb._magics import ScenarioMagics
    shell = get_ipython()
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
    scenario_nb.load_ipython_extension(shell)
    yield shell
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
