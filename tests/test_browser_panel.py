"""The panel in JupyterLab in Chromium: every click acts, on every screen.

Clicks are counted by effect (the jobs the history recorded from the sandbox's answers) whether the panel is
shown once, shown again, reopened in a new tab, after a page reload or closed and opened again in Lab. The
layout is measured against the viewport at 1280 and 700 px: nothing clipped, nothing past the right edge.
Screenshots: test-output/browser/panel/.
"""

from __future__ import annotations

import base64
import re

import nbformat
import pytest

from conftest import ROOT
from test_browser import CHROMIUM, CHROMIUM_ARGS, PANEL, clipped, jupyterlab, run_cell, sync_playwright, \
    wait_kernel_idle, wait_options

pytestmark = pytest.mark.browser
SHOTS = ROOT / "test-output" / "browser" / "panel"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
COUNT_CELL = 2


@pytest.fixture
def lab(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import scenario_nb\n\npanel = scenario_nb.Panel()\npanel"),
        nbformat.v4.new_code_cell("panel  # shown again"),
        nbformat.v4.new_code_cell("h = panel.client.history\n"
                                  "print('jobs made:', h.count(), '| last prompt:', h.recent(1)[0].prompt if h.count() "
                                  "else '', '|')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "clicks.ipynb")
    with jupyterlab(tmp_path, "clicks.ipynb", SCENARIO_NB_SANDBOX_JOB_SECONDS="120") as url:
        yield url


def ready(page) -> None:
    try:
        page.wait_for_function("""() => { const s = document.querySelector('.scenario-panel .scenario-model select');
            return s && s.selectedIndex >= 0 && s.value.includes(' — '); }""", timeout=60_000)
    except Exception as exc:  # say what the page showed instead
        seen = page.evaluate("""() => ({panels: document.querySelectorAll('.scenario-panel').length,
            widget_errors: [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText)
                .filter(t => /error|not found/i.test(t)).map(t => t.slice(0, 200)),
            dialog: document.querySelector('.jp-Dialog')?.innerText || null,
            notebook: window.jupyterapp.shell.currentWidget?.context?.path || null,
            kernel: window.jupyterapp.shell.currentWidget?.sessionContext?.kernelDisplayStatus || null})""")
        raise AssertionError(f"the panel never became ready; the page showed {seen}") from exc


def jobs_made(page, last_prompt: list = None) -> int:
    """How many jobs the history holds (and, into `last_prompt`, the prompt the newest was sent with)."""
    run_cell(page, COUNT_CELL)
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .some(o => /jobs made: \\d+/.test(o.textContent))""", timeout=30_000)
    page.wait_for_timeout(300)
    text = page.locator(".jp-Cell").nth(COUNT_CELL).locator(".jp-OutputArea-output").inner_text()
    if last_prompt is not None:
        last_prompt.append(re.findall(r"\| last prompt: (.*) \|", text)[-1])
    return int(re.findall(r"jobs made: (\d+)", text)[-1])


def click_generate(page, view: int, times: int, prompt: str = "a lighthouse on a cliff at night") -> None:
    panel = page.locator(PANEL).nth(view)
    panel.locator(".scenario-prompt-input textarea").fill(prompt)
    page.wait_for_timeout(300)
    for _ in range(times):
        panel.locator(".scenario-generate button, button.scenario-generate").first.click()
        page.wait_for_timeout(700)


def overflowing(page) -> list:
    """Visible panel parts whose box passes the viewport's right edge or the panel's own."""
    return page.evaluate("""() => {
        const panel = document.querySelector('.scenario-panel').getBoundingClientRect();
        const edge = Math.min(window.innerWidth, panel.right) + 1;
        return [...document.querySelectorAll('.scenario-panel *')]
            .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0)
            .filter(e => e.getBoundingClientRect().right > edge)
            .map(e => `${e.tagName}.${[...e.classList].join('.')} ${JSON.stringify(e.textContent.slice(0, 30))} `
                      + `right ${Math.round(e.getBoundingClientRect().right)} > ${Math.round(edge)}`); }""")


def measure(page, width: int) -> list:
    """At 1280 px with the file browser open (as a newcomer has it), below 1000 px with it closed."""
    page.evaluate(f"() => window.jupyterapp.shell.{'expandLeft' if width >= 1000 else 'collapseLeft'}()")
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(800)
    page.locator(PANEL).first.screenshot(path=str(SHOTS / f"panel-{width}.png"))
    return overflowing(page) + clipped(page)


def test_every_click_acts_and_nothing_is_clipped_at_1280_or_700_px(lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {SHOTS}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(lab)
        try:
            wait_kernel_idle(page)
            run_cell(page, 0)
            ready(page)
            click_generate(page, 0, 3)  # shown once
            page.wait_for_function("() => document.querySelectorAll('.scenario-panel .scenario-job').length >= 3",
                                   timeout=30_000)
            assert jobs_made(page) == 3
            problems = {width: measure(page, width) for width in (1280, 700)}
            assert not any(problems.values()), problems
            page.set_viewport_size({"width": 1280, "height": 900})

            run_cell(page, 1)  # shown again: the second view acts too
            page.wait_for_function("() => document.querySelectorAll('.scenario-panel').length === 2")
            click_generate(page, 1, 2)
            assert jobs_made(page) == 5
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1000)

            page.reload()  # after a page reload, the same kernel
            wait_kernel_idle(page)
            ready(page)
            click_generate(page, 0, 2)
            assert jobs_made(page) == 7
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1000)

            # The tab's subshells deleted, as JupyterLab means to when its comms go (ipykernel 7 subshells; Lab's
            # own cleanup rarely reaches the kernel). A widget the kernel last answered on one of them (the prompt,
            # echoing each edit) has its next tab's messages routed there: without the guard they are answered
            # UnknownSubshellError and dropped, and Generate silently sends the old prompt (fails so, checked).
            deleted = page.evaluate("""async () => {
                const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
                const listed = (await kernel.requestListSubshell({}).done).content.subshell_id;
                for (const id of listed) { await kernel.requestDeleteSubshell({subshell_id: id}).done; }
                return listed.length; }""")
            assert deleted >= 1, "the tab used no subshell: nothing here tests the guard"
            page.close()  # the tab is gone; a new one opens the notebook on the kernel that outlived it
            page = context.new_page()
            page.goto(lab)
            wait_kernel_idle(page)
            ready(page)
            click_generate(page, 0, 2, prompt="a lighthouse at dawn, from a new tab")  # each edit reaches it too
            sent: list = []
            assert jobs_made(page, sent) == 9 and sent == ["a lighthouse at dawn, from a new tab"], sent
            page.screenshot(path=str(SHOTS / "new-tab.png"))
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1000)

            # closed in Lab (its kernel connection and subshells go; the kernel stays), then opened again
            # (opened only once the old one is disposed, so the reopened tab is a new one, not the closing one)
            page.evaluate("""async () => { const old = window.jupyterapp.shell.currentWidget;
                await window.jupyterapp.commands.execute('application:close');
                for (let i = 0; !old.isDisposed; i++) {
                    if (i > 300) {
                        const dialog = document.querySelector('.jp-Dialog')?.innerText || 'no dialog';
                        throw new Error('the notebook did not close in 30 s: ' + dialog); }
                    await new Promise(r => setTimeout(r, 100)); }
                await new Promise(r => setTimeout(r, 1000));
                window.closedNotebook = old;
                await window.jupyterapp.commands.execute('docmanager:open', {path: 'clicks.ipynb'}); }""")
            page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget;"
                                   "  return w && w !== window.closedNotebook && w.context?.path === 'clicks.ipynb'; }",
                                   timeout=30_000)
            wait_kernel_idle(page)
            ready(page)
            click_generate(page, 0, 2)
            assert jobs_made(page) == 11

            # a click that cannot send says why: once, in the form's words, next to the input; fixed, it goes
            panel = page.locator(PANEL).first
            panel.locator(".widget-toggle-buttons button:has-text('Public catalog')").click()
            wait_options(page, "model", "Flux Kontext — image model")
            panel.locator(".scenario-model select").select_option(value="Flux Kontext — image model")
            page.wait_for_timeout(800)
            click_generate(page, 0, 1)
            errors = panel.locator("span[style*='#b00020']:visible")
            errors.first.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)  # past the estimate, which checks the form too
            assert errors.count() == 1, errors.all_inner_texts()
            words = errors.first.inner_text()
            assert "reference images" in words.lower() and "referenceImages" not in words, words
            row = page.locator(f"{PANEL} .widget-hbox:has(.widget-upload):has(.scenario-input-note)").first
            assert row.locator("span[style*='#b00020']").count() == 1, "not next to the input"
            panel.screenshot(path=str(SHOTS / "input-error.png"))
            (SHOTS / "ref.png").write_bytes(PNG)
            with page.expect_file_chooser() as chooser:
                row.locator("button.widget-upload, .widget-upload").first.click()
            chooser.value.set_files(str(SHOTS / "ref.png"))
            page.wait_for_function("""() => !document.querySelector(".scenario-panel span[style*='#b00020']")""",
                                   timeout=30_000)
            assert jobs_made(page) == 11
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
