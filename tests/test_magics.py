"""`%%scenario` / `%scenario` in a real IPython shell against the sandbox over HTTP."""

from __future__ import annotations

import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image

from scenario_nb import Generation
from scenario_nb._display import DEFAULT_THUMBNAIL_SIZE
from scenario_nb._history import History


def run(ip, cell):
    with capture_output() as out:
        result = ip.run_cell(cell)
    return result, out


def env_history(env):
    """The history file of the session `env` pointed at."""
    import scenario_nb
    return scenario_nb.client().history.path


def images_in(out) -> int:
    return sum(any(k.startswith("image/") for k in o.data) for o in out.outputs)


def test_load_says_which_backend_and_status_hides_secrets(ip, env):
    result, out = run(ip, "%scenario status")
    text = out.stdout
    assert "backend: custom" in text and env.url in text and "credentials in the environment: set" in text
    assert "key: sk_S…c7" in text and "no SCENARIO_API_KEY" not in text
    assert env.api_secret not in text and env.api_key not in text


def test_cell_generates_images_with_bundle_and_history(ip, env):
    ip.run_line_magic("scenario", "use Gemini")
    result, out = run(ip, "%%scenario -a 16:9 -n 2 -o gen --seed 5\na red potion, game icon")
    assert result.error_in_exec is None
    gen = ip.user_ns["gen"]
    assert isinstance(gen, Generation) and gen.ok and len(gen.images) == 2
    final = [o for o in out.outputs if any(k.startswith("image/") for k in o.data)]
    assert final and final[-1].metadata["scenario_nb"]["job_id"] == gen.job_id
    assert gen.job_id in final[-1].data["text/plain"]
    w, h = gen.images[0].size
    assert abs(w / h - 16 / 9) < 0.05
    result, out = run(ip, "%scenario history 5")  # history lists it
    assert gen.job_id in out.outputs[0].data["text/plain"]


def test_rerun_makes_no_new_job_and_force_does(ip, env):
    ip.run_line_magic("scenario", "use Gemini")
    cell = "%%scenario -o first --seed 3\na wooden crate"
    run(ip, cell)
    created = env.stats()["jobs_created"]
    result, out = run(ip, cell.replace("first", "second"))
    assert env.stats()["jobs_created"] == created
    assert "Shown from history" in out.stdout and "--force" in out.stdout
    assert ip.user_ns["second"].job_id == ip.user_ns["first"].job_id and images_in(out)
    run(ip, "%%scenario -o third --seed 3 --force\na wooden crate")
    assert env.stats()["jobs_created"] == created + 1


def test_prompt_variables_and_braces(ip, env):
    ip.user_ns["creature"] = "dragon"
    run(ip, "%%scenario Gemini -o g\na {creature} with {unknown} and {{braces}}")
    assert ip.user_ns["g"].prompt == "a dragon with {unknown} and {braces}"


def test_each_puts_all_in_flight(ip, env):
    result, out = run(ip, "%%scenario Gemini --each -o batch\nan apple\n\na pear\na plum")
    batch = ip.user_ns["batch"]
    assert [g.prompt for g in batch] == ["an apple", "a pear", "a plum"] and all(g.ok for g in batch)
    starts = sorted(g.submitted_at for g in batch)
    ends = sorted(g.finished_at for g in batch)
    assert starts[-1] < ends[0], "the jobs ran one after another"


def test_no_wait_returns_at_once_and_binds(ip, env):
    result, out = run(ip, "%%scenario Gemini --no-wait -o later\na lantern")
    later = ip.user_ns["later"]
    assert result.error_in_exec is None and not later.done
    assert later.wait(timeout=30).ok


def test_out_is_bound_also_on_failure(ip, env):
    env.inject("job_failure", error="content policy violation", hint="Rephrase the prompt")
    result, out = run(ip, "%%scenario Gemini -o failed\nsomething forbidden")
    failed = ip.user_ns["failed"]
    assert failed.done and not failed.ok and failed.job_id
    text = str(out.outputs[-1].data["text/plain"])
    assert "content policy violation" in text and "Rephrase the prompt" in text and "Traceback" not in text


def test_dry_run_spends_nothing(ip, env):
    created = env.stats()["jobs_created"]
    result, out = run(ip, "%%scenario Gemini --dry-run -n 3\na castle")
    assert env.stats()["jobs_created"] == created
    assert "CU" in str(out.outputs[0].data)


def test_max_cost_refuses_without_anyone_to_ask(ip, env):
    ip.run_cell("%config ScenarioMagics.max_cost = 1")
    created = env.stats()["jobs_created"]
    result, out = run(ip, "%%scenario Gemini\na castle")
    assert isinstance(result.error_in_exec, UsageError) and "max_cost" in str(result.error_in_exec)
    assert env.stats()["jobs_created"] == created
    ip.run_cell("%config ScenarioMagics.max_cost = None")


def test_lora_runs_through_a_base_model(ip, env):
    result, out = run(ip, "%%scenario Hero -a 16:9 -o hero\nthe hero at dawn")
    assert "Hero Knight is your LoRA: it runs through FLUX.2 dev" in out.stdout and ip.user_ns["hero"].ok
    result, out = run(ip, "%%scenario Hero -a 16:9 -o again\nthe hero at dusk")
    assert "runs through" not in out.stdout  # once per session per model
    result, out = run(ip, "%%scenario Hero -a 16:9 -o hero\nthe hero at dawn")
    assert "runs through" not in out.stdout and "Shown from history" in out.stdout


def test_save_flag_writes_pngs_and_sidecar(ip, env, tmp_path):
    run(ip, f"%%scenario Gemini --save {tmp_path / 'out'} -o s\na shield")
    files = sorted(p.suffix for p in (tmp_path / "out").iterdir())
    assert files == [".json", ".png"]


@pytest.mark.parametrize("cell, message", [
    ("%%scenario Nope\nx", "no model named 'Nope'"),
    ("%%scenario Gemini\n   ", "empty prompt"),
    ("%%scenario Gemini -a 5:1\nx", "aspect 5:1 is not allowed"),
    ("%%scenario Gemini -n 0\nx", "at least 1"),
    ("%%scenario Gemini -n 99\nx", "at most 4"),
    ("%%scenario Gemini --set bogus=1\nx", "no input 'bogus'"),
    ("%%scenario Gemini --set numOutputs=many\nx", "expected a number"),
    ("%%scenario Gemini --set resolution=8K\nx", "allowed"),
    ("%%scenario Gemini --bogus\nx", "unrecognized arguments"),
    ("%scenario frobnicate", "unknown %scenario command"),
    ("%scenario job job_doesNotExist1234567890ab", "not found"),
    ("%scenario model", "no model given; e.g. %scenario model FLUX.2 dev"),
])
def test_user_mistakes_are_one_line(ip, env, cell, message):
    created = env.stats()["jobs_created"]
    result, out = run(ip, cell)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert message in str(result.error_in_exec)
    assert "\n" not in str(result.error_in_exec).strip() and "Traceback" not in out.stdout + out.stderr
    assert env.stats()["jobs_created"] == created


def test_no_model_chosen_says_how(ip, env):
    result, out = run(ip, "%%scenario\na thing")
    assert "no model given" in str(result.error_in_exec) and "%scenario use" in str(result.error_in_exec)


def test_settings_are_listed_and_validated(ip, env, caplog):
    with capture_output() as out:
        ip.run_cell("%config ScenarioMagics")
    for name in ("default_model", "default_aspect", "thumbnail_size", "wait", "reuse", "max_cost", "history_path",
                 "poll_interval_floor", "job_timeout"):
        assert f"ScenarioMagics.{name}" in out.stdout
    run(ip, "%config ScenarioMagics.thumbnail_size = 5")
    magics = next(c for c in ip.configurables if type(c).__name__ == "ScenarioMagics")
    assert magics.thumbnail_size == DEFAULT_THUMBNAIL_SIZE and "between 64 and 4096" in caplog.text
    run(ip, "%config ScenarioMagics.max_cost = -3")
    assert magics.max_cost is None and "0 or more" in caplog.text
    run(ip, "%scenario status")
    ip.run_cell("%config ScenarioMagics.poll_interval_floor = 0.5")
    from scenario_nb._session import get_session
    assert get_session().client.polling["floor"] == 0.5


def test_a_refused_setting_does_not_break_the_next_load(ip, env):
    """IPython keeps a refused `%config` value in the shell's config: reloading drops it (one line) and keeps the
    valid ones, instead of failing with a TraitError."""
    run(ip, "%config ScenarioMagics.thumbnail_size = 5")
    ip.run_cell("%config ScenarioMagics.poll_interval_floor = 0.5")
    import scenario_nb
    scenario_nb.unload_ipython_extension(ip)
    try:
        with capture_output() as out:
            result = ip.run_cell("%load_ext scenario_nb")
    finally:
        ip.extension_manager.loaded.discard("scenario_nb")  # the fixture loads it directly, as before
    assert result.success, result.error_in_exec
    magics = [c for c in ip.configurables if type(c).__name__ == "ScenarioMagics"]
    assert len(magics) == 1 and magics[0].thumbnail_size == DEFAULT_THUMBNAIL_SIZE
    assert magics[0].poll_interval_floor == 0.5
    assert "ignored ScenarioMagics.thumbnail_size" in out.stdout and "Traceback" not in out.stdout + out.stderr
    assert "thumbnail_size" not in ip.config.ScenarioMagics


def test_subcommands(ip, env, tmp_path):
    result, out = run(ip, "%scenario models")
    assert "Hero Knight" in out.outputs[0].data["text/plain"]
    result, out = run(ip, "%scenario models --public gemini")
    assert "Gemini" in out.outputs[0].data["text/plain"]
    result, out = run(ip, "%scenario model Hero")
    assert "Runs through" in out.stdout
    run(ip, "%%scenario Gemini -o g\na key")
    gen = ip.user_ns["g"]
    result, out = run(ip, f"%scenario asset {gen.asset_ids[0]}")
    assert "image/jpeg" in out.outputs[0].data  # a light thumbnail, as everywhere else
    result, out = run(ip, f"%scenario job {gen.job_id}")
    assert images_in(out)
    run(ip, "%%scenario Gemini --no-wait -o a\nflying ship")
    result, out = run(ip, "%scenario wait")
    assert "✓" in out.stdout and ip.user_ns["a"].ok
    run(ip, "%%scenario Gemini --no-wait -o b\nslow ship")
    result, out = run(ip, "%scenario cancel all")
    assert "1 refused" in out.stdout and "will finish and be charged" in out.stdout
    assert ip.user_ns["b"].wait(timeout=30).ok  # refused, followed on, delivered
    result, out = run(ip, "%scenario workflows")
    assert "Character sheet" in out.outputs[0].data["text/plain"]
    result, out = run(ip, "%scenario help")
    assert "%scenario history" in out.stdout


def test_models_is_short_your_models_then_how_to_find_the_rest(ip, env):
    """Issue 25 item 6: `%scenario models` shows your models and the catalog in one line (not ~550 rows typed
    "custom"); --search and --type find the rest, a short list each, with real kinds."""
    import json

    import scenario_nb
    catalog = scenario_nb.client().public_models()
    own = scenario_nb.client().models()

    def shown(out) -> str:
        return out.stdout + "".join(json.dumps(o.data) for o in out.outputs)

    result, out = run(ip, "%scenario models")
    table = out.outputs[0].data["text/plain"]
    assert all(m.id in table for m in own) and "LoRA (flux.2-dev-lora)" in table and "custom" not in table
    assert not any(m.id in shown(out) for m in catalog) and len(shown(out)) < 8000
    assert f"Public catalog: {len(catalog)} models" in out.stdout and "--search" in out.stdout
    result, out = run(ip, "%scenario models --search seedance")
    assert "Seedance 2.0" in out.outputs[0].data["text/plain"] and "video model" in out.outputs[0].data["text/plain"]
    result, out = run(ip, "%scenario models --type video")
    rows = out.outputs[0].data["text/plain"].splitlines()[1:]
    videos = [m for m in catalog if "txt2video" in m.capabilities]
    assert len(rows) == 25 and all("video model" in r for r in rows) and f"and {len(videos) - 25} more" in out.stdout
    result, out = run(ip, "%scenario models --type text")
    assert "Scenario LLM" in out.outputs[0].data["text/plain"] and "text model" in out.outputs[0].data["text/plain"]
    result, out = run(ip, "%scenario models --type nonsense")
    assert "not a kind of model" in str(result.error_in_exec)


def test_history_path_setting_moves_the_history(ip, env, tmp_path):
    ip.run_cell(f"%config ScenarioMagics.history_path = '{tmp_path / 'other.sqlite'}'")
    run(ip, "%%scenario Gemini -o g\na moved history")
    assert History(tmp_path / "other.sqlite").get(ip.user_ns["g"].job_id) is not None
    ip.run_cell("%config ScenarioMagics.history_path = ''")


WRITER = """
import sys
from scenario_nb._history import History, JobRecord
h = History(sys.argv[1])
for i in range(200):
    h.record(JobRecord(f"job_{sys.argv[2]}_{i}", status="success", created_at=i))
"""


def test_two_processes_writing_history_lose_no_row(tmp_path):
    path = tmp_path / "h.sqlite"
    History(path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag]) for tag in "xy"]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert History(path).count() == 400


def test_quoted_model_names_work_everywhere(ip, env):
    result, out = run(ip, '%%scenario "Hero Knight" -a 16:9 -o q\nthe hero, quoted')
    assert result.error_in_exec is None and ip.user_ns["q"].model_name == "Hero Knight"
    result, out = run(ip, "%%scenario 'Hero Knight' -a 16:9 -o q2\nthe hero, single quotes")
    assert result.error_in_exec is None and ip.user_ns["q2"].ok
    for line in ('model "Hero Knight"', 'use "Hero Knight"', 'models "Hero Knight"'):
        result, out = run(ip, f"%scenario {line}")
        assert result.error_in_exec is None, (line, result.error_in_exec)
    assert "Hero Knight (model_" in out.stdout or "Hero Knight" in str(out.outputs[0].data)
    result, out = run(ip, '%%scenario "Hero Knight -o x\nunbalanced')
    assert "quotes" in str(result.error_in_exec)


def test_rest_of_line_model_names_work_unquoted(ip, env):
    """Issue 25 item 7: `%scenario use Hero Knight`, as the quickstart advises, works as written. "Pixel" alone
    matches two models (Pixel Forest Style, Pixel Knights): only the whole line names one."""
    from scenario_nb._session import get_session
    forest = "model_PixeLForestStyLe2qR3sT4uV5w"
    result, out = run(ip, "%scenario use Pixel Forest Style")
    assert result.error_in_exec is None, result.error_in_exec
    assert get_session().current_model == forest and f"Pixel Forest Style ({forest})" in out.stdout
    result, out = run(ip, "%scenario model Pixel Forest Style")
    assert result.error_in_exec is None and out.stdout.startswith(f"Pixel Forest Style ({forest})")
    result, out = run(ip, "%scenario training Pixel Forest Style --no-wait")
    assert "'Pixel Forest Style'" in str(result.error_in_exec) or result.error_in_exec is None
    result, out = run(ip, "%%scenario Pixel Forest Style -a 16:9 -o unquoted\nthe forest at dawn")
    assert result.error_in_exec is None and ip.user_ns["unquoted"].model_id == forest
    assert env.jobs[ip.user_ns["unquoted"].job_id]["body"]["modelId"] == forest  # what the sandbox ran
    panel = ip.run_line_magic("scenario", "panel Pixel Forest Style")
    assert panel.wait_ready().model_menu.value == forest


def test_unload_really_unloads_and_load_again_follows_on(ip, env):
    run(ip, "%%scenario Gemini --no-wait -o pending\na job across a reload")
    pending = ip.user_ns["pending"]
    ip.run_line_magic("load_ext", "scenario_nb")  # as a notebook does (the fixture registered it directly)
    ip.run_line_magic("unload_ext", "scenario_nb")
    assert "scenario" not in ip.magics_manager.magics["line"] and "scenario" not in ip.magics_manager.magics["cell"]
    assert not any(type(c).__name__ == "ScenarioMagics" for c in ip.configurables)
    from scenario_nb import _session
    assert _session.current_session() is None and pending._engine.closed  # nothing follows it any more
    ip.run_line_magic("load_ext", "scenario_nb")
    result, out = run(ip, f"%scenario job {pending.job_id}")  # the history knows it: followed on, delivered
    assert result.error_in_exec is None and any(k.startswith("image/") for o in out.outputs for k in o.data)


# -- Ctrl-C while the first view is drawn ---------------------------------------------------------------------
# The first bundle renders thumbnails (or a sheet): a Ctrl-C can land while it is made. It must end the
# waiting as a later one does: one line, no traceback, the job untouched on the server and in the history.

def interrupt_first_call(monkeypatch, name: str) -> list:
    """Make `scenario_nb._display.<name>` raise KeyboardInterrupt on its first call only; returns its calls."""
    from scenario_nb import _display
    real, calls = getattr(_display, name), []

    def first_call_interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(_display, name, first_call_interrupted)
    return calls


def no_traceback(result, out) -> bool:
    text = out.stdout + out.stderr
    return result.error_in_exec is None and "Traceback" not in text and "KeyboardInterrupt" not in text


def test_ctrl_c_while_the_first_thumbnail_is_drawn_stops_only_the_waiting(ip, env, monkeypatch):
    env.state.options["job_seconds"] = 1.0
    calls = interrupt_first_call(monkeypatch, "generation_bundle")
    result, out = run(ip, "%%scenario Gemini -o g\na lantern drawn once")
    assert calls and no_traceback(result, out), out.stdout + out.stderr
    gen = ip.user_ns["g"]
    assert out.stdout.strip().splitlines() == [  # one line, naming the job still running
        f"Stopped waiting (the jobs were not stopped). Still running on the server: {gen.job_id}; re-attach "
        f"with %scenario job ID."]
    assert env.stats()["jobs_created"] == 1 and gen.job_id in env.jobs
    assert not [r for r in env.requests if r["path"].endswith("/action")], "the job was touched"
    assert History(env_history(env)).get(gen.job_id) is not None
    assert gen.wait(timeout=30).ok and gen.images
    result, out = run(ip, "%%scenario Gemini -o again\na lantern drawn once")  # re-run: shown, not paid again
    assert ip.user_ns["again"].job_id == gen.job_id and env.stats()["jobs_created"] == 1 and images_in(out)


def test_ctrl_c_while_the_first_sheet_is_drawn_stops_only_the_waiting(ip, env, monkeypatch):
    env.state.options["job_seconds"] = 1.0
    calls = interrupt_first_call(monkeypatch, "grid_bundle")
    result, out = run(ip, "%%scenario Gemini --vary seed=1,2 -o g\na lantern on a sheet")
    assert calls and no_traceback(result, out), out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Stopped waiting (the jobs were not stopped)."), lines
    grid = ip.user_ns["g"]
    assert env.stats()["jobs_created"] == 2 and all(t.job_id in env.jobs for t in grid.tiles)
    assert all(History(env_history(env)).get(t.job_id) is not None for t in grid.tiles)
    assert all(t.wait(timeout=30).ok for t in grid.tiles)


def test_ctrl_c_while_the_first_training_view_is_drawn_stops_only_the_waiting(ip, env, monkeypatch, tmp_path):
    env.state.options["train_seconds"] = 1.0
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (1024, 1024), (40 * i, 90, 160)).save(folder / f"tile-{i}.png")
    calls = interrupt_first_call(monkeypatch, "training_bundle")
    result, out = run(ip, f'%scenario train "First Draw" --images "{folder}" --captions none -o t')
    assert calls and no_traceback(result, out), out.stdout + out.stderr
    training = ip.user_ns["t"]
    assert out.stdout.strip().splitlines() == [
        f"Stopped waiting (the training goes on on the server); %scenario training {training.model_id} shows it "
        f"again"]
    assert env.stats()["trainings_started"] == 1
    assert History(env_history(env)).training(training.model_id) is not None
    assert training.wait(timeout=30).ok
