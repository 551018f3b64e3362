"""Real kernels: outputs as users get them, `--no-wait` in place, and recovery after a killed kernel."""

from __future__ import annotations

import re
import time

import nbformat
from nbclient import NotebookClient

from conftest import Kernel, RemoteSandbox, kernel_env, kernel_manager, spawn_sandbox, text_of
from scenario_nb._history import History

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def run_notebook(cells: list, env: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, km=kernel_manager(), timeout=120, store_widget_state=True)
    client.execute(env=env)
    return nb


def test_outputs_are_bundles_with_image_text_and_provenance(tmp_path, sandbox_process):
    nb = run_notebook(["%load_ext scenario_nb",
                       "%%scenario Gemini -n 2 --seed 9 -o g\na golden key, game icon"],
                      kernel_env(tmp_path, sandbox_process))
    outputs = nb.cells[1].outputs
    assert not [o for o in outputs if o.output_type == "error"]
    final = [o for o in outputs if any(k.startswith("image/") for k in o.get("data", {}))]
    assert len(final) == 1, "one image bundle per generation"
    out = final[0]
    meta = out.metadata["scenario_nb"]
    assert meta["prompt"] == "a golden key, game icon" and meta["seed"] == 9 and meta["job_id"].startswith("job_")
    assert meta["job_id"] in out.data["text/plain"] and len(meta["asset_ids"]) == 2 and meta["cost"] > 0


def test_no_wait_output_completes_in_its_own_cell_after_later_cells(tmp_path, sandbox_process):
    nb = run_notebook(["%load_ext scenario_nb",
                       "%%scenario Gemini --no-wait -o later\na lighthouse at night",
                       "print('the kernel is free:', later.status)",
                       "later.wait(); import time; time.sleep(1.0); print(later.status)"],
                      kernel_env(tmp_path, sandbox_process))
    assert "the kernel is free" in nb.cells[2].outputs[0].text and "success" not in nb.cells[2].outputs[0].text
    cell = nb.cells[1]
    mimes = {k for o in cell.outputs for k in o.get("data", {})}
    assert any(m.startswith("image/") for m in mimes), "the display was not updated in place"
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    live = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any("success" in v for v in live), "the live widget never heard the job ended"
    assert not any("data:image/" in v for v in live), "the image saved twice: in the output and the widget state"


def test_a_no_wait_output_that_ends_between_cells_reaches_a_tool_that_keeps_only_the_running_cells(
        tmp_path, sandbox_process):
    """nbclient (papermill, nbconvert --execute) keeps only the messages whose parent is the running cell. A
    --no-wait job that ends while no cell runs has its final output sent under the cell that ran last, which such
    a tool has finished with: the next cell must carry it again (notebook 03 saved its outputs at "queued")."""
    kernel = Kernel(kernel_env(tmp_path, sandbox_process))  # jobs of 1 s: the cell has long ended
    try:
        kernel.run("%load_ext scenario_nb")
        no_wait = kernel.kc.execute("%%scenario Gemini --no-wait -o later\na lighthouse at night")
        display_id, idle, ended_between_cells = None, False, False
        deadline = time.time() + 60
        while not ended_between_cells and time.time() < deadline:  # the kernel idles: no cell is sent
            msg = kernel.kc.get_iopub_msg(timeout=deadline - time.time())
            if msg["parent_header"].get("msg_id") != no_wait:
                continue
            if msg["msg_type"] == "display_data" and "transient" in msg["content"]:
                display_id = msg["content"]["transient"]["display_id"]
            idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
            ended_between_cells = idle and msg["msg_type"] == "update_display_data" and _has_image(msg)
        assert display_id and ended_between_cells, "the job never ended while the kernel idled"

        next_cell = kernel.kc.execute("pass")
        carried, widget_values = [], []
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") != next_cell:
                continue
            if msg["msg_type"] == "update_display_data" and _has_image(msg):
                carried.append(msg["content"]["transient"]["display_id"])
            if msg["msg_type"] == "comm_msg":
                widget_values.append(msg["content"]["data"].get("state", {}).get("value", ""))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert carried == [display_id], "the next cell did not carry the final image"
        assert any("success" in v for v in widget_values), "the next cell did not carry the widget's last state"
        again = kernel.kc.execute("pass")  # once only
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == again:
                assert msg["msg_type"] != "update_display_data", "a final output was carried twice"
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
    finally:
        kernel.kill()


def _has_image(msg: dict) -> bool:
    return any(k.startswith("image/") for k in msg["content"].get("data", {}))


def test_killed_kernel_with_ten_jobs_in_flight_loses_nothing(tmp_path, sandbox_process):
    env = kernel_env(tmp_path, sandbox_process)
    first = Kernel(env)
    prompts = "\n".join(f"crate variant {i}" for i in range(10))
    first.run("%load_ext scenario_nb")
    first.run(f"%%scenario Gemini --each --no-wait -o batch\n{prompts}")
    ids = re.findall(r"job_\w+", text_of(first.run("print([g.job_id for g in batch], [g.done for g in batch])")))
    assert len(set(ids)) == 10
    first.kill()  # mid-job: nothing was downloaded yet

    second = Kernel(env)
    try:
        second.run("%load_ext scenario_nb")
        history = text_of(second.run("%scenario history 20"))
        assert all(job_id in history for job_id in ids)
        for job_id in ids:
            outputs = second.run(f"%scenario job {job_id}")
            assert any(k.startswith("image/") for o in outputs for k in o.get("data", {})), job_id
        again = text_of(second.run("%scenario history 20"))
        assert again.count("success") >= 10
    finally:
        second.kill()


def test_issue_24_case_11_a_restarted_sandbox_loses_no_paid_job_from_the_history(tmp_path):
    """The stand-alone sandbox restarted with its default seed (a second benchmark run, say) must not hand out a
    job id again: with one home, a kernel on each run pays for one job, and both are in the history, followed to
    the end, with nothing logged about a job "not in the history" (before, every job of the second run was)."""
    home, made = tmp_path / "home", []
    for _restart in range(2):
        with spawn_sandbox(extra_args=("--seed", "0")) as server:
            kernel = Kernel(kernel_env(home, server, job_seconds="0.2"))
            try:
                kernel.run("%load_ext scenario_nb")
                said = text_of(kernel.run("%%scenario Gemini --seed 1 -o g\nthe same first request"))
                said += text_of(kernel.run("print('JOB', g.job_id, g.status)"))
            finally:
                kernel.kill()
            assert RemoteSandbox(server["url"], server["key"], server["secret"]).stats()["jobs_created"] == 1
        assert "not in the history" not in said, said
        job = re.search(r"JOB (\S+) (\S+)", said)
        assert job and job[2] == "success", said
        made.append(job[1])
    assert made[0] != made[1], "a restarted sandbox handed out a job id again"
    rows = {r.job_id: r for r in History(home / "history.sqlite").recent()}
    assert set(made) <= set(rows), "a paid job fell out of the history"
    assert all(rows[j].status == "success" and rows[j].files for j in made)
