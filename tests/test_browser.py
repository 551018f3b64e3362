"""What users see: a real JupyterLab on loopback, driven in headless Debian Chromium by Playwright.

Screenshots go to test-output/browser/ (gitignored). With SCENARIO_NB_UPDATE_DOCS=1 the panel's and the
--no-wait cell's screenshots also replace docs/panel.png and docs/magic-output.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
SHOTS = ROOT / "test-output" / "browser"
OUT = ".jp-OutputArea-output"
PANEL = ".scenario-panel"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: apt-get install -y chromium (see .ci/run)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

if os.environ.get("CI"):
    from playwright.sync_api import sync_playwright  # under CI a missing Playwright is a failure
else:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@contextlib.contextmanager
def jupyterlab(tmp_path: Path, notebook: str, **env_extra: str):
    """JupyterLab on 127.0.0.1 (no credentials: the embedded sandbox), opened on `notebook` in tmp_path."""
    env = kernel_env(tmp_path / "home")
    env.update(env_extra)
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
        yield f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={token}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a panel cell plus a --no-wait check."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# The generation panel"),
        nbformat.v4.new_code_cell("import scenario_nb\n\npanel = scenario_nb.Panel()\npanel"),
        nbformat.v4.new_code_cell("%load_ext scenario_nb"),
        nbformat.v4.new_code_cell("%%scenario Gemini --no-wait -o later\na lighthouse on a cliff at night"),
        nbformat.v4.new_code_cell("import time\nlater.wait()\ntime.sleep(1)\nprint('later cell ran:', later.status)"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "panel.ipynb")
    with jupyterlab(tmp_path, "panel.ipynb") as url:
        yield url


def wait_kernel_idle(page, timeout: float = 90_000) -> None:
    page.wait_for_function("""() => { const w = window.jupyterapp?.shell.currentWidget;
        return w?.sessionContext?.session?.kernel && w.sessionContext.kernelDisplayStatus === 'idle'; }""",
                           timeout=timeout)


def run_cell(page, index: int) -> None:
    page.evaluate(f"""async () => {{
        const nb = window.jupyterapp.shell.currentWidget;
        nb.content.activeCellIndex = {index};
        await window.jupyterapp.commands.execute('notebook:run-cell');
    }}""")


def select(page, name: str):
    return page.locator(f"{PANEL} .scenario-{name} select")


def selected_text(page, name: str) -> str:
    return select(page, name).evaluate("s => s.selectedIndex >= 0 ? s.value : ''")


def wait_options(page, name: str, text: str) -> None:
    page.wait_for_function("""([name, text]) => [...document.querySelectorAll(
        `.scenario-panel .scenario-${name} select option`)].some(o => o.value === text)""",
                           arg=[name, text], timeout=60_000)


def clipped(page) -> list:
    """Labels, buttons, tiles and seed cells whose content does not fit (scrollWidth > clientWidth)."""
    return page.evaluate("""() => [...document.querySelectorAll(
        '.scenario-panel .widget-label, .scenario-panel button, .scenario-panel .widget-toggle-button, ' +
        '.scenario-tile, .scenario-tile .widget-hbox, .scenario-facts, .scenario-seed > .widget-html-content')]
        .filter(e => e.offsetParent !== null && e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.tagName} ${JSON.stringify(e.textContent)} ${e.scrollWidth}>${e.clientWidth}`)""")


def test_the_panel_in_jupyterlab(lab, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(lab)
        try:
            drive(page, tmp_path)
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            (SHOTS / "failure.html").write_text(page.evaluate(
                "() => document.querySelector('.jp-Notebook')?.outerHTML || ''"))
            raise
        finally:
            browser.close()
    assert not errors, errors


def drive(page, tmp_path) -> None:
    """Every step, in order, as a user would click them."""
    wait_kernel_idle(page)
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    run_cell(page, 1)  # the panel

    # A fresh panel: a model picked, every dropdown shows a value, no error anywhere
    page.wait_for_function("""() => { const s = document.querySelector('.scenario-panel .scenario-model select');
        return s && s.selectedIndex >= 0 && s.value.includes(' — '); }""",
                           timeout=60_000)
    page.wait_for_timeout(1200)  # past the cost preview's delay
    panel = page.locator(PANEL).first
    assert "✗" not in panel.inner_text()
    empty = page.evaluate("""() => [...document.querySelectorAll('.scenario-panel select')]
        .filter(s => s.offsetParent !== null && (s.selectedIndex < 0 || !s.options[s.selectedIndex].text))
        .map(s => s.outerHTML.slice(0, 120))""")
    assert not empty, empty
    assert selected_text(page, "aspect") == "model default"
    page.screenshot(path=str(SHOTS / "1-fresh.png"))

    # 16:9 on Gemini survives the switch to FLUX.2 dev
    page.click(f"{PANEL} .widget-toggle-buttons button:has-text('Public catalog')")
    wait_options(page, "model", "Gemini 3.1 Flash — image model")
    select(page, "model").select_option(value="Gemini 3.1 Flash — image model")
    wait_options(page, "aspect", "auto")
    select(page, "aspect").select_option(value="16:9")
    select(page, "model").select_option(value="FLUX.2 dev — image model")
    page.wait_for_function("""() => ![...document.querySelectorAll(
        '.scenario-panel .scenario-aspect select option')].some(o => o.value === 'auto')""")
    assert selected_text(page, "aspect") == "16:9"
    assert "✗" not in panel.inner_text()

    # Two jobs of two portrait images
    select(page, "aspect").select_option(value="9:16")
    select(page, "count").select_option(value="2")
    prompt = page.locator(f"{PANEL} .scenario-prompt-input textarea")
    prompt.fill("a knight resting under a giant glowing mushroom, painterly fantasy concept art")
    page.wait_for_timeout(300)
    page.evaluate("() => { document.querySelector('.scenario-panel').dataset.probe = 'same view'; }")
    page.click(f"{PANEL} .scenario-generate")
    page.wait_for_selector(f"{PANEL} .scenario-job", timeout=30_000)
    prompt.fill("a lantern-lit tower on a cliff at dusk, painterly-fantasy-concept-art-in-the-style-of-old-storybook-illustrations-soft-light")  # noqa: E501 a long word
    page.wait_for_timeout(300)
    page.click(f"{PANEL} .scenario-generate")
    page.wait_for_function("""() => [...document.querySelectorAll('.scenario-panel .scenario-tile img')]
        .filter(i => i.naturalWidth > 0).length === 4""", timeout=90_000)
    page.wait_for_function("""() => document.querySelectorAll(
        '.scenario-panel .scenario-job .progress-bar-success').length === 2""", timeout=30_000)
    assert page.locator(f"{PANEL} .scenario-job button:has-text('Cancel')").count() == 0
    assert page.locator("text=Loading widget").count() == 0
    # the static snapshot for saved notebooks follows the gallery, hidden under the live panel
    page.wait_for_function("""() => document.querySelectorAll('.scenario-gallery-snapshot img').length === 4""",
                           timeout=30_000)
    assert not page.locator(".scenario-gallery-snapshot").first.is_visible()
    # and the live view was never redrawn meanwhile (a redraw takes the focus from someone typing)
    assert page.evaluate("() => document.querySelector('.scenario-panel').dataset.probe") == "same view"

    # The grid: tiles side by side, never drawn larger than the thumbnail, each with its own seed
    tiles = page.evaluate("""() => [...document.querySelectorAll('.scenario-panel .scenario-tile')].map(t => {
        const img = t.querySelector('img'), box = t.getBoundingClientRect();
        return {x: box.x, y: box.y, w: img.clientWidth, h: img.clientHeight, nw: img.naturalWidth,
                nh: img.naturalHeight, facts: t.querySelector('.scenario-facts').textContent}; })""")
    assert len(tiles) == 4
    assert len({round(t["y"]) for t in tiles}) < 4 and len({round(t["x"]) for t in tiles}) > 1, tiles
    for t in tiles:
        assert 0 < t["w"] <= t["nw"] and 0 < t["h"] <= t["nh"] and t["nh"] > t["nw"], t
    seeds = [re.search(r"seed (\d+)", t["facts"])[1] for t in tiles]
    assert len(set(seeds)) == 4, seeds

    # Click a tile to select it, then Save: the feedback appears right next to the button
    page.locator(f"{PANEL} .scenario-tile-select").nth(1).click()
    page.wait_for_selector(f"{PANEL} .scenario-selection-note:has-text('1 selected')")
    page.click(f"{PANEL} .scenario-save")
    note = page.locator(f"{PANEL} .scenario-save-note")
    note.locator("text=Saved 1 image").wait_for(timeout=30_000)
    button_box, note_box = page.locator(f"{PANEL} .scenario-save").bounding_box(), note.bounding_box()
    assert 0 <= note_box["x"] - (button_box["x"] + button_box["width"]) < 40, (button_box, note_box)
    assert abs(note_box["y"] + note_box["height"] / 2 - button_box["y"] - button_box["height"] / 2) < 12
    assert len(list((tmp_path / "outputs" / "panel").glob("*.png"))) == 1
    assert not clipped(page), clipped(page)
    page.screenshot(path=str(SHOTS / "2-gallery.png"))
    panel.screenshot(path=str(SHOTS / "panel.png"))
    if os.environ.get("SCENARIO_NB_UPDATE_DOCS"):
        shutil.copy(SHOTS / "panel.png", ROOT / "docs" / "panel.png")

    # View: above the gallery, at most the image's real size, with its provenance
    page.locator(f"{PANEL} .scenario-tile").nth(0).locator("button:has-text('View')").click()
    viewer = page.locator(f"{PANEL} .scenario-viewer")
    viewer.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("""() => document.querySelector('.scenario-viewer img')?.naturalWidth > 0""")
    big = viewer.locator("img").evaluate(
        "i => ({w: i.clientWidth, h: i.clientHeight, nw: i.naturalWidth, nh: i.naturalHeight})")
    assert 0 < big["w"] <= big["nw"] and big["nw"] > tiles[0]["nw"], big
    assert viewer.bounding_box()["y"] < page.locator(f"{PANEL} .scenario-gallery").bounding_box()["y"]
    facts = viewer.inner_text()
    assert seeds[0] in facts and "lantern-lit tower" in facts and "FLUX.2 dev" in facts and "job_" in facts
    viewer.screenshot(path=str(SHOTS / "3-view.png"))

    # As %%scenario: the exact cell for that image, in its own tile
    second = page.locator(f"{PANEL} .scenario-tile").nth(1)
    second.locator("button:has-text('As %%scenario')").click()
    code = second.locator("pre.scenario-magic")
    code.wait_for(state="visible", timeout=30_000)
    text = code.inner_text()
    assert text.startswith("%%scenario model_bfl-flux-2-dev") and f"--seed {seeds[1]}" in text, text
    assert "--aspect 9:16" in text and "width" not in text and "height" not in text, text  # as the panel sent it
    assert not clipped(page), clipped(page)
    for width in (1280, 700):  # the cell wraps inside its box, and its box inside the screen
        page.evaluate(f"() => window.jupyterapp.shell.{'expandLeft' if width >= 1000 else 'collapseLeft'}()")
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(600)
        box = code.evaluate("""p => ({sw: p.scrollWidth, cw: p.clientWidth, right: p.getBoundingClientRect().right,
                                     edge: document.querySelector('.scenario-panel').getBoundingClientRect().right})""")
        assert box["sw"] <= box["cw"] + 1 and box["right"] <= min(width, box["edge"]) + 1, (width, box)
        second.screenshot(path=str(SHOTS / f"4-as-scenario-{width}.png"))
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.set_viewport_size({"width": 1400, "height": 1000})
    second.screenshot(path=str(SHOTS / "4-as-scenario.png"))
    page.screenshot(path=str(SHOTS / "5-full.png"), full_page=True)

    # The magics alongside: a --no-wait cell fills in while a later cell runs
    run_cell(page, 2)  # %load_ext
    run_cell(page, 3)  # %%scenario --no-wait: returns at once
    page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
        return w.sessionContext.kernelDisplayStatus === 'idle'; }""", timeout=30_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    run_cell(page, 4)
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .some(o => o.textContent.includes('later cell ran: success'))""", timeout=60_000)
    no_wait_cell = cells.nth(3)
    page.wait_for_function("""(el) => [...el.querySelectorAll('img')].some(i => i.naturalWidth > 0)""",
                           arg=no_wait_cell.element_handle(), timeout=30_000)
    no_wait_cell.screenshot(path=str(SHOTS / "no-wait-cell.png"))
    if os.environ.get("SCENARIO_NB_UPDATE_DOCS"):
        shutil.copy(SHOTS / "no-wait-cell.png", ROOT / "docs" / "magic-output.png")


def test_notebook_06_trains_and_shows_a_grid_in_jupyterlab(tmp_path):
    """The workbench as a user sees it: Run All on notebook 06, the training's progress live in its cell, then
    the comparison sheet; screenshots of both are kept in test-output/browser/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "06-train-and-evaluate.ipynb", tmp_path / "06.ipynb")
    with jupyterlab(tmp_path, "06.ipynb", SCENARIO_NB_SANDBOX_TRAIN_SECONDS="20") as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        try:
            wait_kernel_idle(page)
            page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # no await
            # Mid-training: the Training's cell shows a stage and a progress bar that moves
            training = page.locator(".jp-OutputArea-output .scenario-training").first
            training.wait_for(timeout=120_000)
            page.wait_for_function("""() => { const p = document.querySelector(
                '.jp-OutputArea-output .scenario-training progress'); return p && p.value > 0 && p.value < 100; }""",
                                   timeout=120_000)
            first = training.locator("progress").evaluate("p => p.value")
            assert training.locator("img").count() >= 6, "the strip of training images is missing"
            training.scroll_into_view_if_needed()
            training.screenshot(path=str(SHOTS / "06-training.png"))
            page.wait_for_function("""(first) => { const p = document.querySelector(
                '.jp-OutputArea-output .scenario-training progress'); return p && p.value > first; }""",
                                   arg=first, timeout=120_000)
            # The comparison sheet: one JPEG image in the grid cell (3 × 2 tiles of 176 px, over 400 px wide), filled in
            cells = page.locator(".jp-Notebook .jp-Cell")
            grid_cell = cells.filter(has_text="comparison = scenario_nb.grid").first
            page.wait_for_function("""(el) => [...el.querySelectorAll('.jp-OutputArea-output img')]
                .some(i => i.naturalWidth > 400 && i.src.startsWith('data:image/jpeg'))""",
                                   arg=grid_cell.element_handle(), timeout=180_000)
            # Run All ends with the sweep saved to disk
            page.wait_for_function("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
                .some(o => o.textContent.includes('files, first:'))""", timeout=240_000)
            wait_kernel_idle(page, timeout=60_000)
            grid_cell.scroll_into_view_if_needed()
            grid_cell.screenshot(path=str(SHOTS / "06-grid.png"))
            if os.environ.get("SCENARIO_NB_UPDATE_DOCS"):
                shutil.copy(SHOTS / "06-grid.png", ROOT / "docs" / "grid.png")
            page.screenshot(path=str(SHOTS / "06-full.png"), full_page=True)
            failures = page.evaluate("""() => [...document.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                .map(o => o.textContent).filter(t => /Traceback|Error|✗/.test(t))""")
            assert not failures, failures
        except Exception:
            page.screenshot(path=str(SHOTS / "06-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert not errors, errors
    assert len(list((tmp_path / "outputs" / "potion-sweep").glob("*"))) >= 7
