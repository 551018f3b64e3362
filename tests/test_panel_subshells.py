"""The panel in a real ipykernel 7 kernel whose widget messages arrive on subshells (as JupyterLab sends them).

A tab's subshell dies with the tab; the kernel and its widgets live on. A click from the next tab must still
reach the panel: the jobs the sandbox received are counted per click.
"""

from __future__ import annotations

import time

import pytest

from conftest import Kernel, kernel_env

pytest.importorskip("ipykernel.subshell_manager")


def control(kernel: Kernel, msg_type: str, **content) -> dict:
    msg = kernel.kc.session.msg(msg_type, content)
    kernel.kc.control_channel.send(msg)
    while True:
        reply = kernel.kc.control_channel.get_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


def send(kernel: Kernel, comm_id: str, subshell_id: str, data: dict) -> str:
    """A widget message as the browser sends it, on the tab's subshell; returns its id."""
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    msg["header"]["subshell_id"] = subshell_id
    kernel.kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def click(kernel: Kernel, comm_id: str, subshell_id: str) -> None:
    send(kernel, comm_id, subshell_id, {"method": "custom", "content": {"event": "click"}})


def pick(kernel: Kernel, comm_id: str, subshell_id: str, index: int) -> None:
    send(kernel, comm_id, subshell_id, {"method": "update", "state": {"index": index}, "buffer_paths": []})


def value(kernel: Kernel, expression: str) -> str:
    outputs = kernel.run(f"print({expression})")
    return "".join(o.get("text", "") for o in outputs).strip()


def wait_value(kernel: Kernel, expression: str, wanted: str, timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while True:
        got = value(kernel, expression)
        if got == wanted or time.time() > deadline:
            return got
        time.sleep(0.3)


def test_a_click_from_a_new_tab_reaches_a_panel_whose_first_tab_is_gone(tmp_path):
    kernel = Kernel(kernel_env(tmp_path / "home"))
    try:
        kernel.run("import scenario_nb\npanel = scenario_nb.Panel().wait_ready()\n"
                   "panel.prompt.value = 'a red fox in the snow'\nsent = lambda: len(panel.generations)")
        button = value(kernel, "panel.generate_button.comm.comm_id")
        menu = value(kernel, "panel.model_menu.comm.comm_id")
        first_tab = control(kernel, "create_subshell_request")["subshell_id"]
        for index in (1, 0):  # another model and back, picked in the first tab: the form is rebuilt there
            pick(kernel, menu, first_tab, index)
            assert wait_value(kernel, "panel.model_menu.index", str(index)) == str(index)
        send(kernel, button, first_tab, {"method": "request_state"})  # the tab draws the button
        for n in range(3):
            click(kernel, button, first_tab)
            assert wait_value(kernel, "sent()", str(n + 1)) == str(n + 1)
        control(kernel, "delete_subshell_request", subshell_id=first_tab)  # the tab is closed
        second_tab = control(kernel, "create_subshell_request")["subshell_id"]
        send(kernel, button, second_tab, {"method": "request_state"})  # the next tab draws it again
        for n in range(3, 6):
            click(kernel, button, second_tab)
            assert wait_value(kernel, "sent()", str(n + 1)) == str(n + 1), "a click was dropped"
    finally:
        kernel.km.shutdown_kernel(now=True)


def answered(kernel: Kernel, msg_id: str, timeout: float) -> bool:
    """Whether the kernel sent the widget's state (an `update`) in answer to the message `msg_id`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.time()))
        except Exception:  # noqa: BLE001 — queue.Empty: nothing more came
            return False
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "comm_msg" and \
                msg["content"]["data"].get("method") == "update":
            return True
    return False


def test_a_new_tab_is_told_the_panels_state_when_the_old_tabs_subshell_goes_meanwhile(tmp_path):
    """A tab opened on the kernel asks each widget for its state and draws nothing until every one answers.
    The kernel routes that question to the subshell the widget last answered on: the old tab's, which Lab
    deletes while the new tab opens. Queued there when it went, the question was lost and the new tab stayed
    blank for good (CI saw the panel never drawn after a close and reopen)."""
    kernel = Kernel(kernel_env(tmp_path / "home"))
    try:
        kernel.run("import scenario_nb\npanel = scenario_nb.Panel().wait_ready()")
        button = value(kernel, "panel.generate_button.comm.comm_id")
        old_tab = control(kernel, "create_subshell_request")["subshell_id"]
        first = send(kernel, button, old_tab, {"method": "request_state"})  # the old tab draws the button
        assert answered(kernel, first, timeout=30)
        busy = kernel.kc.session.msg("execute_request", {"code": "import time; time.sleep(2)", "silent": True})
        busy["header"]["subshell_id"] = old_tab  # the old tab's subshell is busy a moment as it closes
        kernel.kc.shell_channel.send(busy)
        new_tab = control(kernel, "create_subshell_request")["subshell_id"]
        asked = send(kernel, button, new_tab, {"method": "request_state"})  # the new tab asks
        time.sleep(0.5)
        control(kernel, "delete_subshell_request", subshell_id=old_tab)  # the old tab is gone
        assert answered(kernel, asked, timeout=15), "the new tab's question was lost with the old tab's subshell"
    finally:
        kernel.km.shutdown_kernel(now=True)
