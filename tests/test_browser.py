"""What users see: a real JupyterLab on loopback, driven in headless Debian Chromium by Playwright."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, free_port, kernel_env

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: apt-get install -y chromium (see .ci/run)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of the panel notebook plus a --no-wait check."""
    nb = nbformat.read(ROOT / "notebooks" / "02-panel.ipynb", as_version=4)
    nb.cells = nb.cells[:2] + [
        nbformat.v4.new_code_cell("%load_ext scenario_nb"),
        nbformat.v4.new_code_cell("%%scenario Gemini --no-wait -o later\na lighthouse on a cliff at night"),
        nbformat.v4.new_code_cell("import time\nlater.wait()\ntime.sleep(1)\nprint('later cell ran:', later.status)"),
    ]
    nbformat.write(nb, tmp_path / "panel.ipynb")
    env = kernel_env(tmp_path / "home")  # no credentials: the embedded sandbox
    for var in ["JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR",
                "JUPYTERLAB_SETTINGS_DIR", "IPYTHONDIR"]:
        env[var] = str(tmp_path / "jhome" / var.lower())
    news = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab/apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                       "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--expose-app-in-browser"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "jupyter lab exited"
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/lab/tree/panel.ipynb?token={token}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_cell(page, index: int) -> None:
    page.evaluate(f"""async () => {{
        const nb = window.jupyterapp.shell.currentWidget;
        nb.content.activeCellIndex = {index};
        await window.jupyterapp.commands.execute('notebook:run-cell');
    }}""")


def test_panel_generates_16_9_and_no_wait_fills_in(lab, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(lab)
        page.wait_for_function("""() => { const w = window.jupyterapp?.shell.currentWidget;
            return w?.sessionContext?.session?.kernel && w.sessionContext.kernelDisplayStatus === 'idle'; }""",
                               timeout=90_000)
        run_cell(page, 1)  # the panel
        out = ".jp-OutputArea-output"
        page.wait_for_selector(f"{out} .widget-toggle-buttons", timeout=60_000)
        page.click(f"{out} .widget-toggle-buttons button:has-text('Public catalog')")
        model_select = page.locator(f"{out} .widget-dropdown:has(label:text-is('Model')) select")
        page.wait_for_function("""() => [...document.querySelectorAll('.widget-dropdown select option')]
            .some(o => o.textContent.includes('Gemini'))""", timeout=60_000)
        label = next(t for t in model_select.locator("option").all_inner_texts() if "Gemini" in t)
        model_select.select_option(label=label)
        page.wait_for_function("""() => [...document.querySelectorAll('.widget-dropdown select option')]
            .some(o => o.textContent === '16:9')""", timeout=30_000)
        page.locator(f"{out} .widget-textarea textarea").first.fill("a floating island with a waterfall")
        page.locator(f"{out} .widget-dropdown:has(label:text-is('Aspect')) select").select_option(label="16:9")
        page.wait_for_timeout(300)
        page.click(f"{out} button:has-text('Generate')")
        page.wait_for_function("""() => [...document.querySelectorAll('img.widget-image')].some(
            img => img.naturalWidth > 0 && Math.abs(img.naturalWidth / img.naturalHeight - 16 / 9) < 0.05)""",
                               timeout=90_000)
        page.wait_for_selector(f"{out} .progress-bar-success", timeout=30_000)
        assert page.locator("text=Loading widget").count() == 0
        page.screenshot(path=str(shots / "panel.png"), full_page=True)
        panel = page.locator(f"{out} .widget-vbox").first
        panel.screenshot(path=str(shots / "panel-widget.png"))
        if os.environ.get("SCENARIO_NB_UPDATE_DOCS"):
            shutil.copy(shots / "panel-widget.png", ROOT / "docs" / "panel.png")

        run_cell(page, 2)  # %load_ext
        run_cell(page, 3)  # %%scenario --no-wait: returns at once
        page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
            return w.sessionContext.kernelDisplayStatus === 'idle'; }""", timeout=30_000)
        cells = page.locator(".jp-Notebook .jp-Cell")
        run_cell(page, 4)  # a later cell runs while the job finishes
        page.wait_for_function("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
            .some(o => o.textContent.includes('later cell ran: success'))""", timeout=60_000)
        no_wait_cell = cells.nth(3)
        page.wait_for_function("""(el) => [...el.querySelectorAll('img')].some(i => i.naturalWidth > 0)""",
                               arg=no_wait_cell.element_handle(), timeout=30_000)
        no_wait_cell.screenshot(path=str(shots / "no-wait-cell.png"))
        if os.environ.get("SCENARIO_NB_UPDATE_DOCS"):
            shutil.copy(shots / "no-wait-cell.png", ROOT / "docs" / "magic-output.png")
        browser.close()
    assert not errors, errors
