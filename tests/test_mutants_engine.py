"""Tests written to kill mutants that mutmut planted in the engine (`scenario_nb/_engine/`) and that the rest of
the suite let live (the run, the figures and the mutants that cannot be killed: tests/mutants-equivalent.md).

In-process and fast (a mutant is re-run against every test that reaches it): the engine's parts are driven
directly, and checked by effect: the rows the history holds, the requests a part sends, what the log says.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from scenario_nb._engine._ledger import Ledger
from scenario_nb._engine._live import LiveRequests
from scenario_nb._errors import JobFailedError, StorageError
from scenario_nb._generation import Generation, Output
from scenario_nb._history import History
from scenario_nb._training import Training, TrainingImage

BACKEND, URL = "backend-1", "http://127.0.0.1:1/v1"


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "h.sqlite")
    yield h
    h.close()


@pytest.fixture
def live():
    return LiveRequests()


@pytest.fixture
def ledger(history, live):
    return Ledger(lambda: history, live, backend_id=BACKEND, base_url=URL)


class LogLines(logging.Handler):
    """The package's log lines, as formatted (its logger does not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler = LogLines()
    logger = logging.getLogger("scenario_nb")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


class BrokenHistory:
    """A history whose every write fails as a full disk would."""

    def record(self, row):
        raise StorageError("disk full")

    record_training = record


def a_finished_handle(tmp_path: Path) -> Generation:
    """A handle with every column the ledger writes set to something other than its default."""
    handle = Generation(model_id="model_lora", prompt="a lighthouse", inputs={"numOutputs": 2, "seed": 7},
                        base_model_id="model_base", source="panel", kind="workflow", model_name="My LoRA",
                        request_id="req_1", job_id="job_1", cost=12.5)
    handle._set(status="success", progress=1.0, text="a caption", hint="try a seed", error="one odd thing",
                outputs=[Output("asset_1", "image", "image/png", tmp_path / "a.png"),
                         Output("asset_2", "image", "image/jpeg", tmp_path / "b.jpg")],
                submitted_at=1000.0, sent_at=1001.0, finished_at=1010.0)
    return handle


# -- _engine/_ledger.py ------------------------------------------------------------------------------------------
def test_a_recorded_handle_is_its_row_column_by_column(ledger, history, tmp_path):
    """Every column of the row is the handle's (or the ledger's backend), none left at its default."""
    handle = a_finished_handle(tmp_path)
    before = time.time()
    ledger.record(handle)
    row = history.get_request("req_1")
    assert row is not None and history.get("job_1") == row
    assert (row.request_id, row.job_id, row.backend_id, row.backend_url) == ("req_1", "job_1", BACKEND, URL)
    assert (row.model_id, row.base_model_id, row.model_name) == ("model_lora", "model_base", "My LoRA")
    assert row.prompt == "a lighthouse" and row.inputs == {"numOutputs": 2, "seed": 7, "prompt": "a lighthouse"}
    assert row.request_key == History.request_key("model_lora", "a lighthouse", row.inputs)
    assert row.request_key != History.request_key("model_base", "a lighthouse", row.inputs)
    assert (row.cost, row.status, row.progress) == (12.5, "success", 1.0)
    assert row.asset_ids == ["asset_1", "asset_2"] and row.mime_types == ["image/png", "image/jpeg"]
    assert row.files == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert (row.text, row.error, row.hint, row.source, row.kind) == (
        "a caption", "one odd thing", "try a seed", "panel", "workflow")
    assert (row.sent_at, row.created_at, row.finished_at) == (1001.0, 1000.0, 1010.0)
    assert before <= row.updated_at <= time.time()


def test_the_request_key_is_the_model_the_prompt_and_the_inputs(ledger):
    """Two requests are the same request only with the same model, prompt and inputs."""
    key = ledger.request_key(Generation(model_id="m1", prompt="a cat", inputs={"seed": 1}))
    assert key == History.request_key("m1", "a cat", {"seed": 1, "prompt": "a cat"})
    assert key != ledger.request_key(Generation(model_id="m2", prompt="a cat", inputs={"seed": 1}))
    assert key != ledger.request_key(Generation(model_id="m1", prompt="a dog", inputs={"seed": 1}))
    assert key != ledger.request_key(Generation(model_id="m1", prompt="a cat", inputs={"seed": 2}))


@pytest.mark.parametrize("error, exception, stored", [
    ("the server's reason", None, "the server's reason"),
    (None, JobFailedError("job_1", "it broke"), str(JobFailedError("job_1", "it broke"))),
    (None, None, None),
])
def test_the_error_column_is_the_handles_error_else_its_exception(ledger, history, error, exception, stored):
    handle = Generation(model_id="m", prompt="p", request_id="req_e", error=error)
    handle._set(exception=exception)
    ledger.record(handle)
    assert history.get_request("req_e").error == stored


def test_end_forgets_the_request_finishes_and_records_it(ledger, history, live):
    handle = Generation(model_id="m", prompt="p", request_id="req_2", status="queued")
    live.add(handle)
    failure = JobFailedError("job_2", "it broke")
    ledger.end(handle, failure, status="failure")
    assert live.get("req_2") is None
    assert handle.done and handle.exception is failure and handle.status == "failure"
    row = history.get_request("req_2")
    assert row.status == "failure" and row.error == str(failure) and row.finished_at == handle.finished_at


def test_end_without_recording_writes_no_row(ledger, history):
    handle = Generation(model_id="m", prompt="p", request_id="req_3")
    ledger.end(handle, None, status="canceled", record=False)
    assert handle.done and handle.status == "canceled" and history.get_request("req_3") is None


def test_mark_sets_the_status_and_records_it(ledger, history):
    handle = Generation(model_id="m", prompt="p", request_id="req_4")
    seen = []
    handle.on_update(lambda h: seen.append(h.status))
    ledger.mark(handle, "waiting")
    assert handle.status == "waiting" and history.get_request("req_4").status == "waiting" and "waiting" in seen


def test_a_history_that_cannot_be_written_before_sending_refuses_with_its_reason(live):
    ledger = Ledger(BrokenHistory, live, backend_id=BACKEND, base_url=URL)
    handle = Generation(model_id="m", prompt="p", request_id="req_5")
    with pytest.raises(StorageError) as refused:
        ledger.record(handle, before_sending=True)
    assert "disk full" in str(refused.value) and "nothing was sent" in str(refused.value)
    assert handle.note == ""


@pytest.mark.parametrize("job_id, named", [("job_6", "job_6"), (None, "req_6")])
def test_a_history_that_cannot_be_written_after_sending_is_noted_and_logged(live, log_lines, job_id, named):
    """After sending, a failed write never raises (the job is paid for and followed): the handle's note and
    the log say which job is missing from the history, and why."""
    ledger = Ledger(BrokenHistory, live, backend_id=BACKEND, base_url=URL)
    handle = Generation(model_id="m", prompt="p", request_id="req_6", job_id=job_id)
    ledger.record(handle)
    assert "disk full" in handle.note and "history" in handle.note
    assert log_lines == [f"job {named} is not in the history: disk full"]


def a_training() -> Training:
    training = Training(model_id="model_t", name="Potions", type="flux.1-lora",
                        images=[TrainingImage("a.png", asset_id="asset_a", caption="a red potion")],
                        parameters={"maxTrainSteps": 300}, status="training", job_id="job_t", cost=40.0,
                        error="slow", )
    training._set(stage="training", progress=0.5, _remaining=120.0, _remaining_seen=time.monotonic(),
                  hint="wait", created_at=2000.0, finished_at=2100.0, start_sent_at=2001.0)
    return training


def test_a_recorded_training_is_its_row_column_by_column(ledger, history):
    before = time.time()
    ledger.record_training(a_training())
    row = history.training("model_t")
    assert (row.model_id, row.backend_id, row.backend_url, row.name, row.type, row.job_id) == (
        "model_t", BACKEND, URL, "Potions", "flux.1-lora", "job_t")
    assert (row.status, row.stage, row.progress, row.cost) == ("training", "training", 0.5, 40.0)
    assert row.remaining is None  # a finished_at set: a done training has no time left
    assert row.parameters == {"maxTrainSteps": 300}
    assert row.images == [{"name": "a.png", "asset_id": "asset_a", "caption": "a red potion"}]
    assert (row.error, row.hint, row.created_at, row.finished_at, row.start_sent_at) == (
        "slow", "wait", 2000.0, 2100.0, 2001.0)
    assert before <= row.updated_at <= time.time()


def test_a_training_in_progress_records_its_remaining_time(ledger, history):
    training = a_training()
    training._set(finished_at=None)
    ledger.record_training(training)
    row = history.training("model_t")
    assert 100.0 < row.remaining <= 120.0 and row.finished_at is None


def test_a_training_that_cannot_be_recorded_before_its_start_is_refused(live):
    ledger = Ledger(BrokenHistory, live, backend_id=BACKEND, base_url=URL)
    training = a_training()
    with pytest.raises(StorageError) as refused:
        ledger.record_training(training, before_sending=True)
    assert "disk full" in str(refused.value) and "not started" in str(refused.value) and training.note == ""


def test_a_training_that_cannot_be_recorded_once_started_is_noted_and_logged(live, log_lines):
    ledger = Ledger(BrokenHistory, live, backend_id=BACKEND, base_url=URL)
    training = a_training()
    ledger.record_training(training)
    assert "disk full" in training.note and "history" in training.note
    assert log_lines == ["training model_t is not in the history: disk full"]


# -- _engine/_sender.py ------------------------------------------------------------------------------------------
class FakeLanes:
    """The send lane run by hand: tasks are kept, in order, with the delay they were scheduled with."""

    def __init__(self) -> None:
        self.tasks: list = []  # (handle, delay, task, lane)
        self.closed = False

    def schedule(self, handle, delay, task, token=None, *, lane="poll"):
        self.tasks.append((handle, delay, task, lane))

    def run_next(self):
        handle, _, task, _ = self.tasks.pop(0)
        task(handle)


class FakeGate:
    def __init__(self) -> None:
        self.wait = 0.0

    def remaining(self) -> float:
        return self.wait


class FakeHttp:
    """Answers creation requests from a script (a dict answered, an exception raised) and logs them."""

    def __init__(self, *answers) -> None:
        self.creation_gate = FakeGate()
        self.answers = list(answers)
        self.sent: list = []  # (method, path, body)

    def create(self, method, path, body):
        self.sent.append((method, path, dict(body)))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def created(job_id="job_1", cost=3.0):
    return {"job": {"jobId": job_id, "status": "queued"}, "creativeUnitsCost": cost}


class SenderRig:
    """A Sender with a real ledger and history, fake lanes and transport, and the calls it hands on."""

    def __init__(self, tmp_path, *answers) -> None:
        from scenario_nb._engine._live import Settings
        from scenario_nb._engine._sender import Sender
        self.history = History(tmp_path / "s.sqlite")
        self.live = LiveRequests()
        self.ledger = Ledger(lambda: self.history, self.live, backend_id=BACKEND, base_url=URL)
        self.lanes, self.http, self.settings = FakeLanes(), FakeHttp(*answers), Settings()
        self.adopted: list = []
        self.looked_for: list = []
        self.sender = Sender(self.http, self.lanes, self.live, self.ledger, self.settings,
                             adopt=lambda h, job, cost, created: self.adopted.append((h, job, cost, created)),
                             look_for=lambda h, delay: self.looked_for.append((h, delay)))

    def row(self, handle):
        return self.history.get_request(handle.request_id)

    def close(self):
        self.history.close()


@pytest.fixture
def rig(tmp_path):
    made: list = []

    def make(*answers) -> SenderRig:
        made.append(SenderRig(tmp_path / str(len(made)), *answers))
        return made[-1]
    yield make
    for r in made:
        r.close()


def a_request(kind="generation", model="model_x", **inputs) -> Generation:
    return Generation(model_id=model, prompt="a boat", inputs=inputs, kind=kind, model_name="Model X",
                      run_model_id="model_run" if kind == "generation" else None)


def test_a_request_is_recorded_then_posted_once_and_its_job_adopted(rig):
    r = rig(created("job_1", 3.0))
    handle = a_request(seed=1)
    before = time.time()
    r.sender.submit(handle)
    assert handle.request_id.startswith("req_") and before <= handle.submitted_at <= time.time()
    row = r.row(handle)
    assert row.status == "sending" and r.http.sent == [] and r.live.get(handle.request_id) is handle
    assert not handle._answered.is_set()
    assert [(t[0], t[1], t[3]) for t in r.lanes.tasks] == [(handle, 0.0, "send")]
    r.lanes.run_next()
    assert r.http.sent == [("POST", "/generate/custom/model_run", {"seed": 1, "prompt": "a boat"})]
    assert r.adopted == [(handle, {"jobId": "job_1", "status": "queued"}, 3.0, True)]
    assert handle._answered.is_set() and before <= handle.sent_at <= time.time() and handle.status == "sending"


def test_a_workflow_is_put_to_its_run_path_and_a_given_request_id_is_kept(rig):
    r = rig({"job": {"id": "job_w"}})
    handle = a_request(kind="workflow", model="wf_1")
    handle.request_id = "req_given"
    r.sender.submit(handle)
    r.lanes.run_next()
    assert handle.request_id == "req_given"
    assert r.http.sent == [("PUT", "/workflows/wf_1/run", {"prompt": "a boat"})]
    assert r.adopted == [(handle, {"id": "job_w"}, None, True)]


def test_a_closed_client_and_a_body_that_is_no_json_send_and_record_nothing(rig):
    from scenario_nb._errors import InputError, SubmitFailedError
    r = rig()
    r.lanes.closed = True
    with pytest.raises(SubmitFailedError, match="nothing was sent"):
        r.sender.submit(a_request())
    r.lanes.closed = False
    for bad in (float("nan"), float("inf"), object()):
        with pytest.raises(InputError, match="nothing was sent"):
            r.sender.submit(a_request(strength=bad))
    assert r.history.count() == 0 and r.lanes.tasks == [] and r.http.sent == []


def test_a_closed_gate_holds_the_request_here_recorded_as_waiting(rig):
    r = rig(created("job_1"))
    r.http.creation_gate.wait = 2.5
    handle = a_request()
    r.sender.submit(handle)
    assert handle.status == "waiting" and r.row(handle).status == "waiting" and handle._answered.is_set()
    assert r.sender.waiting() == [handle] and r.http.sent == []
    assert [(t[0], t[1], t[3]) for t in r.lanes.tasks] == [(None, 2.5, "send")]  # the drain, when the gate opens
    r.lanes.run_next()  # still closed: the drain looks again when it opens
    assert r.http.sent == [] and [(t[1], t[3]) for t in r.lanes.tasks] == [(2.5, "send")]
    r.http.creation_gate.wait = 0.0
    r.lanes.run_next()
    assert len(r.http.sent) == 1 and r.sender.waiting() == [] and r.adopted[0][0] is handle


def test_a_request_queued_before_a_429_closed_the_gate_waits_in_order(rig):
    r = rig(created("job_1"), created("job_2"))
    first, second = a_request(n=1), a_request(n=2)
    r.sender.submit(first)
    r.http.creation_gate.wait = 1.0  # a 429 elsewhere closed it after this one was queued
    r.sender.submit(second)
    r.lanes.run_next()  # first's send task: the gate is closed now
    assert first.status == "waiting" and r.row(first).status == "waiting"
    assert r.sender.waiting() == [second, first] and first._answered.is_set()
    r.http.creation_gate.wait = 0.0
    while r.lanes.tasks:
        r.lanes.run_next()
    assert [body["n"] for _, _, body in r.http.sent] == [2, 1]


def test_a_429_holds_the_request_and_learns_the_parallel_job_limit(rig):
    from scenario_nb._errors import RateLimitError
    refused = RateLimitError("too many jobs", body={"actionName": "parallelCustomJobs", "actionLimit": 1})
    r = rig(refused, created("job_1"))
    handle = a_request()
    r.sender.submit(handle)
    r.lanes.run_next()
    assert handle.status == "waiting" and r.row(handle).status == "waiting" and r.sender.waiting() == [handle]
    assert r.sender._slots.limit() == 1 and r.adopted == []
    r.lanes.run_next()  # the drain: sent again, once
    assert len(r.http.sent) == 2 and r.adopted[0][0] is handle and r.sender.waiting() == []


@pytest.mark.parametrize("body", [{"actionName": "parallelCustomJobs", "actionLimit": "1"},
                                  {"actionName": "otherLimit", "actionLimit": 1}, "not a dict"])
def test_a_429_that_names_no_parallel_job_limit_learns_none(rig, body):
    from scenario_nb._errors import RateLimitError
    r = rig(RateLimitError("slow down", body=body))
    r.sender.submit(a_request())
    r.lanes.run_next()
    assert r.sender._slots.limit() is None


def test_a_request_refused_again_while_draining_stays_first(rig):
    from scenario_nb._errors import RateLimitError
    r = rig(RateLimitError("slow down"), RateLimitError("slow down"), created("job_1"), created("job_2"))
    first, second = a_request(n=1), a_request(n=2)
    r.sender.submit(first)
    r.sender.submit(second)
    r.lanes.run_next()  # first: 429, queued
    r.lanes.run_next()  # second's send task: queued behind first
    assert r.sender.waiting() == [first, second]
    drain = [t for t in r.lanes.tasks]
    assert len(drain) == 1 and drain[0][1] == 0.0  # the gate (faked) is open: drain at once
    r.lanes.run_next()  # first refused again: it stays first; the drain comes back after the floor
    assert r.sender.waiting() == [first, second]
    assert [(t[0], t[1], t[3]) for t in r.lanes.tasks] == [(None, r.settings.floor, "send")]
    r.http.creation_gate.wait = 0.0
    r.lanes.run_next()
    assert [body["n"] for _, _, body in r.http.sent] == [1, 1, 1, 2] and r.sender.waiting() == []


def test_a_lost_answer_is_unknown_and_looked_for(rig):
    from scenario_nb._http import UncertainSubmit
    r = rig(UncertainSubmit("read timed out", time.time()), {"job": {}}, {"creativeUnitsCost": 1})
    handles = [a_request(n=i) for i in range(3)]
    for handle in handles:
        r.sender.submit(handle)
        r.lanes.run_next()
        assert handle.status == "unknown" and r.row(handle).status == "unknown" and not handle.done
        assert handle._answered.is_set()
    assert r.looked_for == [(h, 0.5) for h in handles] and r.adopted == []


def test_a_refused_or_unreachable_request_ends_not_sent(rig):
    from scenario_nb._errors import APIConnectionError, BadRequestError, SubmitFailedError
    refusal = BadRequestError("bad seed")
    r = rig(refusal, APIConnectionError("connection refused"))
    bad, unreachable = a_request(n=1), a_request(n=2)
    for handle in (bad, unreachable):
        r.sender.submit(handle)
        r.lanes.run_next()
        assert handle.done and handle.status == "not-sent" and r.row(handle).status == "not-sent"
        assert r.live.get(handle.request_id) is None
    assert bad.exception is refusal
    assert isinstance(unreachable.exception, SubmitFailedError)
    assert "connection refused" in str(unreachable.exception) and "nothing was charged" in str(
        unreachable.exception) and "Model X" in str(unreachable.exception)
    assert r.looked_for == [] and r.adopted == []


def test_an_unexpected_failure_while_sending_ends_that_request_unknown(rig, log_lines):
    from scenario_nb._errors import OutcomeUnknownError
    r = rig(KeyError("odd"))
    handle = a_request()
    r.sender.submit(handle)
    r.lanes.run_next()
    assert handle.done and handle.status == "unknown" and r.row(handle).status == "unknown"
    assert isinstance(handle.exception, OutcomeUnknownError) and "Model X" in str(handle.exception)
    assert "odd" in str(handle.exception) and handle._answered.is_set()
    assert f"sending {handle.request_id} failed" in log_lines


def test_an_odd_answer_while_draining_ends_only_its_own_request(rig):
    from scenario_nb._errors import RateLimitError
    r = rig(RateLimitError("slow down"), ["not", "a", "dict"], created("job_2"))
    first, second = a_request(n=1), a_request(n=2)
    r.sender.submit(first)
    r.sender.submit(second)
    while r.lanes.tasks:
        r.lanes.run_next()
    assert first.done and first.status == "unknown" and r.row(first).status == "unknown"
    assert [a[0] for a in r.adopted] == [second]


def test_requests_ended_while_held_are_never_sent_and_drop_takes_one_out(rig):
    r = rig(created("job_3"))
    r.http.creation_gate.wait = 1.0
    first, second, third = a_request(n=1), a_request(n=2), a_request(n=3)
    for handle in (first, second, third):
        r.sender.submit(handle)
    assert r.sender.drop(second) is True and r.sender.drop(second) is False
    r.ledger.end(first, None, status="canceled")
    assert r.sender.waiting() == [third]
    r.http.creation_gate.wait = 0.0
    while r.lanes.tasks:
        r.lanes.run_next()
    assert [body["n"] for _, _, body in r.http.sent] == [3]


def test_the_queue_is_not_drained_once_the_client_closed(rig):
    r = rig(created("job_1"))
    r.http.creation_gate.wait = 1.0
    r.sender.submit(a_request())
    r.lanes.closed = True
    r.http.creation_gate.wait = 0.0
    r.lanes.run_next()
    assert r.http.sent == [] and r.lanes.tasks == []
    r.lanes.closed = False
    r.sender.submit(a_request())  # a new drain starts: the last one ended
    assert [t[3] for t in r.lanes.tasks] == ["send"]


def test_the_learned_limit_holds_generations_back_while_ours_run(rig):
    """With a limit of 1 named by a 429, a second generation waits while the first runs (a job id), or is being
    sent, or its answer is lost; not once the first is done or completing, and never a workflow."""
    from scenario_nb._engine._sender import HOLD_CHECK
    r = rig(created("job_2"))
    r.sender._slots.learned(1)
    running = a_request(n=1)
    running.request_id = "req_running"
    r.live.add(running)
    for state in ({"job_id": "job_1", "status": "queued"}, {"job_id": None, "status": "sending"},
                  {"job_id": None, "status": "unknown"}):
        running._set(**state)
        assert r.sender._full(a_request(n=2)) is True, state
        assert r.sender._full(a_request(kind="workflow", model="wf")) is False
    running._set(job_id=None, status="queued")
    assert r.sender._full(a_request(n=2)) is False
    running._set(job_id="job_1", status="queued")
    assert r.sender._full(running) is False  # itself does not count
    r.live.claim_answer(running.request_id, True)
    assert r.sender._full(a_request(n=2)) is False  # completing: its slot is free in a moment
    other = a_request(kind="workflow", model="wf")
    other._set(job_id="job_w", request_id="req_w")
    r.live.add(other)
    assert r.sender._full(a_request(n=2)) is False  # workflows hold no generation slot
    running2 = a_request(n=5)
    running2._set(job_id="job_5", request_id="req_5")
    r.live.add(running2)
    waiting = a_request(n=2)
    r.sender.submit(waiting)  # held: the one slot is busy
    assert waiting.status == "waiting" and r.sender.waiting() == [waiting]
    r.lanes.run_next()
    assert r.http.sent == [] and [(t[1], t[3]) for t in r.lanes.tasks] == [(HOLD_CHECK, "send")]
    r.ledger.end(running2, None, status="success")
    r.lanes.run_next()
    assert [body["n"] for _, _, body in r.http.sent] == [2]


def test_job_slots_probe_one_more_per_quiet_minute():
    from scenario_nb._engine._sender import PROBE_SECONDS, JobSlots
    now = [100.0]
    slots = JobSlots(clock=lambda: now[0])
    assert slots.limit() is None
    slots.learned(2)
    assert slots.limit() == 2
    now[0] += PROBE_SECONDS - 0.01
    assert slots.limit() == 2
    now[0] += 0.02
    assert slots.limit() == 3
    now[0] += 2 * PROBE_SECONDS
    assert slots.limit() == 5
    slots.learned(1)
    assert slots.limit() == 1
    now[0] -= 500  # a clock set back never lowers it
    assert slots.limit() == 1
