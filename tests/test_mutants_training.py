"""Tests written to kill the mutants mutmut planted in `scenario_nb/_training.py` (the training handle) and
`scenario_nb/_training_commands.py` (`%scenario train|training`, driven with a stand-in client) that the rest of the
suite let live (the run, the figures and the equivalent mutants: tests/mutants-equivalent.md).

The handle is driven directly, as the engine drives it: plain values, `_apply_model` with the API's model objects,
a stand-in owner noting what it is asked. No sandbox, no thread of ours, no sleeping: a few milliseconds each.
"""

from __future__ import annotations

import io
import logging
import time
from types import SimpleNamespace
from typing import Optional

import pytest
from IPython.core.error import UsageError
from PIL import Image

from scenario_nb import _training_commands
from scenario_nb._errors import InputError, NotFoundError, ScenarioError, TrainingFailedError, TrainingTimeoutError
from scenario_nb._history import CaptionRecord, History, JobRecord
from scenario_nb._history_trainings import TrainingRecord, this_process
from scenario_nb._html import table_bundle
from scenario_nb._training_commands import TrainingCommands
from scenario_nb._training import (CANCEL_WORDS, STAGE_WORDS, TERMINAL, Captions, DetachedTraining, Training,
                                   TrainingImage, TrainingPlan, eta_words)


class Owner:
    """A stand-in engine: notes what the handle asks of it."""

    base_url = "https://api.example.test/v1"

    def __init__(self) -> None:
        self.asked: list = []

    def cancel_training(self, training):
        self.asked.append(("cancel", training))
        return "requested"

    def training_model(self, training):
        self.asked.append(("model", training))
        return "the model"


def png(size=(8, 6), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def handle(**kwargs) -> Training:
    values = {"model_id": "model_1", "name": "Potions", "type": "flux.1-lora"}
    values.update(kwargs)
    return Training(Owner(), **values)


# -- Constants, captions, plans --------------------------------------------------------------------------------
def test_the_terminal_statuses_and_the_words_shown():
    assert TERMINAL == ("trained", "failed", "training-canceled", "not-started")
    assert STAGE_WORDS == {"captioning": "captioning", "uploading": "uploading images", "starting": "starting",
                           "pending": "pending", "queued-for-train": "queued", "starting-train": "starting",
                           "running-train": "training"}
    assert set(CANCEL_WORDS) == {"requested", "refused", "finished", "unavailable"}


def test_captions_keep_their_thumbnails_cost_and_lost_images_as_copies():
    thumbs = {"a.png": "data:a"}
    lost = ["b.png"]
    captions = Captions({"a.png": "a cat", "b.png": ""}, thumbs, cost=1.5, lost=lost)
    thumbs["c.png"] = "data:c"
    lost.append("c.png")
    assert dict(captions) == {"a.png": "a cat", "b.png": ""}
    assert captions.cost == 1.5 and captions.lost == ["b.png"]
    assert repr(captions) == "Captions({'a.png': 'a cat', 'b.png': ''})"
    html = captions._repr_html_()
    assert 'src="data:a"' in html and "data:c" not in html and "a cat" in html
    bare = Captions({"x.png": "x"})
    assert bare.cost is None and bare.lost == [] and 'src=' not in bare._repr_html_()


def test_a_plan_has_no_parameters_and_no_force_by_default():
    plan = TrainingPlan(name="n", type="t", images=[], captions=None)
    assert plan.parameters == {} and plan.force is False
    other = TrainingPlan(name="n", type="t", images=[], captions=None)
    plan.parameters["x"] = 1
    assert other.parameters == {}


# -- Training images -------------------------------------------------------------------------------------------
def test_a_training_image_thumbnail_from_its_bytes_its_file_or_none(tmp_path):
    image = TrainingImage("a.png", data=png((400, 200)))
    uri = image.thumbnail()
    assert uri.startswith("data:image/jpeg;base64,")
    import base64
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
        assert thumb.size == (96, 48)  # 96 px by default
    image.data = png((10, 10), "blue")
    assert image.thumbnail() is uri  # made once
    path = tmp_path / "b.png"
    path.write_bytes(png((200, 400)))
    from_file = TrainingImage("b.png", path=path).thumbnail(size=50)
    with Image.open(io.BytesIO(base64.b64decode(from_file.split(",", 1)[1]))) as thumb:
        assert thumb.size == (25, 50)
    both = TrainingImage("c.png", path=path, data=png((300, 300)))  # the bytes win over the file
    with Image.open(io.BytesIO(base64.b64decode(both.thumbnail().split(",", 1)[1]))) as thumb:
        assert thumb.size == (96, 96)
    assert TrainingImage("d.png", path=tmp_path / "missing.png").thumbnail() is None
    assert TrainingImage("e.png").thumbnail() is None
    assert TrainingImage("f.png", path=tmp_path).thumbnail() is None  # a folder is no file


def test_a_training_image_as_a_dict_and_its_defaults():
    image = TrainingImage("a.png")
    assert (image.asset_id, image.caption, image.path, image.width, image.height, image.data) == \
        (None, "", None, None, None, None)
    assert TrainingImage("a.png", "asset_1", "a cat").as_dict() == {"name": "a.png", "asset_id": "asset_1",
                                                                    "caption": "a cat"}
    assert "data" not in repr(TrainingImage("a.png", data=b"xyz")) and "_thumb" not in repr(image)


# -- A handle built from plain values --------------------------------------------------------------------------
def test_a_new_handle_holds_what_it_was_given():
    images = [TrainingImage("a.png", caption="a cat")]
    params = {"steps": 10}
    before = time.time()
    t = Training(Owner(), model_id="m", name="n", type="ty", images=images, parameters=params, status="training",
                 job_id="job_1", cost=2.0, error="e")
    images.append(TrainingImage("b.png"))
    params["steps"] = 20
    assert (t.model_id, t.name, t.type, t.status, t.job_id, t.cost, t.error) == \
        ("m", "n", "ty", "training", "job_1", 2.0, "e")
    assert [i.name for i in t.images] == ["a.png"] and t.parameters == {"steps": 10}
    assert (t.stage, t.position, t.progress, t.hint, t.note, t.exception) == ("", None, 0.0, None, "", None)
    assert (t.started_at, t.start_sent_at, t.finished_at) == (None, None, None)
    assert before <= t.created_at <= time.time()
    assert t.remaining is None and not t.done and not t.ok and t.captions == {"a.png": "a cat"}
    assert t.backend == Owner.base_url
    default = Training(model_id="m", name="n", type="ty")
    assert (default.status, default.job_id, default.cost, default.error, default.images, default.parameters) == \
        ("new", None, None, None, [], {})
    assert not default.done and default.backend == ""


@pytest.mark.parametrize("status", TERMINAL)
def test_a_handle_built_with_a_final_status_is_done_at_once(status):
    t = Training(model_id="m", name="n", type="ty", status=status, error="boom")
    assert t.done and t.finished_at is not None and t._done.is_set()
    assert t.progress == (1.0 if status == "trained" else 0.0)
    assert t.ok is (status == "trained")
    if status == "trained":
        assert t.exception is None and t.wait(0) is t
    else:
        assert isinstance(t.exception, TrainingFailedError) and t.exception.status == status
        with pytest.raises(TrainingFailedError):
            t.wait(0)


def test_a_followed_handle_with_a_final_status_waits_for_its_engine():
    t = handle(status="trained")
    assert not t.done and t.progress == 0.0 and t.exception is None and not t._done.is_set()


def test_the_detached_owner_cancels_nothing_and_asks_nothing():
    ended = Training(model_id="m", name="n", type="ty", status="failed")
    assert ended.cancel() == "finished" and ended.note == "already finished: nothing to cancel"
    live = Training(model_id="model_9", name="n", type="ty", status="training")
    assert live.cancel() == "unavailable"
    assert live.note == ("nothing follows this handle (it was built from plain values); cancel it with "
                         "client.training(model_id).cancel()")
    with pytest.raises(InputError) as caught:
        live.model()
    assert str(caught.value) == ("this training handle was built from plain values; client.model('model_9') asks "
                                 "the API for the model")
    assert DetachedTraining.base_url == ""


def test_cancel_and_model_are_asked_of_the_owner():
    t = handle()
    assert t.cancel() == "requested" and t.model() == "the model"
    assert t._owner.asked == [("cancel", t), ("model", t)]


# -- Words -----------------------------------------------------------------------------------------------------
def test_stage_words_for_every_state():
    for status, words in (("trained", "trained"), ("failed", "failed"), ("training-canceled", "canceled"),
                          ("not-started", "never started"), ("odd", "odd")):
        t = handle(status=status)
        t._finish()
        assert t.stage_words() == words
    assert handle(status="unknown").stage_words() == ("start sent, answer lost: following the model to learn "
                                                      "whether it started")
    assert handle(status="waiting").stage_words() == "waiting for a training slot (starts by itself)"
    t = handle(status="training")
    assert t.stage_words() == "training"  # no stage: the status
    t.stage = "uploading"
    assert t.stage_words() == "uploading images"
    t.stage = "something-new"
    assert t.stage_words() == "something-new"
    t.stage, t.position = "queued-for-train", 3
    assert t.stage_words() == "queued (position 3)"
    t.position = 0
    assert t.stage_words() == "queued"
    t.stage, t.position = "pending", 3
    assert t.stage_words() == "pending"


def test_state_words_summary_and_repr(monkeypatch):
    t = handle(status="training", images=[TrainingImage("a.png")])
    t.stage, t.progress = "running-train", 0.426
    t._remaining, t._remaining_seen = 90.0, time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: t._remaining_seen + 5)
    assert t.state_words() == ["training", "43%", "about 1 min 25 s left"]
    t.cost = 3.5
    assert t.state_words()[-1] == "3.5 CU"
    assert t.summary() == "Potions · model_1 · flux.1-lora · training · 43% · about 1 min 25 s left · 3.5 CU · 1 image"
    t.images.append(TrainingImage("b.png"))
    t.note = "a note"
    assert t.summary().endswith(" · 2 images\na note")
    t.exception = RuntimeError("it broke")
    assert t.summary().endswith(" · 2 images\nit broke")
    t.stage = "uploading"
    assert t.state_words() == ["uploading images", "about 1 min 25 s left", "3.5 CU"]  # no percentage
    assert repr(t) == "<Training model_1 'Potions' flux.1-lora uploading images>"
    done = handle(status="trained")
    done.stage = "running-train"
    done._finish()
    assert done.state_words() == ["trained"]
    assert handle(images=[]).summary() == "Potions · model_1 · flux.1-lora · new · 0 images"


def test_remaining_counts_down_from_the_last_reading_and_never_below_zero(monkeypatch):
    t = handle(status="training")
    t._remaining, t._remaining_seen = 30.0, 100.0
    monkeypatch.setattr(time, "monotonic", lambda: 110.0)
    assert t.remaining == 20.0
    monkeypatch.setattr(time, "monotonic", lambda: 200.0)
    assert t.remaining == 0.0
    t._finish()
    assert t.remaining is None


def test_provenance_holds_every_field():
    t = handle(status="training", images=[TrainingImage("a.png", "asset_1", "a cat")], parameters={"s": 1},
               job_id="job_1", cost=2.0, error="e")
    t.stage, t.progress, t.hint = "running-train", 0.5, "h"
    assert t.provenance() == {"model_id": "model_1", "name": "Potions", "type": "flux.1-lora", "job_id": "job_1",
                              "status": "training", "stage": "running-train", "progress": 0.5, "cost": 2.0,
                              "parameters": {"s": 1},
                              "images": [{"name": "a.png", "asset_id": "asset_1", "caption": "a cat"}],
                              "error": "e", "hint": "h", "backend": Owner.base_url}


@pytest.mark.parametrize("seconds, words", [(0, "0 s"), (59.4, "59 s"), (59.6, "1 min 00 s"), (60, "1 min 00 s"),
                                            (61, "1 min 01 s"), (3599, "59 min 59 s"), (3600, "1 h 00 min"),
                                            (3661, "1 h 01 min"), (7325, "2 h 02 min")])
def test_eta_words(seconds, words):
    assert eta_words(seconds) == words


# -- Waiting and callbacks --------------------------------------------------------------------------------------
def test_wait_times_out_with_the_seconds_and_raises_the_failure():
    t = handle(status="training")
    with pytest.raises(TrainingTimeoutError) as caught:
        t.wait(0.01)
    assert caught.value.seconds == 0.01 and caught.value.model_id == "model_1"
    assert str(caught.value) == ("stopped waiting for the training of Potions (model_1) after 0.01 s; it goes on on "
                                 "the server: client.training('model_1') or %scenario training model_1 follows it "
                                 "again")
    t.status, t.error, t.hint = "failed", "out of memory", "fewer images"
    t._finish()
    t._settle()
    with pytest.raises(TrainingFailedError) as failed:
        t.wait()
    assert failed.value is t.exception
    assert str(failed.value) == "the training of Potions (model_1) failed: out of memory (hint: fewer images)"
    assert failed.value.job_id == "" and failed.value.status == "failed"


def test_a_timeout_of_none_says_zero_seconds(monkeypatch):
    t = handle(status="training")
    monkeypatch.setattr(t._done, "wait", lambda timeout: False)
    with pytest.raises(TrainingTimeoutError) as caught:
        t.wait()
    assert caught.value.seconds == 0


def test_finish_keeps_an_exception_and_a_date_already_set():
    t = handle(status="failed", job_id="job_7")
    mine = RuntimeError("mine")
    t.exception, t.finished_at = mine, 123.0
    t._finish()
    assert t.exception is mine and t.finished_at == 123.0
    trained = handle(status="trained")
    trained._finish()
    assert trained.exception is None and trained.finished_at is not None
    canceled = handle(status="training-canceled", job_id="job_3")
    canceled._finish()
    assert canceled.exception.job_id == "job_3" and canceled.exception.status == "training-canceled"
    assert str(canceled.exception) == "the training of Potions (model_1) was canceled"
    assert not canceled._done.is_set()  # waiters are released by _settle


def test_on_update_calls_at_once_then_on_every_change_and_survives_a_broken_callback():
    t = handle()
    seen = []
    assert t.on_update(lambda h: seen.append(("first", h))) is t

    def broken(h):
        raise ValueError("broken view")

    t.on_update(broken)
    t.on_update(lambda h: seen.append(("third", h)))
    assert seen == [("first", t), ("third", t)]
    lines: list = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("scenario_nb").addHandler(handler)
    try:
        t._notify()
    finally:
        logging.getLogger("scenario_nb").removeHandler(handler)
    assert seen[2:] == [("first", t), ("third", t)]
    assert lines == ["an on_update callback of training model_1 failed"]


def test_set_changes_the_named_fields():
    t = handle()
    t._set(note="hello", cost=4.0)
    assert t.note == "hello" and t.cost == 4.0


# -- Kept current from the API's model ---------------------------------------------------------------------------
def test_apply_model_takes_status_job_name_and_progress(monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 500.0)
    t = handle(status="new")
    changed = t._apply_model({"status": "training", "jobId": "job_1", "name": "Renamed",
                              "trainingProgress": {"stage": "running-train", "position": 2, "progress": 0.25,
                                                   "remainingTimeMs": 90_500, "startedAt": 1_700_000_000_500}})
    assert changed
    assert (t.status, t.job_id, t.name, t.stage, t.position, t.progress) == \
        ("training", "job_1", "Renamed", "running-train", 2, 0.25)
    assert t._remaining == 90.5 and t._remaining_seen == 500.0 and t.started_at == 1_700_000_000.5
    assert not t._apply_model({"status": "training", "trainingProgress": {"stage": "running-train", "position": 2,
                                                                          "progress": 0.25}})
    assert t.job_id == "job_1" and t.name == "Renamed" and t._remaining is None  # kept; no time left known
    assert t.started_at == 1_700_000_000.5


def test_apply_model_reports_each_kind_of_change():
    t = handle(status="training")
    base = {"status": "training", "trainingProgress": {"stage": "running-train", "progress": 0.5, "position": 1}}
    t._apply_model(base)
    assert not t._apply_model(base)
    assert t._apply_model({**base, "status": "trained-soon"})
    t._apply_model(base)
    assert t._apply_model({**base, "trainingProgress": {"stage": "pending", "progress": 0.5, "position": 1}})
    t._apply_model(base)
    assert t._apply_model({**base, "trainingProgress": {"stage": "running-train", "progress": 0.6, "position": 1}})
    assert not t._apply_model({**base, "trainingProgress": {"stage": "running-train", "progress": 0.6001,
                                                            "position": 1}})  # rounded to 3 places
    assert t._apply_model({**base, "trainingProgress": {"stage": "running-train", "progress": 0.6, "position": 2}})
    assert t._apply_model({**base, "jobId": "job_2", "trainingProgress": {"stage": "running-train", "progress": 0.6,
                                                                          "position": 2}})


def test_apply_model_ignores_what_is_missing_or_of_the_wrong_kind():
    t = handle(status="training")
    t.stage, t.progress, t.position = "pending", 0.3, 4
    t._remaining, t.started_at = 50.0, 7.0
    t._apply_model({"status": "", "jobId": None, "name": ""})
    assert (t.status, t.stage, t.progress, t.position, t.name) == ("training", "pending", 0.3, 4, "Potions")
    assert t._remaining == 50.0  # no trainingProgress: the last reading stands
    t._apply_model({"trainingProgress": {"stage": "", "progress": 0.9}})  # no stage: ignored
    assert t.progress == 0.3 and t._remaining == 50.0
    t._apply_model({"trainingProgress": "odd"})
    assert t.progress == 0.3
    t._apply_model({"trainingProgress": {"stage": 7, "position": "2", "progress": True, "remainingTimeMs": True,
                                         "startedAt": "soon"}})
    assert t.stage == "7" and t.position is None and t.progress == 0.3 and t._remaining is None
    assert t.started_at == 7.0
    t._apply_model({"trainingProgress": {"stage": "running-train", "progress": "half", "remainingTimeMs": -5000}})
    assert t.progress == 0.3 and t._remaining == 0.0
    t._apply_model({"trainingProgress": {"stage": "running-train", "progress": 1, "remainingTimeMs": 2.5,
                                         "startedAt": 3}})
    assert t.progress == 1.0 and t._remaining == 0.0025 and t.started_at == 0.003


def test_apply_model_of_a_final_status_clears_the_stage_and_time_left():
    t = handle(status="training")
    t._apply_model({"status": "trained", "trainingProgress": {"stage": "running-train", "progress": 0.4,
                                                              "remainingTimeMs": 5000}})
    assert (t.progress, t.stage, t._remaining) == (1.0, "", None)
    f = handle(status="training")
    f._apply_model({"status": "failed", "trainingProgress": {"stage": "running-train", "progress": 0.4,
                                                             "remainingTimeMs": 5000}})
    assert (f.progress, f.stage, f._remaining) == (0.4, "", None)
    w = handle(status="training")
    w._apply_model({"status": "waiting", "trainingProgress": {"stage": "pending", "progress": 0.1,
                                                              "remainingTimeMs": 5000}})
    assert (w.stage, w._remaining) == ("pending", 5.0)


def test_progress_on_either_scale():
    t = handle(status="training")
    assert t._fraction(0.5, None) == 0.5
    assert t._fraction(1.0, 10_000) == 1.0  # 1 with 10 s left: done on the 0..1 scale
    assert not t._percent
    assert t._fraction(1.0, 10_001) == 0.01 and t._percent  # a first 1 with time left is 1 %
    assert t._fraction(0.5, None) == 0.005  # kept
    p = handle(status="training")
    assert p._fraction(42.0, None) == 0.42 and p._fraction(150.0, None) == 1.0
    q = handle(status="training")
    assert q._fraction(1.0, "lots") == 1.0 and not q._percent
    assert q._fraction(-0.2, None) == 0.0
    assert q._fraction(1.5, None) == 0.015
    r = handle(status="training")
    assert r._fraction(1.0, 10_000.5) == 0.01


# -- _training_commands.py: `%scenario train|training`, driven with a stand-in client ------------------------------


class FakeClient:
    """What the training commands ask of the client, noted; a real history under tmp_path."""

    backend_id = "backend_1"
    base_url = "https://api.example.test/v1"

    def __init__(self, history: History) -> None:
        self.history = history
        self.calls: list = []
        self.in_flight: list = []
        self.result: object = "the training"
        self.handles: list = []
        self.failure: Optional[BaseException] = None
        self.captions: list = []
        self.draft_list: list = []

    def train(self, name, images, **kwargs):
        self.calls.append(("train", name, images, kwargs))
        if self.failure is not None:
            raise self.failure
        return self.result

    def trainings_in_flight(self):
        return self.in_flight

    def resume_training(self, name):
        self.calls.append(("resume", name))
        if self.failure is not None:
            raise self.failure
        return self.result

    def training(self, name):
        self.calls.append(("training", name))
        if self.failure is not None:
            raise self.failure
        return self.result

    def trainings(self):
        return self.handles

    def delete_draft(self, name):
        self.calls.append(("delete_draft", name))
        return SimpleNamespace(name="Potions", id="model_9", type="flux.1-lora", raw={"trainingImagesNumber": 7})

    def drafts(self):
        return self.draft_list

    def recorded_captions(self):
        if self.failure is not None:
            raise self.failure
        return self.captions


class FakeMagics:
    def __init__(self, client) -> None:
        self.client = client
        self.max_cost: Optional[float] = None
        self.wait = True
        self.user_ns: dict = {}
        self.guarded: list = []

    def _spend_guard(self, total):
        self.guarded.append(total)


@pytest.fixture
def tc(tmp_path, monkeypatch):
    """TrainingCommands on a stand-in client; `shown` notes show_training and display calls."""
    h = History(tmp_path / "h.sqlite")
    client = FakeClient(h)
    magics = FakeMagics(client)
    commands = TrainingCommands(magics)
    commands.shown = []
    monkeypatch.setattr(_training_commands, "show_training", lambda t, wait: commands.shown.append(("show", t, wait)))
    monkeypatch.setattr(_training_commands, "display", lambda *a, **k: commands.shown.append(("display", a, k)))
    yield commands
    h.close()


def test_train_passes_every_option_to_the_client(tc):
    tc.cmd_train(["Potion", "Icons", "--images", "icons/", "--type", "flux.2-dev-lora", "--captions", "none",
                  "--set", "steps=20", "--set", "samplePrompts=a cat", "-o", "t", "--force"])
    name, images, kwargs = tc.client.calls[0][1:]
    assert (name, images) == ("Potion Icons", "icons/")
    assert kwargs["type"] == "flux.2-dev-lora" and kwargs["parameters"] == {"steps": 20, "samplePrompts": ["a cat"]}
    assert kwargs["dry_run"] is False and kwargs["captions"] is None and kwargs["force"] is True
    assert tc.magics.user_ns == {"t": "the training"}
    assert tc.shown == [("show", "the training", True)]


def test_train_defaults_and_no_wait(tc):
    tc.magics.wait = True
    tc.cmd_train(["Cats", "--images", "c/", "--no-wait"])
    kwargs = tc.client.calls[0][3]
    assert kwargs["type"] is None and kwargs["parameters"] == {} and kwargs["captions"] == "auto"
    assert kwargs["force"] is False and kwargs["dry_run"] is False
    assert tc.magics.user_ns == {} and tc.shown == [("show", "the training", False)]
    tc.magics.wait = False
    tc.cmd_train(["Cats", "--images", "c/"])
    assert tc.shown[-1] == ("show", "the training", False)


def test_train_dry_run_displays_the_estimate_only(tc):
    tc.cmd_train(["Cats", "--images", "c/", "--dry-run", "-o", "x", "--captions", "auto"])
    assert tc.client.calls[0][3]["dry_run"] is True and tc.client.calls[0][3]["captions"] == "auto"
    assert tc.shown == [("display", ("the training",), {})] and tc.magics.user_ns == {}


def test_train_refuses_what_is_missing(tc):
    with pytest.raises(UsageError) as caught:
        tc.cmd_train(["--images", "c/"])
    assert str(caught.value) == ("%scenario train: no model name given; e.g. %scenario train Potion Icons --images "
                                 "icons/")
    with pytest.raises(UsageError) as caught:
        tc.cmd_train(["Cats"])
    assert str(caught.value) == ("%scenario train: no --images DIR given; a folder of 5–15 images of at least "
                                 "1024 px")
    with pytest.raises(UsageError) as caught:
        tc.cmd_train(["Cats", "--images", "c/", "-o", "1x"])
    assert "-o takes a Python variable name" in str(caught.value)
    with pytest.raises(UsageError) as caught:
        tc.cmd_train(["Cats", "--images", "c/", "--captions", "some"])
    assert "invalid choice: 'some'" in str(caught.value)
    assert tc.client.calls == []


def test_train_guard_asks_only_over_max_cost(tc):
    tc.cmd_train(["Cats", "--images", "c/"])
    guard = tc.client.calls[0][3]["confirm"]
    guard(SimpleNamespace(creative_units=1e9))
    assert tc.magics.guarded == []  # no max_cost: never asks
    tc.magics.max_cost = 5.0
    tc.cmd_train(["Cats", "--images", "c/"])
    guard = tc.client.calls[1][3]["confirm"]
    guard(SimpleNamespace(creative_units=5.0))
    assert tc.magics.guarded == []
    guard(SimpleNamespace(creative_units=5.5))
    assert tc.magics.guarded == [5.5]
    tc.magics.max_cost = 0.0
    tc.cmd_train(["Cats", "--images", "c/"])
    tc.client.calls[2][3]["confirm"](SimpleNamespace(creative_units=0.5))
    assert tc.magics.guarded == [5.5, 0.5]


def test_train_resume(tc):
    tc.client.result = SimpleNamespace(status="waiting", name="Cats", model_id="model_1")
    tc.cmd_train(["resume", "Potion", "Icons"])
    assert tc.client.calls == [("resume", "Potion Icons")] and tc.shown == [("show", tc.client.result, True)]


def test_resume_of_a_training_not_waiting_says_so(tc, capsys):
    tc.client.result = SimpleNamespace(status="training", name="Cats", model_id="model_1",
                                       stage_words=lambda: "training")
    tc.magics.wait = False
    tc._resume("Cats")
    assert capsys.readouterr().out == "Cats (model_1) is not waiting for a slot: training\n"
    assert tc.shown == [("show", tc.client.result, False)]


def test_resume_refuses_no_name_and_an_unknown_one(tc):
    with pytest.raises(UsageError) as caught:
        tc.cmd_train(["resume"])
    assert str(caught.value) == ('%scenario train resume: no model name given; e.g. %scenario train resume '
                                 '"Potion Icons"')
    tc.client.failure = NotFoundError("nope")
    with pytest.raises(UsageError) as caught:
        tc._resume("Cats")
    assert str(caught.value) == ("no training of 'Cats' on https://api.example.test/v1; %scenario training lists "
                                 "them")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def interrupted(tc, capsys, name="Cats"):
    tc.client.failure = KeyboardInterrupt()
    tc.cmd_train([name, "--images", "c/"])
    return capsys.readouterr().out


def test_ctrl_c_while_the_training_starts(tc, capsys):
    tc.client.in_flight = [SimpleNamespace(name="Dogs"), SimpleNamespace(name="Cats")]
    assert interrupted(tc, capsys) == ('Stopped while the training of Cats was being started: it may be running; '
                                       '%scenario training "Cats" follows it\n')
    assert tc.shown == []


def test_ctrl_c_while_another_kernel_prepares_it(tc, capsys):
    tc.client.history.record_training(TrainingRecord("claim_1", backend_id="backend_1", name="cats",
                                                     status="preparing", owner="otherhost:1"))
    assert interrupted(tc, capsys) == ("Stopped waiting for the training of Cats that another kernel prepares: "
                                       'nothing was sent from here; %scenario training "Cats" follows it once it '
                                       "starts\n")


@pytest.mark.parametrize("row", [
    TrainingRecord("claim_1", backend_id="backend_1", name="Cats", status="preparing", owner=this_process()),
    TrainingRecord("claim_1", backend_id="backend_1", name="Cats", status="waiting", owner="otherhost:1"),
    TrainingRecord("claim_1", backend_id="backend_1", name="Dogs", status="preparing", owner="otherhost:1"),
    TrainingRecord("claim_1", backend_id="backend_2", name="Cats", status="preparing", owner="otherhost:1"),
])
def test_ctrl_c_with_no_claim_held_elsewhere(tc, capsys, row):
    tc.client.history.record_training(row)
    assert interrupted(tc, capsys) == ("Stopped before the training of Cats started: nothing was charged for the "
                                       "training and its model was removed\n")


@pytest.mark.parametrize("status", ["unknown", "sending"])
def test_ctrl_c_while_its_model_is_created(tc, capsys, status):
    h = tc.client.history
    h.record(JobRecord("r1", backend_id="backend_1", model_name="Cats", kind="model", status="success",
                       created_at=1.0))
    h.record(JobRecord("r2", backend_id="backend_1", model_name="Cats", kind="model", status=status, created_at=2.0))
    assert interrupted(tc, capsys) == ("Stopped while its model was being created: nothing was charged for the "
                                       "training; the model may exist as a draft (%scenario models --drafts), reused "
                                       'by %scenario train "Cats"\n')


def test_ctrl_c_after_a_model_created_or_an_upload_lost(tc, capsys):
    h = tc.client.history
    h.record(JobRecord("r1", backend_id="backend_1", model_name="Cats", kind="model", status="unknown",
                       created_at=1.0))
    h.record(JobRecord("r2", backend_id="backend_1", model_name="Cats", kind="model", status="success",
                       created_at=2.0))
    h.record(JobRecord("r3", backend_id="backend_1", model_name="Cats", kind="upload", status="unknown",
                       created_at=3.0))
    assert interrupted(tc, capsys).startswith("Stopped before the training of Cats started")


def test_an_unreadable_history_says_nothing_was_held(tc, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ScenarioError("unreadable")

    monkeypatch.setattr(tc.client.history, "trainings", broken)
    monkeypatch.setattr(tc.client.history, "workbench", broken)
    assert tc._prepared_elsewhere("Cats") is False and tc._creation_lost("Cats") is False


def test_training_lists_this_backends_trainings(tc, capsys):
    assert tc.cmd_training([]) is None
    assert capsys.readouterr().out == "No trainings on this backend yet; %scenario train NAME --images DIR starts one\n"
    assert tc.shown == []
    t1 = Training(model_id="model_1", name="Cats", type="flux.1-lora", status="trained",
                  images=[TrainingImage("a.png")], cost=12.5)
    t2 = handle(status="training")
    t2.stage, t2.progress = "running-train", 0.256
    t2._remaining, t2._remaining_seen = 125.2, time.monotonic()
    tc.client.handles = [t1, t2]
    tc.cmd_training([])
    kind, (bundle,), options = tc.shown[0]
    assert kind == "display" and options == {"raw": True}
    assert bundle == table_bundle(["name", "model", "type", "status", "stage", "progress", "ETA", "cost", "images"],
                                  [("Cats", "model_1", "flux.1-lora", "trained", "", "100%", "", "12.5", 1),
                                   ("Potions", "model_1", "flux.1-lora", "training", "training", "26%", "2 min 05 s",
                                    "", 0)])


def test_training_follows_one_cancels_one_and_refuses_cancel_without_a_model(tc, capsys):
    with pytest.raises(UsageError) as caught:
        tc.cmd_training(["--cancel"])
    assert str(caught.value) == "%scenario training --cancel: name the model whose training to cancel"
    t = handle(status="training")
    tc.client.result = t
    tc.cmd_training(["Potion", "Icons", "-o", "tr", "--no-wait"])
    assert tc.client.calls == [("training", "Potion Icons")] and tc.magics.user_ns == {"tr": t}
    assert tc.shown == [("show", t, False)]
    tc.cmd_training(["Potions"])
    assert tc.shown[-1] == ("show", t, True)
    tc.cmd_training(["Potions", "--cancel"])
    assert t._owner.asked == [("cancel", t)] and len(tc.shown) == 2
    t.note = "cancel requested"
    tc.cmd_training(["Potions", "--cancel"])
    assert capsys.readouterr().out.splitlines()[-1] == "Potions (model_1): cancel requested"
    with pytest.raises(UsageError):
        tc.cmd_training(["Potions", "-o", "1x"])


def test_training_of_an_unknown_model(tc):
    tc.client.failure = NotFoundError("nope")
    with pytest.raises(UsageError) as caught:
        tc.cmd_training(["Dogs"])
    assert str(caught.value) == ("no training of 'Dogs' on https://api.example.test/v1; %scenario training lists "
                                 "them")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_delete_a_draft_and_list_drafts(tc, capsys):
    tc.delete_draft(" Potion Icons ")
    assert tc.client.calls == [("delete_draft", "Potion Icons")]
    assert capsys.readouterr().out == ("Removed the draft Potions (model_9, flux.1-lora, never trained, 7 training "
                                       "images)\n")
    with pytest.raises(UsageError) as caught:
        tc.delete_draft("")
    assert str(caught.value) == ('%scenario models delete: no model name given; e.g. %scenario models delete '
                                 '"Potion Icons"')
    tc.drafts()
    assert capsys.readouterr().out == "No drafts: every model this project made was trained or removed\n"
    tc.client.draft_list = [SimpleNamespace(name="Cats", id="model_2", type="flux.1-lora", raw={}),
                            SimpleNamespace(name="Dogs", id="model_3", type="zimage-lora",
                                            raw={"trainingImagesNumber": 4})]
    tc.drafts()
    kind, (bundle,), options = tc.shown[0]
    assert options == {"raw": True} and bundle == table_bundle(
        ["name", "id", "type", "training images"], [("Cats", "model_2", "flux.1-lora", 0),
                                                    ("Dogs", "model_3", "zimage-lora", 4)])
    assert capsys.readouterr().out == ("A draft is reused by %scenario train of its name; %scenario models delete "
                                       "NAME removes one\n")


def test_a_deleted_draft_without_an_image_count(tc, capsys, monkeypatch):
    monkeypatch.setattr(tc.client, "delete_draft", lambda name: SimpleNamespace(name="X", id="model_4", type="t",
                                                                                raw={}))
    tc.delete_draft("X")
    assert capsys.readouterr().out == "Removed the draft X (model_4, t, never trained, 0 training images)\n"


def test_the_workbench_lines(tc, capsys):
    tc.workbench_lines()
    assert capsys.readouterr().out == ""
    tc.client.captions = [CaptionRecord("backend_1", "a", "basic", status="done", cost=0.5, name="a.png"),
                          CaptionRecord("backend_1", "b", "basic", status="done", cost=None, name="b.png"),
                          CaptionRecord("backend_1", "c", "basic", status="unknown", cost=9.0, name="c.png")]
    h = tc.client.history
    for model_id, status, name in (("m1", "preparing", "One"), ("m2", "unknown", "Two"), ("m3", "waiting", "Three"),
                                   ("m4", "training", "Four")):
        h.record_training(TrainingRecord(model_id, backend_id="backend_1", name=name, status=status, owner="host:9"))
    h.record_training(TrainingRecord("m5", backend_id="backend_2", name="Other", status="unknown"))
    tc.workbench_lines()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "captions: 2 made (0.5 CU), reused by any later training of the same images"
    assert lines[1] == ("captions with a lost answer: 1 (c.png): they may have been charged and are not asked "
                        "again; pass captions={...} to write them")
    assert sorted(lines[2:]) == sorted([
        'training One: being prepared by host:9 (model, captions, uploads); a train of the same name waits for it '
        'and follows it. If that kernel is gone, %scenario train "One" takes it over (its model and paid captions '
        'are reused)',
        'training Two (m2): start sent, answer lost; followed until the model shows whether it started '
        '(%scenario training "Two")',
        'training Three (m3): waiting for a training slot, model and captioned images kept; it starts by itself, '
        'or now with %scenario train resume "Three"'])


def test_lost_captions_are_named_five_at_most(tc, capsys):
    tc.client.captions = [CaptionRecord("backend_1", str(i), "basic", status="sending", name=f"{i}.png")
                          for i in range(7)]
    tc.workbench_lines()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["captions: 0 made (0 CU), reused by any later training of the same images",
                     "captions with a lost answer: 7 (0.png, 1.png, 2.png, 3.png, 4.png): they may have been charged "
                     "and are not asked again; pass captions={...} to write them"]


def test_the_workbench_lines_when_the_history_cannot_be_read(tc, capsys):
    tc.client.failure = ScenarioError("the disk is gone")
    tc.workbench_lines()
    assert capsys.readouterr().out == "(the workbench's requests could not be read: the disk is gone)\n"


def test_the_workbench_steps(tc, capsys, monkeypatch):
    h = tc.client.history
    now = 1_000_000.0  # whole seconds: 121 and 120 s ago are exact
    monkeypatch.setattr(time, "time", lambda: now)
    rows = [("r1", "model", "success", 2.0, "Cats", "", now), ("r2", "upload", "success", 0.25, "Cats", "", now),
            ("r3", "upload", "success", None, "Cats", "", now),
            ("r4", "upload", "unknown", None, "Cats", "training image a.png", now),
            ("r5", "model", "sending", None, "Dogs", "", now - 121),
            ("r6", "upload", "sending", None, "Dogs", "training image b.png", now - 120),
            ("r7", "model", "failure", None, "Eels", "", now - 500)]
    for rid, kind, status, cost, name, prompt, updated in rows:
        h.record(JobRecord(rid, backend_id="backend_1", kind=kind, status=status, cost=cost, model_name=name,
                           prompt=prompt, created_at=updated, updated_at=updated))
    h.record(JobRecord("r8", backend_id="backend_2", kind="model", status="success", model_name="X", created_at=now))
    TrainingCommands._workbench_steps(tc.client)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "models created: 1 · training images uploaded: 2 (2.25 CU)"
    assert sorted(lines[1:]) == sorted([
        'uploading a.png of Cats: the answer was lost, it may exist (unknown); the next %scenario train "Cats" looks '
        "for it on the model's training images and settles it",
        'creating the model of Dogs: the answer was lost, it may exist (unknown); the next %scenario train "Dogs" '
        'looks for it by name and settles it'])


def test_the_workbench_steps_without_a_price_and_at_most_five_lost(tc, capsys):
    h = tc.client.history
    h.record(JobRecord("r0", backend_id="backend_1", kind="upload", status="success", model_name="Cats",
                       created_at=1.0))
    for i in range(7):
        h.record(JobRecord(f"r{i + 1}", backend_id="backend_1", kind="upload", status="unknown", model_name="Cats",
                           prompt=f"training image {i}.png", created_at=2.0 + i))
    h.record(JobRecord("s1", backend_id="backend_1", kind="upload", status="sending", model_name="Cats",
                       prompt="training image old.png", created_at=20.0, updated_at=0.0))
    TrainingCommands._workbench_steps(tc.client)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "models created: 0 · training images uploaded: 1 (Scenario names no price for either)"
    assert len(lines) == 6


def test_the_workbench_steps_say_nothing_when_unreadable_or_empty(tc, capsys, monkeypatch):
    TrainingCommands._workbench_steps(tc.client)
    assert capsys.readouterr().out == ""

    def broken(*args, **kwargs):
        raise ScenarioError("unreadable")

    monkeypatch.setattr(tc.client.history, "workbench", broken)
    TrainingCommands._workbench_steps(tc.client)
    assert capsys.readouterr().out == ""


def test_a_handle_shows_itself_as_is_when_ended_and_live_until_then(monkeypatch):
    import IPython.display

    from scenario_nb import _display
    calls: list = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: calls.append(("display", a, k)))
    monkeypatch.setattr(_display, "show_training", lambda t, wait: calls.append(("live", t, wait)))
    ended = Training(model_id="m", name="n", type="flux.1-lora", status="trained")
    data, metadata = _display.training_bundle(ended)
    assert ended._repr_mimebundle_() == (data, metadata)
    ended._ipython_display_()
    assert calls == [("display", (data,), {"raw": True, "metadata": metadata})]
    live = handle(status="training")
    live._ipython_display_()
    assert calls[-1] == ("live", live, False)


def test_apply_model_compares_the_progress_it_had_rounded_alike():
    t = handle(status="training")
    seen = {"status": "training", "trainingProgress": {"stage": "running-train", "progress": 0.6001}}
    assert t._apply_model(seen)
    assert not t._apply_model(seen)  # the same reading again: nothing shown changed


def test_apply_model_reads_a_first_1_with_time_left_as_1_percent():
    t = handle(status="training")
    t._apply_model({"trainingProgress": {"stage": "running-train", "progress": 1, "remainingTimeMs": 600_000}})
    assert t.progress == 0.01 and t._percent


def test_a_failure_without_an_error_says_no_reason_was_given():
    t = handle(status="failed")
    t._finish()
    assert t.exception.error == "" and str(t.exception) == "the training of Potions (model_1) failed: no reason given"


def test_a_wrong_option_names_its_subcommand(tc):
    for command, words in ((tc.cmd_training, ["--bogus"]), (tc.cmd_train, ["Cats", "--bogus"])):
        with pytest.raises(UsageError) as caught:
            command(words)
        name = "training" if command == tc.cmd_training else "train"
        assert str(caught.value) == f"%scenario {name}: unrecognized arguments: --bogus"
    assert tc.client.calls == []
