"""Tests written to kill mutants that mutmut planted in the training follower (`scenario_nb/_engine/_trainings.py`;
the run, the figures and the mutants that cannot be killed: tests/mutants-equivalent.md).

In-process and fast: a `TrainingFollower` with a real ledger and history, the poll lane run by hand, a scripted
transport and a clock the test moves (the module's `time` swapped for it: no sleeping). Checked by effect: the
requests sent, the tasks scheduled (when), the rows the history holds, the handle's state.
"""

from __future__ import annotations

import pytest

from scenario_nb._engine import _trainings
from scenario_nb._engine._live import Settings
from scenario_nb._engine._trainings import TrainingFollower
from scenario_nb._errors import (APIConnectionError, BadRequestError, NotFoundError, PermissionDeniedError,
                                RateLimitError, ServerError, StorageError, TrainingFailedError)
from scenario_nb._history import TrainingRecord
from scenario_nb._training import CANCEL_WORDS, Training

from ledger_parts import BACKEND


class Clock:
    def __init__(self, wall: float = 2_000_000.0) -> None:
        self.wall = wall

    def time(self) -> float:
        return self.wall


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_trainings, "time", c)
    return c


class Lanes:
    def __init__(self) -> None:
        self.tasks: list = []  # (training, delay, task, token)

    def schedule(self, handle, delay, task, token=None, *, lane="poll"):
        assert lane == "poll"
        self.tasks.append((handle, delay, task, token))

    def run(self, index: int = 0):
        handle, _, task, token = self.tasks.pop(index)
        task(handle, token)

    def delays(self) -> list:
        return [(t.model_id, d) for t, d, _, _ in self.tasks]


class Backoff:
    def __init__(self) -> None:
        self.asked: list = []

    def delay(self, attempt, retry_after=None, *, base=None, cap=None):
        self.asked.append((attempt, retry_after, base, cap))
        return 200.0 + attempt


class Http:
    """Requests answered from a script per (method, path) (a dict answered, an exception raised); each request
    logged with what the history held for the training when it arrived."""

    def __init__(self, history) -> None:
        self.history = history
        self.answers: dict = {}
        self.sent: list = []
        self.bodies: list = []
        self.rows_seen: list = []
        self.backoff = Backoff()

    def answer(self, method, path, *outcomes):
        self.answers.setdefault((method, path), []).extend(outcomes)

    def request(self, method, path, json_body=None):
        self.sent.append((method, path))
        self.bodies.append(json_body)
        row = self.history.training(path.split("/")[2]) if path.startswith("/models/") else None
        self.rows_seen.append(row and row.status)
        outcome = self.answers[(method, path)].pop(0)
        if callable(outcome):  # what happens while this answer is on the wire; it returns the answer
            outcome = outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def get(self, path):
        return self.request("GET", path)


class Owner:
    base_url = "http://127.0.0.1:1/v1"


class Rig:
    def __init__(self, ledger, history) -> None:
        self.ledger, self.history = ledger, history
        self.lanes, self.http = Lanes(), Http(history)
        self.settings = Settings(floor=0.5, start_grace=120.0)
        self.owner = Owner()
        self.follower = TrainingFollower(self.owner, self.http, self.lanes, ledger, self.settings,
                                         store=lambda: None)

    def training(self, model_id="model_1", status="new", **kw) -> Training:
        return Training(self.owner, model_id=model_id, name="Cats", type="flux.1-lora", status=status,
                        parameters={"steps": 10}, **kw)

    def row(self, model_id="model_1"):
        return self.history.training(model_id)

    def model(self, status, model_id="model_1", **fields):
        self.http.answer("GET", f"/models/{model_id}", {"model": {"id": model_id, "status": status, **fields}})


@pytest.fixture
def rig(ledger, history, clock):
    return Rig(ledger, history)


TRAIN = ("PUT", "/models/model_1/train")
GET = ("GET", "/models/model_1")


# -- start_training -----------------------------------------------------------------------------------------------

def test_a_start_is_recorded_unknown_before_it_is_sent_once_then_followed(rig, clock):
    t = rig.training()
    rig.http.answer(*TRAIN, {"job": {"jobId": "job_1"}, "creativeUnitsCost": "12",
                             "model": {"status": "training", "trainingProgress": {"stage": "pending"}}})
    rig.follower.start_training(t, {"steps": 10})
    assert rig.http.sent == [TRAIN] and rig.http.bodies == [{"parameters": {"steps": 10}}]
    assert rig.http.rows_seen == ["unknown"]  # written ahead
    assert (t.status, t.stage, t.job_id, t.cost, t.start_sent_at) == ("training", "pending", "job_1", 12.0,
                                                                      clock.wall)
    row = rig.row()
    assert (row.status, row.job_id, row.cost, row.start_sent_at) == ("training", "job_1", 12.0, clock.wall)
    assert rig.follower.live_training("model_1") is t and rig.follower.trainings_in_flight() == [t]
    assert rig.lanes.delays() == [("model_1", 0.0)]


def test_a_start_answered_with_the_guides_shape_is_read_too(rig):
    t = rig.training(job_id="job_0", cost=4.0)
    rig.http.answer(*TRAIN, {"job": {"id": "job_2"}, "creativeUnits": {"estimatedCreativeUnits": 7}})
    rig.follower.start_training(t, {})
    assert (t.job_id, t.cost, t.status, t.stage) == ("job_2", 7.0, "training", "starting")


def test_a_start_answered_without_job_or_cost_keeps_the_handles(rig):
    t = rig.training(job_id="job_0", cost=4.0)
    rig.http.answer(*TRAIN, {"creativeUnitsCost": "odd"})
    rig.follower.start_training(t, {})
    assert (t.job_id, t.cost, t.status) == ("job_0", 4.0, "training")


@pytest.mark.parametrize("lost", [APIConnectionError("reset"), ServerError("busy")])
def test_a_start_whose_answer_was_lost_is_followed_not_sent_again(rig, lost):
    t = rig.training()
    rig.http.answer(*TRAIN, lost)
    rig.follower.start_training(t, {})
    assert rig.http.sent == [TRAIN]
    assert t.note == f"the answer to starting the training was lost ({lost}); following the model"
    assert (t.status, rig.row().status) == ("unknown", "unknown")
    assert rig.follower.live_training("model_1") is t and rig.lanes.delays() == [("model_1", 0.0)]


@pytest.mark.parametrize("refusal", [BadRequestError("no"), RateLimitError("slow")])
def test_a_refused_start_raises_and_started_nothing(rig, refusal):
    t = rig.training()
    rig.http.answer(*TRAIN, refusal)
    with pytest.raises(type(refusal)):
        rig.follower.start_training(t, {})
    assert (t.status, t.start_sent_at) == ("new", None) and rig.lanes.tasks == []


class UnwritableHistory:
    def record_training(self, row):
        raise StorageError("disk full")

    def training(self, model_id):
        return None


def test_a_start_that_cannot_be_recorded_is_never_sent(live):
    from scenario_nb._engine._ledger import Ledger
    ledger = Ledger(lambda: UnwritableHistory(), live, backend_id=BACKEND, base_url="u")
    http = Http(UnwritableHistory())
    follower = TrainingFollower(Owner(), http, Lanes(), ledger, Settings(), store=lambda: None)
    t = Training(Owner(), model_id="model_1", name="Cats", type="x")
    with pytest.raises(StorageError):
        follower.start_training(t, {})
    assert http.sent == [] and (t.status, t.start_sent_at) == ("new", None)


# -- wait_for_slot, resume_training, _start_again ------------------------------------------------------------------

def test_a_start_refused_for_a_slot_waits_recorded_and_backs_off_more_each_time(rig):
    t = rig.training()
    seen = []
    t.on_update(lambda x: seen.append(x.status))
    seen.clear()
    rig.follower.wait_for_slot(t, RateLimitError("too many", retry_after=30.0))
    assert t.status == "waiting" and t.stage == "" and seen == ["waiting"]
    assert t.note == ('waiting for a training slot (too many); it starts by itself when one frees, or now with '
                      '%scenario train resume "Cats"')
    assert rig.row().status == "waiting" and rig.follower.live_training("model_1") is t
    assert rig.http.backoff.asked == [(0, 30.0, 2.0, 60.0)] and rig.lanes.delays() == [("model_1", 200.0)]
    rig.follower.wait_for_slot(t, RateLimitError("too many"))
    assert rig.http.backoff.asked[-1] == (1, None, 2.0, 60.0)


def test_only_a_waiting_training_is_resumed(rig):
    t = rig.training(status="training")
    rig.follower.resume_training(t)
    assert rig.lanes.tasks == []
    t._set(status="waiting")
    rig.follower.resume_training(t)
    assert rig.lanes.delays() == [("model_1", 0.0)]


def waiting(rig) -> Training:
    t = rig.training()
    rig.follower.wait_for_slot(t, RateLimitError("too many"))
    rig.lanes.tasks.clear()
    rig.http.backoff.asked.clear()
    return t


def test_a_waiting_training_is_started_again_at_its_turn(rig):
    t = waiting(rig)
    rig.model("new")
    rig.http.answer(*TRAIN, {"job": {"jobId": "job_1"}})
    rig.follower.resume_training(t)
    rig.lanes.run()
    assert rig.http.sent == [GET, TRAIN] and t.status == "training"
    assert rig.http.bodies[-1] == {"parameters": {"steps": 10}}


def test_a_waiting_training_started_elsewhere_is_followed_from_its_model(rig):
    t = waiting(rig)
    rig.model("training", trainingProgress={"stage": "running-train", "progress": 0.5})
    rig.model("training", trainingProgress={"stage": "running-train", "progress": 0.5})
    rig.follower.resume_training(t)
    rig.lanes.run()
    assert rig.http.sent == [GET, GET] and (t.status, t.stage) == ("training", "running-train")


def test_a_waiting_training_whose_model_cannot_be_read_tries_again_later(rig, log_lines):
    t = waiting(rig)
    rig.http.answer(*GET, ServerError("busy"))
    rig.follower.resume_training(t)
    rig.lanes.run()
    assert rig.http.backoff.asked == [(2, None, 2.0, 60.0)] and rig.lanes.delays() == [("model_1", 202.0)]
    assert log_lines == [f"reading waiting training model_1 failed ({ServerError('busy')}); trying again"]
    assert t.status == "waiting"


def test_a_waiting_training_refused_again_for_a_slot_keeps_waiting(rig):
    t = waiting(rig)
    rig.model("new")
    rig.http.answer(*TRAIN, RateLimitError("still too many"))
    rig.follower.resume_training(t)
    rig.lanes.run()
    assert t.status == "waiting" and "still too many" in t.note
    assert rig.http.backoff.asked == [(1, None, 2.0, 60.0)]  # the second refusal in a row


@pytest.mark.parametrize("refusal", [BadRequestError("bad"), StorageError("disk")])
def test_a_waiting_training_refused_otherwise_ends_not_started(rig, refusal):
    t = waiting(rig)
    other = waiting_other(rig)
    rig.model("new")
    rig.http.answer(*TRAIN, refusal)
    rig.follower.resume_training(t)
    rig.lanes.run(-1)
    assert t.done and t.status == "not-started"
    if isinstance(refusal, BadRequestError):
        assert t.error == (f"Scenario refused to start the training: {refusal}; nothing was charged for it "
                           f"(its model is kept)")
        assert rig.row().status == "not-started"
    assert ("model_2", 0.0) in rig.lanes.delays()  # the other waiting one is tried at once
    assert other.status == "waiting"


def waiting_other(rig) -> Training:
    other = rig.training("model_2")
    rig.follower.wait_for_slot(other, RateLimitError("too many"))
    rig.lanes.tasks.clear()
    return other


def test_one_start_on_the_wire_at_a_time_whoever_woke_it(rig):
    t = waiting(rig)
    rig.follower._starting.add("model_1")
    rig.follower._poll(t)
    assert rig.http.sent == []
    rig.follower._starting.discard("model_1")
    rig.model("new")
    rig.http.answer(*TRAIN, ServerError("lost"))
    rig.follower._poll(t)
    assert "model_1" not in rig.follower._starting and rig.http.sent == [GET, TRAIN]


def test_the_start_mark_is_cleared_even_when_starting_fails(rig):
    t = waiting(rig)
    rig.http.answer(*GET, ValueError("odd"))
    with pytest.raises(ValueError):
        rig.follower._poll(t)
    assert "model_1" not in rig.follower._starting


# -- _take, _never_started ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, shown", [("unknown", "unknown"), ("training", "training"), ("new", "new"),
                                           ("waiting", "new")])
def test_right_after_a_start_new_proves_nothing(rig, status, shown):
    t = rig.training(status=status)
    rig.follower._take(t, {"status": "new"})
    assert t.status == shown
    rig.follower._take(t, {"status": "trained"})
    assert t.status == "trained"


def test_take_says_whether_anything_shown_changed(rig):
    t = rig.training(status="training")
    assert rig.follower._take(t, {"status": "new"}) is False
    assert rig.follower._take(t, {"status": "failed"}) is True


@pytest.mark.parametrize("status, model, sent_ago, job, never", [
    ("new", "new", 0, None, True),
    ("new", "training", 500, None, False),
    ("unknown", "new", 120, None, True),  # exactly the grace
    ("unknown", "new", 119.5, None, False),
    ("unknown", "new", 500, "job_1", False),
    ("training", "new", 500, None, False),
    ("waiting", "new", 500, None, False),
])
def test_a_training_never_started_is_proven_so(rig, clock, status, model, sent_ago, job, never):
    t = rig.training(status=status)
    t._set(start_sent_at=clock.wall - sent_ago)
    assert rig.follower._never_started(t, {"status": model, "jobId": job}) is never


def test_without_a_send_time_the_grace_counts_from_the_creation(rig, clock):
    t = rig.training(status="unknown")
    t._set(created_at=clock.wall - 121)
    assert rig.follower._never_started(t, {"status": "new"}) is True
    t._set(created_at=clock.wall - 100)
    assert rig.follower._never_started(t, {"status": "new"}) is False


# -- _delay ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("remaining, delay", [(100.0, 10.0), (20.0, 4.0), (1.0, 0.5), (50.0, 10.0)])
def test_a_training_is_polled_at_a_fifth_of_its_remaining_time_within_bounds(rig, remaining, delay):
    t = rig.training(status="training")
    t._apply_model({"trainingProgress": {"stage": "running-train", "remainingTimeMs": remaining * 1000}})
    assert rig.follower._delay(t) == pytest.approx(delay, abs=0.01)


@pytest.mark.parametrize("age, delay", [(30.0, 3.0), (1.0, 0.5), (500.0, 10.0)])
def test_without_a_remaining_time_a_tenth_of_its_age(rig, clock, age, delay):
    t = rig.training(status="training")
    t._set(created_at=clock.wall - age)
    assert rig.follower._delay(t) == pytest.approx(delay)


# -- _poll ---------------------------------------------------------------------------------------------------------

def followed(rig, status="training", **kw) -> Training:
    t = rig.training(status=status, **kw)
    rig.follower.follow_training(t)
    rig.lanes.tasks.clear()
    return t


def test_a_training_in_progress_is_recorded_when_it_changes_and_polled_at_its_delay(rig, clock):
    t = followed(rig)
    t._set(created_at=clock.wall - 20)
    seen = []
    t.on_update(lambda x: seen.append(x.stage))
    seen.clear()
    rig.model("training", trainingProgress={"stage": "running-train", "progress": 0.25})
    rig.follower._poll(t)
    assert rig.row().stage == "running-train" and seen == ["running-train"]
    assert rig.lanes.delays() == [("model_1", 2.0)]
    updated = rig.row().updated_at
    rig.model("training", trainingProgress={"stage": "running-train", "progress": 0.25})
    rig.follower._poll(t)
    assert rig.row().updated_at == updated  # nothing changed: not written again
    assert seen == ["running-train"] * 2  # shown all the same


def test_a_stale_poll_or_a_done_training_asks_nothing(rig):
    t = followed(rig)
    rig.follower._schedule(t, 1.0)
    rig.follower._schedule(t, 1.0)
    rig.lanes.run(0)
    assert rig.http.sent == []
    done = rig.training("model_2", status="training")
    done._set(finished_at=1.0)
    rig.follower._poll(done)
    assert rig.http.sent == []


@pytest.mark.parametrize("was, now", [("training", "failed"), ("unknown", "not-started")])
def test_a_model_the_api_no_longer_knows_ends_the_training(rig, was, now):
    t = followed(rig, status=was)
    rig.http.answer(*GET, NotFoundError("gone"))
    rig.follower._poll(t)
    assert t.done and (t.status, t.error, t.hint) == (
        now, "the API no longer knows this model", "it may have been deleted, or belong to a sandbox that stopped")
    assert rig.row().status == now and rig.lanes.tasks == []


def test_a_failed_poll_backs_off_more_each_time_then_forgets_its_failures(rig, log_lines):
    t = followed(rig)
    for _ in range(8):
        rig.http.answer(*GET, RateLimitError("slow", retry_after=3.0))
        rig.follower._poll(t)
    assert [a[0] for a in rig.http.backoff.asked] == [1, 2, 3, 4, 5, 6, 6, 6]
    assert rig.http.backoff.asked[0] == (1, 3.0, 0.5, 10.0)
    assert rig.lanes.delays()[-1] == ("model_1", 206.0)
    assert log_lines[0] == f"poll of training model_1 failed ({RateLimitError('slow')}); trying again"
    rig.model("training")
    rig.follower._poll(t)
    rig.http.answer(*GET, ServerError("busy"))
    rig.follower._poll(t)
    assert rig.http.backoff.asked[-1] == (1, None, 0.5, 10.0)
    assert not t.done


def test_a_training_never_started_ends_not_started_with_its_reason(rig, clock):
    t = followed(rig, status="unknown")
    t._set(start_sent_at=clock.wall - 500, stage="starting")
    rig.model("new")
    rig.follower._poll(t)
    assert t.done and (t.status, t.stage) == ("not-started", "")
    assert t.error == ("the training was never started on the server; nothing was charged for it (its model is "
                       "kept: training the same name again reuses it)")
    assert rig.row().status == "not-started"


def test_a_training_never_started_keeps_an_error_it_had(rig, clock):
    t = followed(rig, status="new", error="refused before")
    rig.model("new")
    rig.follower._poll(t)
    assert (t.status, t.error) == ("not-started", "refused before")


@pytest.mark.parametrize("status", ["failed", "training-canceled"])
def test_a_failed_training_reads_its_jobs_error_and_hint(rig, status):
    t = followed(rig, job_id="job_1")
    rig.model(status)
    rig.http.answer("GET", "/jobs/job_1", {"job": {"metadata": {"error": "oom", "hint": "fewer images"}}})
    rig.follower._poll(t)
    assert t.done and (t.error, t.hint) == ("oom", "fewer images")
    assert isinstance(t.exception, TrainingFailedError)
    row = rig.row()
    assert (row.status, row.error, row.hint) == (status, "oom", "fewer images")


def test_a_failed_training_keeps_its_error_when_the_job_has_none_or_cannot_be_read(rig, log_lines):
    t = followed(rig, job_id="job_1", error="before")
    t._set(hint="h")
    rig.model("failed")
    rig.http.answer("GET", "/jobs/job_1", {"job": {}})
    rig.follower._poll(t)
    assert (t.error, t.hint) == ("before", "h")
    t2 = followed(rig, model_id="model_2", job_id="job_2")
    rig.model("failed", model_id="model_2")
    rig.http.answer("GET", "/jobs/job_2", ServerError("busy"))
    rig.follower._poll(t2)
    assert t2.done and log_lines == [
        f"reading the job of failed training model_2 failed ({ServerError('busy')})"]


def test_a_failed_training_without_a_job_reads_none(rig):
    t = followed(rig)
    rig.model("failed")
    rig.follower._poll(t)
    assert rig.http.sent == [GET] and t.done


def test_a_trained_model_ends_the_training(rig):
    t = followed(rig, job_id="job_1")
    rig.model("trained")
    rig.follower._poll(t)
    assert t.done and t.ok and rig.row().status == "trained" and rig.http.sent == [GET]


# -- _end ---------------------------------------------------------------------------------------------------------

def test_an_ended_training_is_recorded_shown_released_and_frees_a_slot(rig):
    t = followed(rig)
    w1, w2 = waiting_other(rig), rig.training("model_3", status="training")
    rig.follower.follow_training(w2)
    rig.lanes.tasks.clear()
    rows, waits = [], []
    t.on_update(lambda x: (rows.append(rig.row().status), waits.append(x._done.is_set())))
    rows.clear(), waits.clear()
    t._set(status="trained")
    rig.follower._end(t)
    assert t.done and rows == ["trained"] and waits == [False] and t._done.is_set()
    assert rig.lanes.delays() == [("model_2", 0.0)]
    assert "model_1" not in rig.follower._tokens and w1.status == "waiting"
    rig.follower._poll(t, 0)  # a poll after its end asks nothing
    assert rig.http.sent == []


def test_an_ended_training_forgets_its_refusals(rig):
    t = rig.training()
    rig.follower.wait_for_slot(t, RateLimitError("x"))
    rig.follower._end(t)
    t2 = rig.training()
    rig.follower.wait_for_slot(t2, RateLimitError("x"))
    assert rig.http.backoff.asked[-1][0] == 0


# -- cancel_training ----------------------------------------------------------------------------------------------

CANCEL = ("POST", "/models/model_1/train/action")


def test_a_cancel_is_asked_once_applied_and_polled_at_once(rig):
    t = followed(rig)
    rig.http.answer(*CANCEL, {"model": {"status": "training-canceled"}})
    seen = []
    t.on_update(lambda x: seen.append(x.note))
    seen.clear()
    assert rig.follower.cancel_training(t) == "requested"
    assert rig.http.bodies == [{"action": "cancel"}] and t.status == "training-canceled"
    assert t.note == CANCEL_WORDS["requested"] and seen == [CANCEL_WORDS["requested"]]
    assert rig.lanes.delays() == [("model_1", 0.0)]


def test_a_poll_answer_read_before_a_cancel_never_undoes_the_training_s_end(rig):
    """A poll's answer that left the server before a cancel, and arrives after the poll the cancel woke has ended
    the training, is stale: it must not make the finished training `training` again, in the handle or the row
    (seen in the suite: the row said `training` after `wait()` raised `training-canceled`)."""
    t = rig.follower.follow_training(rig.training(status="training"))
    first = rig.lanes.tasks.pop(0)  # its poll, run by hand below

    def meanwhile():
        rig.http.answer(*CANCEL, {"model": {"status": "training"}})
        assert rig.follower.cancel_training(t) == "requested"
        rig.model("training-canceled", jobId="job_t")
        rig.http.answer("GET", "/jobs/job_t", {"job": {"metadata": {"error": "canceled by you"}}})
        rig.lanes.run()  # the poll the cancel woke ends it
        assert t.done and rig.row().status == "training-canceled"
        return {"model": {"id": "model_1", "status": "training", "jobId": "job_t"}}

    rig.http.answer("GET", "/models/model_1", meanwhile)
    first[2](first[0], first[3])
    assert t.status == "training-canceled" and rig.row().status == "training-canceled"
    assert rig.lanes.tasks == []  # nothing polls a finished training


def test_a_poll_answer_older_than_a_poll_woken_since_is_dropped(rig):
    """Not ended yet: the poll a cancel woke read a later stage; the older answer arriving after it must not take
    the handle and the row back, nor schedule a second poll beside the one already scheduled."""
    t = rig.follower.follow_training(rig.training(status="training"))
    first = rig.lanes.tasks.pop(0)

    def meanwhile():
        rig.http.answer(*CANCEL, {"model": {"status": "training"}})
        assert rig.follower.cancel_training(t) == "requested"
        rig.model("training", trainingProgress={"stage": "training", "progress": 0.5})
        rig.lanes.run()  # the poll the cancel woke: it reads the later stage and schedules the next
        return {"model": {"id": "model_1", "status": "training",
                          "trainingProgress": {"stage": "captioning", "progress": 0.2}}}

    rig.http.answer("GET", "/models/model_1", meanwhile)
    first[2](first[0], first[3])
    assert (t.stage, t.progress) == ("training", 0.5) and rig.row().stage == "training"
    assert len(rig.lanes.tasks) == 1  # the next poll the later answer scheduled, and no other


def test_a_cancel_answered_without_a_model_still_requested(rig):
    t = followed(rig)
    rig.http.answer(*CANCEL, {"model": "odd"})
    assert rig.follower.cancel_training(t) == "requested" and t.status == "training"


def test_a_refused_cancel_says_why(rig):
    t = followed(rig)
    rig.http.answer(*CANCEL, BadRequestError("already done"))
    assert rig.follower.cancel_training(t) == "refused"
    assert t.note == f"{CANCEL_WORDS['refused']}: already done" and rig.lanes.delays() == [("model_1", 0.0)]


@pytest.mark.parametrize("exc", [RateLimitError("slow"), APIConnectionError("reset"), ServerError("busy")])
def test_a_cancel_that_cannot_be_asked_is_unavailable(rig, exc):
    t = followed(rig)
    rig.http.answer(*CANCEL, exc)
    assert rig.follower.cancel_training(t) == "unavailable" and t.note == CANCEL_WORDS["unavailable"]


def test_a_cancel_of_a_finished_training_asks_nothing(rig):
    t = rig.training(status="trained")
    t._set(finished_at=1.0)
    assert rig.follower.cancel_training(t) == "finished"
    assert rig.http.sent == [] and rig.lanes.tasks == [] and t.note == CANCEL_WORDS["finished"]


def test_a_cancel_that_ended_the_training_schedules_no_poll(rig):
    t = followed(rig)

    class Ending(dict):
        pass
    rig.http.answer(*CANCEL, {"model": {"status": "training-canceled"}})
    orig = t._apply_model

    def apply_and_end(model):
        changed = orig(model)
        t._set(finished_at=1.0)
        return changed
    t._apply_model = apply_and_end
    assert rig.follower.cancel_training(t) == "requested" and rig.lanes.tasks == []


def test_the_training_model_is_read_from_the_api(rig):
    t = rig.training()
    rig.model("trained", name="Cats", type="flux.1-lora")
    model = rig.follower.training_model(t)
    assert model.id == "model_1" and rig.http.sent == [GET]


# -- finished_training, reattach_training, recover_trainings -------------------------------------------------------

def a_row(rig, model_id="model_1", status="training", **kw):
    row = TrainingRecord(model_id, backend_id=BACKEND, name="Cats", type="flux.1-lora", status=status,
                         created_at=5.0, **kw)
    rig.history.record_training(row)
    return row


def test_a_finished_training_is_rebuilt_done_without_a_request(rig, clock):
    row = a_row(rig, status="trained", finished_at=9.0, updated_at=8.0)
    t = rig.follower.finished_training(row)
    assert t.done and t._done.is_set() and t.finished_at == 9.0 and t._owner is rig.owner
    assert (t.model_id, t.name, t.status) == ("model_1", "Cats", "trained") and t.ok
    assert rig.follower.finished_training(TrainingRecord("m", status="trained", updated_at=8.0)).finished_at == 8.0
    assert rig.follower.finished_training(TrainingRecord("m", status="trained")).finished_at == clock.wall
    assert rig.http.sent == []


def test_reattaching_a_followed_training_returns_its_handle(rig):
    t = followed(rig)
    assert rig.follower.reattach_training("model_1") is t and rig.http.sent == []


def test_a_training_is_reattached_from_its_row_and_model_and_polled_at_once(rig):
    a_row(rig, job_id="job_1")
    rig.model("training", trainingProgress={"stage": "running-train"})
    rig.model("training", trainingProgress={"stage": "running-train"})
    t = rig.follower.reattach_training("model_1")
    assert rig.http.sent == [GET, GET] and (t.job_id, t.stage, t.status) == ("job_1", "running-train", "training")
    assert rig.follower.live_training("model_1") is t and t._owner is rig.owner
    assert rig.lanes.delays() and rig.lanes.delays()[0][0] == "model_1"


def test_a_training_reattached_after_its_end_is_done_at_once(rig):
    rig.model("trained")
    rig.model("trained")
    t = rig.follower.reattach_training("model_1")
    assert t.done and t.ok and t.name == "model_1" and rig.lanes.tasks == []


def test_a_training_reattached_with_an_unreadable_history_is_built_from_its_model(live, clock):
    from scenario_nb._engine._ledger import Ledger

    class NoHistory(UnwritableHistory):
        def training(self, model_id):
            raise StorageError("locked")
    ledger = Ledger(lambda: NoHistory(), live, backend_id=BACKEND, base_url="u")
    http = Http(UnwritableHistory())
    follower = TrainingFollower(Owner(), http, Lanes(), ledger, Settings(), store=lambda: None)
    http.answer("GET", "/models/model_1", *[{"model": {"id": "model_1", "status": "trained", "name": "Dogs"}}] * 2)
    assert follower.reattach_training("model_1").name == "Dogs"


def test_recovery_follows_every_unfinished_training_of_this_backend_once(rig, log_lines):
    a_row(rig, "model_1")
    a_row(rig, "model_2", status="unknown")
    a_row(rig, "model_3", status="training")
    a_row(rig, "model_p", status="preparing")
    a_row(rig, "model_t", status="trained")
    rig.history.record_training(TrainingRecord("model_x", backend_id="other", status="training"))
    rig.model("training")
    rig.model("training")
    rig.http.answer("GET", "/models/model_2", NotFoundError("gone"))
    rig.http.answer("GET", "/models/model_3", ServerError("busy"))
    found = rig.follower.recover_trainings()
    assert sorted(t.model_id for t in found) == ["model_1", "model_2"]
    [gone] = [t for t in found if t.model_id == "model_2"]
    assert gone.done and (gone.status, gone.error, gone.hint) == (
        "not-started", "the API no longer knows this model",
        "it may have been deleted, or belong to a sandbox that stopped")
    assert rig.row("model_2").status == "not-started"
    assert log_lines[-1] == f"could not follow on training model_3: {ServerError('busy')}"
    assert rig.follower.recover_trainings() == []


def test_a_recovered_training_the_api_no_longer_knows_failed_if_it_was_training(rig):
    a_row(rig, "model_1", status="training")
    rig.http.answer(*GET, NotFoundError("gone"))
    [t] = rig.follower.recover_trainings()
    assert t.status == "failed"


def test_recovery_with_an_unreadable_history_follows_nothing(live):
    from scenario_nb._engine._ledger import Ledger

    class NoHistory:
        def unfinished_trainings(self, backend_id):
            raise StorageError("locked")
    ledger = Ledger(lambda: NoHistory(), live, backend_id=BACKEND, base_url="u")
    follower = TrainingFollower(Owner(), Http(None), Lanes(), ledger, Settings(), store=lambda: None)
    assert follower.recover_trainings() == []
    assert follower.recover_trainings() == []


def test_a_permission_error_on_recovery_is_logged_not_raised(rig, log_lines):
    a_row(rig, "model_1")
    rig.http.answer(*GET, PermissionDeniedError("not yours"))
    assert rig.follower.recover_trainings() == []


def test_a_reattached_training_scheduled_anew_meanwhile_is_polled_by_that_schedule_only(rig):
    """The poll `_poll_now` makes counts only while its token is the newest: a poll scheduled between its token
    and its ask (another thread) takes over, and this one asks nothing."""
    class Lock:
        def __init__(self) -> None:
            self.entered = 0

        def __enter__(self):
            self.entered += 1
            if self.entered == 2:  # between the token and the ask: a newer poll is scheduled
                rig.follower._tokens["model_1"] = 10_000
            return self

        def __exit__(self, *exc):
            return False
    rig.follower._lock = Lock()
    t = rig.training(status="training")
    rig.follower._poll_now(t)
    assert rig.http.sent == []


def test_a_training_waiting_for_a_slot_shows_no_stage(rig):
    t = rig.training()
    t._set(stage="uploading")
    rig.follower.wait_for_slot(t, RateLimitError("too many"))
    assert t.stage == "" and rig.row().stage == ""


def test_a_waiting_training_started_elsewhere_is_unknown_until_its_model_shows_it(rig):
    t = waiting(rig)
    rig.model("training")  # read by the turn: not `new`, so started elsewhere (or gone)
    rig.model("new")  # read by the poll just after: `new` right after a start proves nothing
    rig.follower.resume_training(t)
    rig.lanes.run()
    assert t.status == "unknown" and not t.done


def test_a_rebuilt_trainings_images_are_found_in_the_store(rig, tmp_path):
    class Store:
        def find(self, asset_id):
            return tmp_path / f"{asset_id}.png"
    follower = TrainingFollower(rig.owner, rig.http, rig.lanes, rig.ledger, rig.settings, store=lambda: Store())
    row = TrainingRecord("model_1", status="trained", name="Cats",
                         images=[{"name": "a.png", "asset_id": "asset_1", "caption": "red"}])
    [image] = follower.finished_training(row).images
    assert (image.name, image.asset_id, image.caption, image.path) == ("a.png", "asset_1", "red",
                                                                       tmp_path / "asset_1.png")


def test_a_waiting_training_is_marked_starting_while_its_start_is_sent(rig):
    t = waiting(rig)
    seen = []
    rig.follower._start_again = lambda training: seen.append(set(rig.follower._starting))
    rig.follower._poll(t)
    assert seen == [{"model_1"}] and rig.follower._starting == set()
