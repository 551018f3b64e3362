"""Training custom models from the client: `client.train`, the `Training` handle, captions, the spend guard,
cancel, failures, bad input, the history and recovery, and the `%scenario train` / `%scenario training` magics.

Everything runs over real HTTP against a sandbox whose trainings take a few seconds, and is checked by effect:
the models and trainings on the server (`stats()["trainings_started"]`, `GET /models/{id}`), the history's rows.
"""

from __future__ import annotations

import contextlib
import functools
import io
import threading
import time

import pytest
import requests
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image, ImageDraw

from scenario_nb import (Captions, CostEstimate, InputError, ScenarioClient, Training,
                         TrainingFailedError)
from scenario_nb import sandbox as sandbox_mod
from scenario_nb._history import History

from conftest import SUITE_KEY, SUITE_SECRET, Clock, point_session_at, reset_session, until

TRAIN_SECONDS = 3.0


@pytest.fixture
def tsb():
    with sandbox_mod.start(job_seconds=0.3, seed=5, train_seconds=TRAIN_SECONDS, max_parallel_trainings=2,
                           api_key=SUITE_KEY, api_secret=SUITE_SECRET) as server:
        yield server


@pytest.fixture
def tclient(tsb, tmp_path):
    c = ScenarioClient(SUITE_KEY, SUITE_SECRET, tsb.url, home=tmp_path / "home")
    c.set_polling(floor=0.1)
    yield c
    c.close()


def make_set(folder, count=5, hue=0, size=(1024, 1024)):
    """A folder of distinct images: a coloured background and a shape that moves from image to image."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"img-{i:02d}.png").write_bytes(_set_image(i, hue, size))
    return folder


@functools.lru_cache(maxsize=None)
def _set_image(i: int, hue: int, size: tuple) -> bytes:
    """One set image's PNG, encoded once per process (a 1024² PNG costs ~0.1 s of CPU; the suite writes
    hundreds of the same few)."""
    image = Image.new("RGB", size, ((40 + 60 * hue) % 256, (30 * i) % 256, 200 - 20 * hue))
    ImageDraw.Draw(image).ellipse((80 + 25 * i, 120, 560 + 20 * i, 640), fill=(240, 220 - 30 * hue, 40 * i % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=10, **kwargs)


def own_models(sb) -> dict:
    return {m["id"]: m for m in api(sb, "GET", "/models", params={"privacy": "private"}).json()["models"]}


def server_model(sb, model_id) -> dict:
    return api(sb, "GET", f"/models/{model_id}").json()["model"]


def posts(sb, suffix, dry=None) -> int:
    return sum(1 for r in sb.requests if r["method"] == "POST" and r["path"].endswith(suffix)
               and (dry is None or (r["query"].get("dryRun") == "true") == dry))


# -- Training to the end ---------------------------------------------------------------------------------------

def test_a_training_from_a_folder_reaches_trained_then_generates(tmp_path):
    """Followed through every stage: the sandbox's clock moves a twentieth of the training at a time, and only
    once the engine has read the model again (so a slow machine sees the same stages as a fast one)."""
    clock = Clock(frozen=True)
    with sandbox_mod.start(job_seconds=0.3, seed=5, train_seconds=TRAIN_SECONDS, api_key=SUITE_KEY,
                           api_secret=SUITE_SECRET, clock=clock) as tsb:
        tclient = ScenarioClient(SUITE_KEY, SUITE_SECRET, tsb.url, home=tmp_path / "home")
        tclient.set_polling(floor=0.1)
        try:
            follow_a_training_then_generate(tsb, tclient, clock, tmp_path)
        finally:
            tclient.close()


def follow_a_training_then_generate(tsb, tclient, clock, tmp_path):
    folder = make_set(tmp_path / "set")
    stages: list = []
    training = tclient.train("Potion Icons", folder, captions=None)
    assert isinstance(training, Training) and training.model_id.startswith("model_")
    training.on_update(lambda t: stages.append((t.status, t.stage, t.progress)))

    def reads() -> int:
        return sum(1 for r in tsb.state.requests if r["method"] == "GET"
                   and r["path"] == f"/v1/models/{training.model_id}")

    for _ in range(60):
        if training.done:
            break
        seen = reads()
        clock.now += TRAIN_SECONDS / 20
        until(lambda seen=seen: training.done or reads() > seen, 30, "the training read again")
    assert training.wait(60) is training and training.ok and training.progress == 1.0
    assert tsb.stats()["trainings_started"] == 1
    model = server_model(tsb, training.model_id)
    assert model["status"] == "trained" and model["name"] == "Potion Icons" and model["type"] == "flux.2-dev-lora"
    assert sorted(i["name"] for i in model["trainingImages"]) == [f"img-{i:02d}.png" for i in range(5)]
    assert {"pending", "running-train"} <= {s for _, s, _ in stages}  # followed through its stages
    running = [p for _, s, p in stages if s == "running-train"]
    assert running == sorted(running)
    assert training.cost and training.job_id
    generation = tclient.generate(training.model(), "a potion on a table")
    for _ in range(100):  # the job's own time, on the same clock
        if generation.done:
            break
        clock.now += 0.1
        time.sleep(0.05)
    assert generation.wait(30).ok and generation.base_model_id == "model_bfl-flux-2-dev"
    job = tsb.jobs[generation.job_id]
    assert training.model_id in str(job)  # the LoRA went in through its base
    row = tclient.history.training(training.model_id)
    assert row.status == "trained" and row.job_id == training.job_id and row.cost == training.cost
    assert [i["name"] for i in row.images] == [f"img-{i:02d}.png" for i in range(5)]
    assert all(i["asset_id"] for i in row.images) and row.finished_at


def test_auto_captions_reach_the_server_all_in_flight(tsb, tclient, tmp_path):
    folder = make_set(tmp_path / "set", hue=1)
    training = tclient.train("Captioned", folder)  # captions="auto" is the default
    assert posts(tsb, "/generate/caption", dry=False) == 5
    described = {i["name"]: i["description"] for i in server_model(tsb, training.model_id)["trainingImages"]}
    assert described == training.captions and all(described.values())
    html = training._repr_mimebundle_()[0]["text/html"]
    assert "<progress" in html and html.count("<img") == 5 and "img-03.png" in html
    assert all(caption.split()[0] in html for caption in described.values())
    training.wait(60)
    row = tclient.history.training(training.model_id)
    assert {i["name"]: i["caption"] for i in row.images} == described


def test_an_edited_caption_table_is_what_the_server_gets(tsb, tclient, tmp_path):
    folder = make_set(tmp_path / "set", hue=2)
    table = tclient.caption_images(folder)
    assert isinstance(table, Captions) and sorted(table) == [f"img-{i:02d}.png" for i in range(5)]
    assert "img-00.png" in table._repr_html_() and "<img" in table._repr_html_()
    table["img-02.png"] = "a hand-written caption"
    training = tclient.train("Edited", folder, captions=table)
    described = {i["name"]: i["description"] for i in server_model(tsb, training.model_id)["trainingImages"]}
    assert described == dict(table) and described["img-02.png"] == "a hand-written caption"
    assert posts(tsb, "/generate/caption", dry=False) == 5  # the table's captions, not asked for again
    none = tclient.train("Uncaptioned", make_set(tmp_path / "other", hue=3), captions=None)
    assert all(i["description"] == "" for i in server_model(tsb, none.model_id)["trainingImages"])
    training.wait(60)
    none.wait(60)


# -- Money --------------------------------------------------------------------------------------------------

def test_dry_run_prices_and_leaves_nothing(tsb, tclient, tmp_path):
    folder = make_set(tmp_path / "set")
    before = set(own_models(tsb))
    estimate = tclient.train("Priced", folder, parameters={"nbEpochs": 2}, captions=None, dry_run=True)
    assert isinstance(estimate, CostEstimate)
    assert estimate.details["train-model"] == estimate.creative_units == 34  # ceil(5 images × 2 epochs × 10/3)
    with_captions = tclient.train("Priced", folder, parameters={"nbEpochs": 2}, dry_run=True)
    assert with_captions.creative_units == 34 + with_captions.details["caption"] > 34
    assert tsb.stats()["trainings_started"] == 0 and set(own_models(tsb)) == before
    assert posts(tsb, "/generate/caption", dry=False) == 0 and posts(tsb, "/training-images") == 0
    assert tclient.history.trainings() == []


def test_the_spend_guard_refuses_before_spending(tsb, tclient, tmp_path):
    folder = make_set(tmp_path / "set")
    before = set(own_models(tsb))
    with pytest.raises(InputError) as refused:
        tclient.train("Too Dear", folder, max_cost=10)
    assert "estimated at" in str(refused.value) and "max_cost 10" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert tsb.stats()["trainings_started"] == 0 and set(own_models(tsb)) == before
    assert posts(tsb, "/generate/caption", dry=False) == 0 and posts(tsb, "/training-images") == 0
    training = tclient.train("Affordable", folder, captions=None, max_cost=1000)
    assert training.wait(60).ok and tsb.stats()["trainings_started"] == 1


# -- Cancel and failures ------------------------------------------------------------------------------------

def test_cancel_stops_the_training_on_the_server(tsb, tclient, tmp_path):
    training = tclient.train("Canceled", make_set(tmp_path / "set"), captions=None)
    assert training.cancel() == "requested"
    with pytest.raises(TrainingFailedError) as ended:
        training.wait(30)
    assert ended.value.status == "training-canceled" and training.model_id in str(ended.value)
    assert server_model(tsb, training.model_id)["status"] == "training-canceled"
    assert training.done and not training.ok and training.cancel() == "finished"
    assert tclient.history.training(training.model_id).status == "training-canceled"


def test_a_failed_training_carries_the_servers_error_and_hint(tsb, tclient, tmp_path):
    tsb.inject("training_failure", error="the trainer ran out of memory", hint="use a smaller rank")
    training = tclient.train("Doomed", make_set(tmp_path / "set"), captions=None)
    with pytest.raises(TrainingFailedError) as failed:
        training.wait(60)
    assert failed.value.error == "the trainer ran out of memory" and failed.value.hint == "use a smaller rank"
    assert training.status == "failed" and server_model(tsb, training.model_id)["status"] == "failed"
    row = tclient.history.training(training.model_id)
    assert row.status == "failed" and row.error == "the trainer ran out of memory" and row.hint == "use a smaller rank"


# -- Bad input: one line, nothing created or started -------------------------------------------------------------

def _bad_inputs(tmp_path):
    good = make_set(tmp_path / "good")
    empty = tmp_path / "empty"
    empty.mkdir()
    with_text = make_set(tmp_path / "with-text")
    (with_text / "notes.txt").write_text("not an image")
    small = make_set(tmp_path / "small")
    Image.new("RGB", (1000, 1024), "navy").save(small / "tiny.png")
    few = make_set(tmp_path / "few", count=4)
    many = make_set(tmp_path / "many", count=51)
    return {
        "empty folder": (dict(images=empty), "holds no images"),
        "not an image": (dict(images=with_text), "notes.txt is not an image"),
        "too small": (dict(images=small), "tiny.png too small: 1000×1024"),
        "too few": (dict(images=few), "too few training images: 4"),
        "too many": (dict(images=many), "too many training images: 51"),
        "unknown type": (dict(images=good, type="flux.9-lora"), "unknown training type 'flux.9-lora'"),
        "edit type": (dict(images=good, type="flux.2-dev-edit-lora"), "before/after pairs"),
        "parameter out of range": (dict(images=good, parameters={"nbEpochs": 9}),
                                   "Scenario refused this training: Parameter nbEpochs must be between 1 and 4"),
        "unknown parameter": (dict(images=good, parameters={"epochs": 3}), "Parameter epochs is not supported"),
        "name already used": (dict(images=good, name="Hero Knight"), "already have a model named 'Hero Knight'"),
        "caption of no image": (dict(images=good, captions={"nope.png": "x"}), "captions names 'nope.png'"),
    }


CASES = ["empty folder", "not an image", "too small", "too few", "too many", "unknown type", "edit type",
         "parameter out of range", "unknown parameter", "name already used", "caption of no image"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_creates_nothing(tsb, tclient, tmp_path, case):
    kwargs, words = _bad_inputs(tmp_path)[case]
    kwargs = {"name": "Bad Input", **kwargs}
    before = set(own_models(tsb))
    with pytest.raises(InputError) as refused:
        tclient.train(kwargs.pop("name"), kwargs.pop("images"), **kwargs)
    message = str(refused.value)
    assert words in message, message
    assert "\n" not in message
    assert set(own_models(tsb)) == before  # nothing left on the server
    assert tsb.stats()["trainings_started"] == 0
    assert posts(tsb, "/training-images") == 0 and posts(tsb, "/generate/caption", dry=False) == 0
    assert tclient.history.trainings() == []


def test_pillow_images_and_paths_train_too(tsb, tclient, tmp_path):
    folder = make_set(tmp_path / "set", hue=2)
    paths = sorted(folder.iterdir())
    pictures = [Image.open(p) for p in paths]
    estimate = tclient.train("From Pillow", pictures, captions=None, dry_run=True)
    assert estimate.creative_units == 67
    training = tclient.train("From Paths", [str(p) for p in paths], captions=None)
    assert [i.name for i in training.images] == [p.name for p in paths]
    assert training.wait(60).ok


# -- One poller, the history, recovery -------------------------------------------------------------------------

def test_two_trainings_at_once_share_the_poll_lane(tsb, tclient, tmp_path):
    first = tclient.train("First", make_set(tmp_path / "a", hue=0), captions=None)
    second = tclient.train("Second", make_set(tmp_path / "b", hue=3), captions=None)
    assert tsb.stats()["trainings_started"] == 2
    pollers = [t for t in threading.enumerate() if t.name == "scenario-engine-poll"]
    assert 1 <= len(pollers) <= 2 and not any("training" in t.name for t in threading.enumerate())
    first.wait(60)
    second.wait(60)
    assert first.ok and second.ok
    assert {t.model_id for t in tclient.trainings()} >= {first.model_id, second.model_id}
    assert tclient.training(first.model_id) is first  # one handle per model


def test_a_new_client_follows_an_unfinished_training_to_the_end(tsb, tmp_path):
    home = tmp_path / "home"
    one = ScenarioClient(SUITE_KEY, SUITE_SECRET, tsb.url, home=home)
    training = one.train("Survivor", make_set(tmp_path / "set"), captions=None)
    one.close()  # the kernel is gone: nobody follows it now
    row = History(home / "history.sqlite").training(training.model_id)
    assert row.status == "training" and row.job_id == training.job_id
    two = ScenarioClient(SUITE_KEY, SUITE_SECRET, tsb.url, home=home)
    try:
        two.recover()
        followed = [t for t in two.trainings_in_flight() if t.model_id == training.model_id]
        assert len(followed) == 1 and followed[0] is not training
        assert followed[0].wait(60).ok
        assert two.history.training(training.model_id).status == "trained"
        assert [i.name for i in followed[0].images] == [i.name for i in training.images]
        listed = {t.model_id: t for t in two.trainings()}
        assert listed[training.model_id] is followed[0]
    finally:
        two.close()
    three = ScenarioClient(SUITE_KEY, SUITE_SECRET, tsb.url, home=home)
    try:
        requests_before = len(tsb.requests)
        done = [t for t in three.trainings() if t.model_id == training.model_id][0]
        assert done.ok and done.status == "trained"
        assert not [r for r in tsb.requests[requests_before:] if training.model_id in r["path"]]  # from history
    finally:
        three.close()


@contextlib.contextmanager
def two_trainings_running(tmp_path):
    """A sandbox whose two training slots are taken (its clock stands still until the test moves it, so neither
    ends on a slow machine before the test asks for a third): (sandbox, client, clock, the two trainings)."""
    clock = Clock(frozen=True)
    with sandbox_mod.start(job_seconds=0.3, seed=5, train_seconds=TRAIN_SECONDS, max_parallel_trainings=2,
                           api_key=SUITE_KEY, api_secret=SUITE_SECRET, clock=clock) as tsb:
        tclient = ScenarioClient(SUITE_KEY, SUITE_SECRET, tsb.url, home=tmp_path / "home")
        tclient.set_polling(floor=0.1)
        try:
            yield tsb, tclient, clock, [tclient.train(f"Busy {n}", make_set(tmp_path / f"busy{n}", hue=n),
                                                      captions=None) for n in (1, 2)]
        finally:
            tclient.close()


def test_a_training_refused_at_start_waits_for_a_slot_and_keeps_its_model(tmp_path):
    """Two trainings hold both slots (the sandbox's clock stands still until the test moves it, so neither can
    end on a slow machine before the third asks): the third is refused at its start (429), keeps its model and
    waits, recorded as waiting; once the others end it is started, once."""
    with two_trainings_running(tmp_path) as (tsb, tclient, clock, running):
        before = set(own_models(tsb))
        waiting = tclient.train("Refused", make_set(tmp_path / "set"), captions=None)  # the limit is 2
        assert waiting.status == "waiting" and "parallel trainings" in waiting.note
        assert set(own_models(tsb)) == before | {waiting.model_id} and tsb.stats()["trainings_started"] == 2
        rows = {r.name: r.status for r in tclient.history.trainings()}
        assert rows["Refused"] == "waiting"
        clock.now += TRAIN_SECONDS + 1
        for training in running:
            assert training.wait(60).status == "trained"
        until(lambda: tsb.stats()["trainings_started"] == 3, 30, "the waiting training started")
        clock.now += TRAIN_SECONDS + 1
        assert waiting.wait(60).ok
        tclient.close()


def test_a_waiting_training_woken_twice_is_started_once(tmp_path):
    """A running training ends and wakes the waiting one, whose turn reads its model (`new`, the answer slow to
    come back), and meanwhile the user resumes it: one `PUT /train`, never a second that the server refuses ("only
    a new model can be trained") and that is then reported as "never started, nothing charged" for a training
    that runs and is paid."""
    with two_trainings_running(tmp_path) as (tsb, tclient, clock, running):
        waiting = tclient.train("Refused", make_set(tmp_path / "set"), captions=None)
        assert waiting.status == "waiting"
        model_path = f"/v1/models/{waiting.model_id}"
        tsb.inject("hold", method="GET", path=model_path)  # its turn reads the model: `new`, answer kept back
        clock.now += TRAIN_SECONDS + 1
        tsb.wait_held("GET", model_path)
        tclient.resume_training("Refused")  # meanwhile
        time.sleep(0.5)  # a second turn, had it gone ahead, has read `new` and sent its start by now
        tsb.release()
        until(lambda: tsb.stats()["trainings_started"] == 3, 30, "the waiting training started")
        time.sleep(1.0)  # a second start, had one been sent, has had its answer by now
        starts = [r for r in tsb.state.requests if r["method"] == "PUT" and r["path"] == model_path + "/train"
                  and r["query"].get("dryRun") != "true"]
        assert len(starts) == 2, starts  # the one refused with 429, then exactly one start
        assert waiting.status in ("training", "unknown"), waiting.summary()
        for training in running:
            assert training.wait(60).status == "trained"
        clock.now += TRAIN_SECONDS + 1
        assert waiting.wait(60).ok
        tclient.close()


def test_an_older_history_gets_the_trainings_table_and_keeps_its_jobs(tmp_path):
    import sqlite3

    from scenario_nb._history import JobRecord, TrainingRecord
    path = tmp_path / "history.sqlite"
    History(path).record(JobRecord("req_1", job_id="job_1", status="success"))
    with sqlite3.connect(path) as conn:  # as an earlier version left it: no trainings table
        conn.execute("DROP TABLE trainings")
    history = History(path)
    assert history.get("job_1").status == "success"
    history.record_training(TrainingRecord("model_1", name="Old", status="training", images=[{"name": "a.png"}]))
    with sqlite3.connect(path) as conn:  # a table from a version with fewer columns gets the missing ones
        conn.execute("CREATE TABLE t2 (model_id TEXT PRIMARY KEY, name TEXT, status TEXT)")
        conn.execute("INSERT INTO t2 SELECT model_id, name, status FROM trainings")
        conn.execute("DROP TABLE trainings")
        conn.execute("ALTER TABLE t2 RENAME TO trainings")
    history = History(path)
    row = history.training("model_1")
    assert row.name == "Old" and row.status == "training" and row.images == []
    history.record_training(TrainingRecord("model_1", name="Old", status="trained", images=[{"name": "a.png"}]))
    assert history.training("model_1").images == [{"name": "a.png"}]
    assert [r.model_id for r in history.unfinished_trainings()] == []


# -- Magics -------------------------------------------------------------------------------------------------------

@pytest.fixture
def tip(tsb, tmp_path, monkeypatch):
    """A real IPython shell with the extension loaded, its session on the training sandbox."""
    point_session_at(tsb, tmp_path / "home", monkeypatch)
    from IPython.testing.globalipapp import get_ipython

    from scenario_nb._magics import ScenarioMagics
    shell = get_ipython()
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
    shell.config.pop("ScenarioMagics", None)
    import scenario_nb
    scenario_nb.load_ipython_extension(shell)
    yield shell
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
    reset_session()


def run(ip, cell):
    with capture_output() as out:
        result = ip.run_cell(cell)
    return result, out


def shown(out) -> str:
    return "\n".join(str(o.data.get("text/plain", "")) + str(o.data.get("text/html", "")) for o in out.outputs) \
        + out.stdout


def test_magic_train_and_training(tip, tsb, tmp_path):
    folder = make_set(tmp_path / "my set")
    result, out = run(tip, f'%scenario train "Magic Knight" --images "{folder}" --set nbEpochs=2 --captions none '
                           f'-o knight')
    assert result.error_in_exec is None, result.error_in_exec
    knight = tip.user_ns["knight"]
    assert isinstance(knight, Training) and knight.ok
    model = server_model(tsb, knight.model_id)
    assert model["status"] == "trained" and model["parameters"]["nbEpochs"] == 2 and model["name"] == "Magic Knight"
    assert "trained" in shown(out) and "Magic Knight" in shown(out)
    result, out = run(tip, "%scenario training")
    assert result.error_in_exec is None and "Magic Knight" in shown(out) and knight.model_id in shown(out)
    result, out = run(tip, '%scenario training "Magic Knight"')
    assert result.error_in_exec is None and "trained" in shown(out)
    result, out = run(tip, "%scenario help")
    assert "%scenario train NAME --images DIR" in out.stdout and "%scenario training [MODEL]" in out.stdout
    from scenario_nb._magics import ScenarioMagics
    assert "%scenario train NAME --images DIR" in ScenarioMagics.scenario.__doc__  # what %scenario? shows
    assert "%scenario training [MODEL]" in ScenarioMagics.scenario.__doc__


def test_magic_training_cancel(tip, tsb, tmp_path):
    result, out = run(tip, f"%scenario train Stopper --images {make_set(tmp_path / 'set')} --captions none --no-wait "
                           f"-o stopper")
    assert result.error_in_exec is None, result.error_in_exec
    result, out = run(tip, "%scenario training Stopper --cancel")
    assert result.error_in_exec is None and "cancel requested" in out.stdout
    stopper = tip.user_ns["stopper"]
    with pytest.raises(TrainingFailedError):
        stopper.wait(30)
    assert server_model(tsb, stopper.model_id)["status"] == "training-canceled"


def test_magic_dry_run_and_spend_guard_spend_nothing(tip, tsb, tmp_path):
    folder = make_set(tmp_path / "set")
    before = set(own_models(tsb))
    result, out = run(tip, f"%scenario train Pricey --images {folder} --dry-run")
    assert result.error_in_exec is None and "CU" in shown(out)
    tip.run_cell("%config ScenarioMagics.max_cost = 1")
    result, out = run(tip, f"%scenario train Pricey --images {folder}")
    assert isinstance(result.error_in_exec, UsageError) and "max_cost" in str(result.error_in_exec)
    tip.run_cell("%config ScenarioMagics.max_cost = None")
    assert tsb.stats()["trainings_started"] == 0 and set(own_models(tsb)) == before
    assert posts(tsb, "/generate/caption", dry=False) == 0


def test_magic_bad_input_is_one_usage_line(tip, tsb, tmp_path):
    few = make_set(tmp_path / "few", count=3)
    for line, words in ((f"%scenario train Few --images {few}", "too few training images: 3"),
                        (f"%scenario train Few --images {few} --captions maybe", "invalid choice"),
                        ("%scenario train --images somewhere", "no model name given"),
                        (f"%scenario train Few --images {tmp_path / 'missing'}", "is not a folder"),
                        ("%scenario training model_doesNotExist", "no training of 'model_doesNotExist'")):
        result, out = run(tip, line)
        assert isinstance(result.error_in_exec, UsageError), line
        assert words in str(result.error_in_exec) and "\n" not in str(result.error_in_exec), line
    assert tsb.stats()["trainings_started"] == 0


def test_a_training_shown_in_a_notebook_is_live_until_it_ends(tsb, tclient, tmp_path, fake_comm):
    """`training` as a cell's last line: a view the engine redraws while it trains (not a frozen snapshot)."""
    import ipywidgets as widgets
    from IPython.testing.globalipapp import get_ipython
    from IPython.utils.capture import capture_output
    get_ipython()  # display() in a shell, as in a notebook
    training = tclient.train("Live View", make_set(tmp_path / "set"), captions=None)
    with capture_output() as out:
        training._ipython_display_()
    views = [o for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    assert views, "an unfinished training was shown as a snapshot"
    view = widgets.Widget.widgets[views[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]]
    first = view.value
    training.wait(timeout=30)
    deadline = time.time() + 10
    while "trained" not in view.value and time.time() < deadline:
        time.sleep(0.05)
    assert view.value != first and "trained" in view.value
    with capture_output() as out:
        training._ipython_display_()
    assert "text/html" in out.outputs[0].data and "trained" in out.outputs[0].data["text/html"]


def test_magic_training_shows_the_workbench_requests_and_resume_starts_a_waiting_one(tip, tsb, tmp_path):
    """`%scenario training` lists a training waiting for a slot (a 429 at its start) with how to start it, and the
    captions paid, lost ones included with what to do; `%scenario train resume NAME` starts it once a slot is free,
    captioning nothing again."""
    tsb.inject("rate_limit", method="PUT", path="/train", dry_run=False, remaining_seconds=600)  # a cooldown
    tsb.inject("drop", after_create=True, method="POST", path="/generate/caption", dry_run=False)
    sets = [make_set(tmp_path / f"s{n}", hue=40 * n) for n in range(2)]
    _, out = run(tip, f'%scenario train "Lost Caption" --images "{sets[0]}" --no-wait')
    assert "may have been charged" in shown(out) + out.stderr, shown(out) + out.stderr
    _, out = run(tip, f'%scenario train "Cooling" --images "{sets[1]}" --captions none --no-wait')
    _, out = run(tip, "%scenario training")
    text = shown(out)
    assert "waiting" in text and '%scenario train resume "Cooling"' in text, text
    assert "captions: 4 made" in text, text
    assert "captions with a lost answer: 1" in text and "may have been charged" in text, text
    started = tsb.stats()["trainings_started"]
    _, out = run(tip, '%scenario train resume "Cooling"')
    until(lambda: tsb.stats()["trainings_started"] == started + 1, 30, "the resumed training started")
    assert posts(tsb, "/generate/caption", dry=False) == 5


def test_a_training_start_answered_with_an_odd_cost_keeps_its_job(tsb, tclient, tmp_path, monkeypatch):
    """The start is answered with the training's job and a cost that is not a number: the training runs and is
    charged, so its job id is on the handle and in the history row, and it is followed to its end (before: the
    cost was read first, it raised, and the job id was lost)."""
    request = tclient._http.request

    def odd_cost_on_the_start(method, path, **kwargs):
        data = request(method, path, **kwargs)
        if method == "PUT" and path.endswith("/train") and not (kwargs.get("params") or {}).get("dryRun"):
            data = {**data, "creativeUnitsCost": "twelve"}
        return data

    monkeypatch.setattr(tclient._http, "request", odd_cost_on_the_start)
    training = tclient.train("Odd Cost", make_set(tmp_path / "set"), captions=None)
    job_id = server_model(tsb, training.model_id).get("jobId")
    assert job_id and training.job_id == job_id, training.summary()
    assert tclient.history.training(training.model_id).job_id == job_id
    assert training.wait(60).ok and tsb.stats()["trainings_started"] == 1
