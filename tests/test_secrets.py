"""No secret ever lands in a notebook, the history, the file store, a log line, a widget or an exception text.

Distinctive key and secret values (the sandbox accepts any it is started with) make any leak findable by a
plain byte search, in the clear and as the base64 Basic-auth token that carries them.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
from pathlib import Path

import ipywidgets as w
import pytest
import requests

import scenario_nb
from conftest import (SECRETS, exception_text, forget_recorded_exceptions, point_session_at,
                      recorded_exceptions, reset_session, secrets_in)
from scenario_nb import sandbox as sandbox_mod
from user_machine import NOTEBOOKS

KEY, SECRET = "sk_LEAKCHECK_key_7f3a9c2e51d4", "ss_LEAKCHECK_secret_b84d0e6f0a33"


def needles(key: str, secret: str) -> dict:
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    return {"secret": secret, "key": key, "basic-auth token": token}


def leaks(text: str, key: str = KEY, secret: str = SECRET) -> list:
    return [name for name, needle in needles(key, secret).items() if needle in text]


def scan_files(root: Path, key: str = KEY, secret: str = SECRET) -> list:
    """Every file under root (notebooks, history database and its WAL, images, sidecars, logs) searched as bytes."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {name}" for name, needle in needles(key, secret).items()
                  if needle.encode() in data]
    return found


def test_notebooks_history_store_and_kernel_logs_hold_no_secret(user_machine):
    """The whole notebook set as executed once for the run (tests/user_machine.py), saved with widget state,
    its kernels logging at DEBUG: nothing it left (notebooks, history, images, sidecars, logs) holds the
    embedded sandbox's key, secret or Basic-auth token, which every one of its API calls carried."""
    defaults = inspect.signature(sandbox_mod.start).parameters  # what the session starts it with
    key, secret = defaults["api_key"].default, defaults["api_secret"].default
    home, executed = user_machine["nb_home"], user_machine["executed"]
    assert list(home.rglob("*.sqlite*")) and list(home.rglob("*.png")), "nothing was stored to scan"
    assert len(list(executed.glob("*.ipynb"))) == len(NOTEBOOKS), user_machine["notebook_run"]
    assert "/generate/custom/" in (executed / "01-quickstart.stderr").read_text(), "the kernels logged no API call"
    found = scan_files(home, key, secret) + scan_files(executed, key, secret)
    assert not found, found


@pytest.mark.usefixtures("fake_comm")
def test_panel_magics_and_logs_hold_no_secret(tmp_path, monkeypatch, caplog, capsys):
    from IPython.testing.globalipapp import get_ipython
    caplog.set_level(logging.DEBUG)
    SECRETS.update((KEY, SECRET))
    with sandbox_mod.start(job_seconds=0.3, api_key=KEY, api_secret=SECRET) as sb:
        point_session_at(sb, tmp_path / "home", monkeypatch)
        try:
            shell = get_ipython()
            scenario_nb.load_ipython_extension(shell)
            panel = scenario_nb.Panel().wait_ready()
            panel.prompt.value = "a lighthouse at dusk"
            panel.model_menu.value = next(v for label, v in panel.model_menu.options if v and "Hero" in label)
            panel.generate_button.click()
            scenario_nb.wait_all(panel.generations, timeout=60)
            assert panel.generations and all(g.ok for g in panel.generations)
            for line in ("%scenario status", "%scenario history", "%scenario models"):
                shell.run_line_magic("scenario", line.split(" ", 1)[1])
            shell.run_cell_magic("scenario", "Gemini -o leak_check", "a red kite over the sea")
            texts = [repr(scenario_nb.client()), repr(shell.user_ns["leak_check"]), str(scenario_nb.client())]
            manager_state = w.Widget.get_manager_state()
            state = json.dumps(manager_state)
            passwords = [m for m in manager_state["state"].values() if m["model_name"] == "PasswordModel"]
        finally:
            reset_session()
    out = capsys.readouterr()
    assert "success" in out.out and "a lighthouse at dusk" in state, "nothing was shown to scan"
    assert not passwords, "a Password widget would save what it holds with the notebook"
    for where, text in (("widget state", state), ("stdout", out.out), ("stderr", out.err),
                        ("logs", caplog.text), ("reprs", "\n".join(texts))):
        assert not leaks(text), f"{where} holds the {leaks(text)}"


def test_wrong_credentials_errors_hold_neither(tmp_path):
    with sandbox_mod.start(api_key=KEY, api_secret=SECRET) as sb:
        cases = [dict(api_key=KEY, api_secret=SECRET[::-1]), dict(api_key=KEY[::-1], api_secret=SECRET),
                 dict(api_key=KEY, api_secret=SECRET, base_url="http://127.0.0.1:9/v1")]
        for case in cases:
            client = scenario_nb.ScenarioClient(base_url=case.pop("base_url", sb.url), home=tmp_path, **case)
            with pytest.raises(scenario_nb.ScenarioError) as caught:
                client.models()
            text = str(caught.value) + repr(caught.value) + repr(client)
            assert not leaks(text, case["api_key"], case["api_secret"]), text
            client.close()


def test_exceptions_provoked_with_distinctive_credentials_hold_no_secret(tmp_path, monkeypatch):
    """Every kind of error, provoked here with distinctive credentials, and read as a user would see it.

    conftest does the same check after every test of the suite; this test makes sure there is something to check,
    whatever runs before it (or nothing at all).
    """
    from IPython.testing.globalipapp import get_ipython

    from scenario_nb._magics import ScenarioMagics
    wrong_key, wrong_secret = KEY[::-1], SECRET[::-1]
    SECRETS.update((KEY, SECRET, wrong_key, wrong_secret))
    with sandbox_mod.start(job_seconds=0.2, api_key=KEY, api_secret=SECRET) as sb:
        def client(key=KEY, secret=SECRET, url=sb.url):
            return scenario_nb.ScenarioClient(key, secret, url, home=tmp_path / "home", max_retries=0)

        provoked = [
            lambda: client(secret=wrong_secret).models(),
            lambda: client(key=wrong_key).models(),
            lambda: client(url="http://127.0.0.1:9/v1").models(),
            lambda: client().job("job_nope123"),
            lambda: client().generate("model_google-gemini-3-1-flash", "x", numOutputs=99),
            lambda: sb.inject("error_5xx", count=1) or client().models(),
        ]
        for call in provoked:
            with pytest.raises(scenario_nb.ScenarioError):
                call()

        for var, value in (("SCENARIO_API_KEY", KEY), ("SCENARIO_API_SECRET", SECRET), ("SCENARIO_API_URL", sb.url),
                           ("SCENARIO_NB_HOME", str(tmp_path / "home"))):
            monkeypatch.setenv(var, value)
        reset_session()
        shell = get_ipython()
        try:
            scenario_nb.load_ipython_extension(shell)
            for cell in ("%scenario use", "%%scenario Nope\nx", "%config ScenarioMagics.default_aspect = 'wide'"):
                shell.run_cell(cell)
        finally:
            shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
            shell.config.pop("ScenarioMagics", None)  # the refused 'wide' stays in the shell's config otherwise
            reset_session()

    kinds = {type(exc).__name__ for exc in recorded_exceptions()}
    expected = {"AuthenticationError", "APIConnectionError", "ConnectionError", "NotFoundError", "InputError",
                "ServerError", "UsageError", "TraitError"}
    assert expected <= kinds, f"not provoked: {expected - kinds}"
    found = [(type(exc).__name__, secrets_in(exception_text(exc))) for exc in recorded_exceptions()
             if secrets_in(exception_text(exc))]
    assert not found, found


def test_a_secret_in_an_exception_is_found(request):
    """The recorder itself: an exception carrying the secret is seen and named (then forgotten, so this passes)."""
    SECRETS.update((KEY, SECRET))
    planted = scenario_nb.AuthenticationError(f"bad credentials {KEY}:{SECRET}")
    requests.ConnectionError(f"https://x/?token={SECRET}")
    leaked = [exc for exc in recorded_exceptions() if secrets_in(exception_text(exc))]
    assert planted in leaked and len(leaked) == 2
    assert secrets_in(exception_text(planted)) == sorted((KEY[:6], SECRET[:6]))
    forget_recorded_exceptions()
