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


def send(kernel: Kernel, comm_id: str, subshell_id: str, data: dict) -> None:
    """A widget message as the browser sends it, on the tab's subshell."""
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    msg["header"]["subshell_id"] = subshell_id
    kernel.kc.shell_channel.send(msg)


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
