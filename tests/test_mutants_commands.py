"""Tests written to kill the mutants mutmut planted in the `%scenario` line commands (`_commands.py`) that
tests/test_mutants_magics.py let live (the run, the figures and the equivalent mutants: tests/mutants-equivalent.md).

A user mistake is one `UsageError` line, and nothing is done; what a command does is checked by its effect (files
left or removed, the session replaced, what the sandbox counted) and by the exact line it prints.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re
import tempfile

import pytest
from PIL import Image

from scenario_nb import _commands, _session
from scenario_nb._history import JobRecord

from test_mutants_magics import error_of, magics_of, run  # the magics' own helpers: one copy


# -- %scenario sandbox ----------------------------------------------------------------------------------------------
def test_sandbox_reset_with_more_words_is_refused_and_resets_nothing(ip, env, tmp_path):
    blob = tmp_path / "home" / "sandbox" / "blobs" / "asset_kept"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"an image of the saved world")
    assert error_of(ip, "%scenario sandbox reset now") == (
        "%scenario sandbox reset takes nothing more (not 'now'); nothing was reset")
    assert blob.read_bytes() == b"an image of the saved world"
    result, out = run(ip, "%scenario sandbox reset")
    assert result.error_in_exec is None and not blob.exists()
    assert out.stdout.startswith(f"sandbox world of {tmp_path / 'home'}: ")


# -- --save DIR -------------------------------------------------------------------------------------------------------
def test_the_save_folder_is_tried_where_the_images_go_not_in_the_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp-folder"))  # the system's: unusable
    _commands.check_save_folder(str(tmp_path / "saved"))
    assert (tmp_path / "saved").is_dir() and list((tmp_path / "saved").iterdir()) == []


def test_sandbox_reset_names_every_word_it_does_not_take(ip, env, tmp_path):
    assert error_of(ip, "%scenario sandbox reset now please") == (
        "%scenario sandbox reset takes nothing more (not 'now please'); nothing was reset")


# -- each subcommand's own name in its parser's refusals ----------------------------------------------------------
@pytest.mark.parametrize("line", ["models --bogus", "model Gemini --bogus", "use Gemini --bogus", "history --bogus",
                                  "job job_1 --bogus", "cancel job_1 --bogus", "asset asset_1 --bogus",
                                  "workflow wf_1 --bogus"])
def test_a_subcommand_refuses_an_option_it_does_not_take_by_its_own_name(ip, env, line):
    before = env.stats()["requests"]
    assert error_of(ip, f"%scenario {line}") == f"%scenario {line.split()[0]}: unrecognized arguments: --bogus"
    assert env.stats()["requests"] == before  # refused before anything was asked


# -- %scenario workflows --------------------------------------------------------------------------------------------
def test_workflows_lists_each_status(ip, env):
    flows = magics_of(ip).client.workflows()
    result, out = run(ip, "%scenario workflows")
    rows = out.outputs[0].data["text/plain"].splitlines()[1:]
    assert sorted(row.split()[-1] for row in rows) == sorted(f["status"] for f in flows)
    assert {"ready", "draft"} <= {f["status"] for f in flows}


# -- %scenario asset ------------------------------------------------------------------------------------------------
def test_an_asset_is_shown_with_its_metadata(ip, env):
    run(ip, "%%scenario Gemini -o g\nx")
    g = ip.user_ns["g"].wait(30)
    result, out = run(ip, f"%scenario asset {g.asset_ids[0]}")
    shown = out.outputs[0]
    mime = next(key for key in shown.data if key.startswith("image/"))
    with Image.open(io.BytesIO(base64.b64decode(shown.data[mime]))) as image:
        size = image.size
    assert shown.metadata[mime] == {"width": size[0], "height": size[1]}
    assert shown.metadata["scenario_nb"]["asset_id"] == g.asset_ids[0]


# -- %scenario model -------------------------------------------------------------------------------------------------
def test_model_shows_each_inputs_label_or_an_empty_cell(ip, env, monkeypatch):
    client = magics_of(ip).client
    gemini = client.find_model("Gemini")  # every sandbox input has a label: one without, as a model may have
    model = dataclasses.replace(gemini, inputs=[dataclasses.replace(i, label="") if i.name == "seed" else i
                                                for i in gemini.inputs])
    monkeypatch.setattr(client, "find_model", lambda name: model)
    result, out = run(ip, "%scenario model Gemini")
    rows = re.findall(r"<tr>(.*?)</tr>", out.outputs[0].data["text/html"])[1:]
    cells = [[html.unescape(c) for c in re.findall(r"<td [^>]*>(.*?)</td>", row)] for row in rows]
    assert ["seed", ""] in [row[:2] for row in cells] and ["prompt", "Prompt"] in [row[:2] for row in cells]
    assert cells == [[i.name, i.label or "", i.describe()] for i in model.inputs]


# -- %scenario workflow ----------------------------------------------------------------------------------------------
SHEET = "workflow_CharacterSheet5tU6vW7xY8z"


def test_workflow_runs_the_workflow_it_names_with_its_inputs_typed(ip, env):
    before = env.stats()["jobs_created"]
    result, out = run(ip, f'%scenario workflow {SHEET} --set "prompt=a knight" --set numOutputs=3 --no-wait -o w')
    assert result.error_in_exec is None, result.error_in_exec
    handle = ip.user_ns["w"].wait(30)
    assert handle.ok and len(handle.asset_ids) == 3  # numOutputs typed by the workflow's own inputs
    assert env.stats()["jobs_created"] == before + 1


# -- %scenario job ---------------------------------------------------------------------------------------------------
def test_a_job_a_schema_1_history_wrote_on_this_url_is_asked_of_this_server(ip, env):
    client = magics_of(ip).client
    client.history.record(JobRecord("req_old", job_id="job_legacy", backend_id=env.url, backend_url=env.url,
                                    status="in-progress"))
    assert error_of(ip, "%scenario job job_legacy") == (f"job job_legacy not found on {env.url}; check the id with "
                                                        "%scenario history")
    assert [r["path"] for r in env.state.requests if r["path"].endswith("/jobs/job_legacy")]


def test_a_finished_job_of_another_backend_is_shown_from_the_store(ip, env, monkeypatch):
    magics = magics_of(ip)
    run(ip, "%%scenario Gemini -o g\nx")
    g = ip.user_ns["g"].wait(30)
    row = magics.client.history.get(g.job_id)
    magics.client.history.record(dataclasses.replace(row, backend_id="elsewhere",
                                                     backend_url="https://other.example/v1"))
    _session.reset()  # a new session: nothing of that job lives in this kernel any more
    client = magics.client
    shown: list = []
    monkeypatch.setattr(_commands, "show_generations", lambda handles, **kw: shown.append(handles))
    before = len(env.state.requests)
    result, out = run(ip, f"%scenario job {g.job_id}")
    assert result.error_in_exec is None, result.error_in_exec
    assert [(h.job_id, h.ok) for h in shown[0]] == [(g.job_id, True)] and client is magics.client
    assert len(env.state.requests) == before  # shown from the store: the other backend is not asked
