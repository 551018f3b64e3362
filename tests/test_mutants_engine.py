"""Tests written to kill mutants that mutmut planted in the engine (`scenario_nb/_engine/`) and that the rest of
the suite let live (the run, the figures and the mutants that cannot be killed: tests/mutants-equivalent.md).

In-process and fast (a mutant is re-run against every test that reaches it): the engine's parts are driven
directly, and checked by effect: the rows the history holds, the requests a part sends, what the log says.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scenario_nb._engine._ledger import Ledger
from scenario_nb._engine._live import LiveRequests
from scenario_nb._errors import JobFailedError, StorageError
from scenario_nb._generation import Generation, Output
from scenario_nb._history import History
from scenario_nb._training import Training, TrainingImage

from ledger_parts import BACKEND, URL

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
    r.http.creation_gate.wait = 0.5  # under a second is closed too
    r.lanes.run_next()
    assert r.http.sent == [] and [(t[1], t[3]) for t in r.lanes.tasks] == [(0.5, "send")]
    r.http.creation_gate.wait = 0.0
    r.lanes.run_next()
    assert len(r.http.sent) == 1 and r.sender.waiting() == [] and r.adopted[0][0] is handle
    assert handle.status == "sending"  # no longer waiting: on its way


def test_a_request_queued_before_a_429_closed_the_gate_waits_in_order(rig):
    r = rig(created("job_1"), created("job_2"))
    first, second = a_request(n=1), a_request(n=2)
    r.sender.submit(first)
    r.http.creation_gate.wait = 0.5  # a 429 elsewhere closed it (for half a second) after this one was queued
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
    r = rig(RateLimitError("slow down"), KeyError("an odd field"), created("job_2"))
    first, second = a_request(n=1), a_request(n=2)
    r.sender.submit(first)
    r.sender.submit(second)
    while r.lanes.tasks:
        r.lanes.run_next()
    assert first.done and first.status == "unknown" and r.row(first).status == "unknown"
    assert "an odd field" in str(first.exception) and "an odd field" in r.row(first).error
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


# -- _engine/_recovery.py ----------------------------------------------------------------------------------------
class Recorder:
    """Stands in for the poller, the lost-answer search and the completer: logs what recovery hands them."""

    def __init__(self, tmp_path) -> None:
        self.tracked: list = []
        self.adopted: list = []
        self.looked_for: list = []
        self.outputs = [Output("asset_1", "image", "image/png", tmp_path / "asset_1.png")]

    def track(self, handle):
        self.tracked.append(handle)

    def adopt(self, handle, job):
        self.adopted.append((handle, job))

    def look_for(self, handle):
        self.looked_for.append(handle)

    def stored_outputs(self, record):
        self.asked_outputs = record
        return list(self.outputs)


class JobsServer:
    """`GET /jobs/{id}` from a dict of jobs (NotFoundError for the others), and the paths asked."""

    def __init__(self, jobs=None, failures=None) -> None:
        self.jobs = dict(jobs or {})
        self.failures = dict(failures or {})
        self.asked: list = []

    def get(self, path):
        from scenario_nb._errors import NotFoundError
        self.asked.append(path)
        job_id = path.rsplit("/", 1)[1]
        if job_id in self.failures:
            raise self.failures[job_id]
        if job_id not in self.jobs:
            raise NotFoundError("job not found")
        return {"job": self.jobs[job_id]}


class UnreadableHistory:
    def get(self, job_id):
        raise StorageError("unreadable")

    def unfinished(self, backend_id):
        raise StorageError("unreadable")


def a_recovery(tmp_path, history, live, server, helper=None):
    from scenario_nb._engine._recovery import Recovery
    from scenario_nb._generation import Detached
    helper = helper or Recorder(tmp_path)
    ledger = Ledger(lambda: history, live, backend_id=BACKEND, base_url=URL)
    owner = Detached()
    return Recovery(owner, server, live, ledger, helper, helper, helper), helper, owner


def a_row(**changes):
    from scenario_nb._history import JobRecord
    values = dict(request_id="req_r", job_id="job_r", backend_id=BACKEND, backend_url=URL, model_id="model_lora",
                  base_model_id="model_base", model_name="My LoRA", prompt="a fox",
                  inputs={"prompt": "a fox", "seed": 3}, cost=4.0, status="processing", source="panel",
                  kind="generation", sent_at=501.0, created_at=500.0, asset_ids=["asset_1"],
                  mime_types=["image/png"], text="its text", error="its error", hint="its hint",
                  finished_at=None)
    values.update(changes)
    return JobRecord(**values)


def test_a_handle_from_a_row_carries_the_row(tmp_path, history, live):
    recovery, _, owner = a_recovery(tmp_path, history, live, JobsServer())
    handle = recovery.handle_from(a_row())
    assert (handle.model_id, handle.run_model_id, handle.base_model_id, handle.model_name) == (
        "model_lora", "model_base", "model_base", "My LoRA")
    assert handle.inputs == {"prompt": "a fox", "seed": 3} and handle.prompt == "a fox"
    assert (handle.source, handle.kind, handle.request_id, handle.cost) == ("panel", "generation", "req_r", 4.0)
    assert (handle.submitted_at, handle.sent_at, handle.status) == (500.0, 501.0, "processing")
    assert handle._engine is owner and not handle.done and handle.job_id is None
    plain = recovery.handle_from(a_row(base_model_id=None, kind="workflow", status=""))
    assert plain.run_model_id == "model_lora" and plain.kind == "workflow" and plain.status == "queued"


def test_a_handle_from_the_server_alone_is_a_new_request_of_the_jobs_kind(tmp_path, history, live):
    recovery, _, owner = a_recovery(tmp_path, history, live, JobsServer())
    job_only = recovery.handle_from(None, {"jobType": "workflow"})
    assert job_only.kind == "workflow" and job_only.request_id.startswith("req_") and job_only.inputs == {}
    assert (job_only.model_id, job_only.run_model_id, job_only.base_model_id, job_only.source) == ("", "", None,
                                                                                                    "api")
    assert job_only.cost is None and job_only._engine is owner and job_only.model_name == ""
    assert recovery.handle_from(None, {"jobType": "flux"}).kind == "generation"
    assert recovery.handle_from(None).kind == "generation"
    assert recovery.handle_from(None).request_id != job_only.request_id


def test_a_finished_handle_is_rebuilt_from_its_row_without_a_request(tmp_path, history, live):
    server = JobsServer()
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    row = a_row(status="success", finished_at=600.0)
    before = time.time()
    handle = recovery.finished_handle(row)
    assert handle.done and handle.status == "success" and handle.exception is None and handle._done.is_set()
    assert handle.job_id == "job_r" and handle.outputs == helper.outputs and helper.asked_outputs is row
    assert (handle.text, handle.error, handle.hint, handle.progress) == ("its text", "its error", "its hint", 1.0)
    assert handle.finished_at == 600.0 and server.asked == []
    assert (handle.request_id, handle.model_id, handle.model_name, handle.inputs) == (
        "req_r", "model_lora", "My LoRA", {"prompt": "a fox", "seed": 3})
    assert before <= recovery.finished_handle(a_row(status="success")).finished_at <= time.time()


def test_reattaching_a_followed_job_returns_its_handle(tmp_path, history, live):
    server = JobsServer()
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    running = Generation(model_id="m", prompt="p", request_id="req_1", job_id="job_1", status="processing")
    live.add(running)
    live.bind_job("job_1", running)
    assert recovery.reattach("job_1") is running
    running._finish(None, "success")  # finished here, its outputs stored
    assert recovery.reattach("job_1") is running
    assert server.asked == [] and helper.tracked == [] and helper.adopted == []


@pytest.mark.parametrize("given_up", ["timeout", "download"])
def test_a_job_given_up_on_here_is_taken_back_and_followed_again(tmp_path, history, live, given_up):
    from scenario_nb._errors import DownloadFailedError, JobTimeoutError
    server = JobsServer()
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    handle = Generation(model_id="m", prompt="p", request_id="req_1", job_id="job_1", status="processing")
    live.bind_job("job_1", handle)
    handle._set(note="stopped waiting")
    handle._finish(JobTimeoutError("job_1", 60) if given_up == "timeout" else
                   DownloadFailedError("job_1", OSError("cut")), "success" if given_up == "download" else None)
    handle._settle()
    assert recovery.reattach("job_1") is handle
    assert not handle.done and handle.exception is None and handle.note == ""
    assert live.get("req_1") is handle and helper.tracked == [handle] and server.asked == []


def test_a_failed_job_is_read_again_from_the_server(tmp_path, history, live):
    server = JobsServer({"job_1": {"jobId": "job_1", "status": "failure"}})
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    handle = Generation(model_id="m", prompt="p", request_id="req_1", job_id="job_1")
    live.bind_job("job_1", handle)
    handle._finish(JobFailedError("job_1", "broke"), "failure")
    again = recovery.reattach("job_1")
    assert again is not handle and server.asked == ["/jobs/job_1"] and helper.tracked == []
    assert helper.adopted == [(again, {"jobId": "job_1", "status": "failure"})]


def test_a_job_in_the_history_is_rebuilt_from_its_row_and_adopted(tmp_path, history, live):
    job = {"jobId": "job_r", "status": "processing", "metadata": {"input": {"modelId": "other", "prompt": "x"}}}
    server = JobsServer({"job_r": job})
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    history.record(a_row())
    handle = recovery.reattach("job_r")
    assert server.asked == ["/jobs/job_r"] and helper.adopted == [(handle, job)]
    assert (handle.request_id, handle.model_id, handle.run_model_id, handle.model_name) == (
        "req_r", "model_lora", "model_base", "My LoRA")
    assert handle.inputs == {"prompt": "a fox", "seed": 3}  # the row's, not the echo


@pytest.mark.parametrize("unreadable", [False, True])
def test_a_job_nobody_here_knows_is_rebuilt_from_the_servers_echo(tmp_path, history, live, unreadable):
    job = {"jobId": "job_x", "status": "processing",
           "metadata": {"input": {"modelId": "model_y", "prompt": "a hat", "seed": 9}}}
    flow = {"jobId": "job_w", "jobType": "workflow", "metadata": {"workflowId": "wf_1", "input": {"a": 1}}}
    bare = {"jobId": "job_b"}
    server = JobsServer({"job_x": job, "job_w": flow, "job_b": bare})
    recovery, helper, _ = a_recovery(tmp_path, UnreadableHistory() if unreadable else history, live, server)
    handle = recovery.reattach("job_x")
    assert handle.inputs == {"prompt": "a hat", "seed": 9}
    assert (handle.model_id, handle.run_model_id, handle.model_name, handle.kind) == (
        "model_y", "model_y", "model_y", "generation")
    assert job["metadata"]["input"]["modelId"] == "model_y"  # the server's answer is left as it came
    workflow = recovery.reattach("job_w")
    assert (workflow.model_id, workflow.run_model_id, workflow.kind, workflow.inputs) == (
        "wf_1", "wf_1", "workflow", {"a": 1})
    nothing = recovery.reattach("job_b")
    assert (nothing.model_id, nothing.run_model_id, nothing.model_name, nothing.inputs) == ("", "", "", {})
    assert [h for h, _ in helper.adopted] == [handle, workflow, nothing]


def test_following_a_row_reattaches_its_job_or_returns_the_live_request(tmp_path, history, live):
    job = {"jobId": "job_r", "status": "processing"}
    server = JobsServer({"job_r": job})
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    history.record(a_row())
    handle = recovery.follow_record(a_row())
    assert helper.adopted == [(handle, job)] and handle.request_id == "req_r"
    live_one = Generation(model_id="m", prompt="p", request_id="req_live")
    live.add(live_one)
    assert recovery.follow_record(a_row(request_id="req_live", job_id=None)) is live_one
    assert helper.looked_for == []


def test_a_row_left_waiting_by_a_stopped_kernel_ends_never_sent(tmp_path, history, live):
    from scenario_nb._errors import SubmitFailedError
    server = JobsServer()
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    history.record(a_row(job_id=None, status="waiting"))
    handle = recovery.follow_record(history.get_request("req_r"))
    assert handle.done and handle.status == "not-sent" and isinstance(handle.exception, SubmitFailedError)
    assert "My LoRA" in str(handle.exception) and "nothing was charged" in str(handle.exception)
    assert history.get_request("req_r").status == "not-sent" and helper.looked_for == [] and server.asked == []


def test_a_row_without_a_job_is_looked_for(tmp_path, history, live):
    recovery, helper, _ = a_recovery(tmp_path, history, live, JobsServer())
    handle = recovery.follow_record(a_row(job_id=None, status="sending"))
    assert handle.status == "unknown" and not handle.done and live.get("req_r") is handle
    assert helper.looked_for == [handle]


def test_recovery_follows_every_unfinished_row_of_this_backend_once(tmp_path, history, live, log_lines):
    from scenario_nb._errors import ServerError
    job = {"jobId": "job_a", "status": "processing"}
    server = JobsServer({"job_a": job}, failures={"job_err": ServerError("down")})
    recovery, helper, _ = a_recovery(tmp_path, history, live, server)
    history.record(a_row(request_id="req_a", job_id="job_a", created_at=10.0))
    history.record(a_row(request_id="req_gone", job_id="job_gone", created_at=9.0))  # the server forgot it
    history.record(a_row(request_id="req_err", job_id="job_err", created_at=8.0))  # the server fails
    history.record(a_row(request_id="req_old", job_id="job_old", backend_id=URL, created_at=11.0))  # schema 1
    history.record(a_row(request_id="req_done", job_id="job_done", status="success", created_at=6.0))
    history.record(a_row(request_id="req_theirs", job_id="job_t", backend_id=URL + "#key2", created_at=5.0))
    handles = recovery.recover()
    assert [h.request_id for h in handles] == ["req_a"] and helper.adopted == [(handles[0], job)]
    assert sorted(server.asked) == ["/jobs/job_a", "/jobs/job_err", "/jobs/job_gone", "/jobs/job_old"]
    gone = history.get_request("req_gone")
    assert gone.status == "failure" and gone.job_id == "job_gone"
    assert gone.error == ("job job_gone failed: the API no longer knows this job (hint: it may belong to another "
                          "project, or to a sandbox that stopped)")
    assert history.get_request("req_old").status == "processing"  # another key's job, perhaps: left alone
    assert history.get_request("req_err").status == "processing"
    assert log_lines == ["could not follow on job_err: down (HTTP 500)"]
    assert recovery.recover() == [] and len(server.asked) == 4  # once per engine


def test_recovery_with_an_unreadable_history_follows_nothing(tmp_path, live):
    server = JobsServer()
    recovery, helper, _ = a_recovery(tmp_path, UnreadableHistory(), live, server)
    assert recovery.recover() == [] and server.asked == []


# -- _engine/_search.py ------------------------------------------------------------------------------------------
class JobsListing:
    """`GET /jobs` answered page by page (a page: its rows and the next token), every call logged."""

    def __init__(self, *pages, failure=None) -> None:
        self.pages = list(pages)
        self.failure = failure
        self.asked: list = []
        self.times: list = []

    def get(self, path, **params):
        self.asked.append((path, dict(params)))
        if self.failure is not None:
            raise self.failure
        self.times.append(time.time())
        rows, token = self.pages[len(self.asked) - 1] if len(self.asked) <= len(self.pages) else ([], None)
        return {"jobs": rows, "nextPaginationToken": token}


class StillServerClock:
    """No skew: a job can be the request's only if the server made it after `intent - 10` (this test's rule)."""

    def __init__(self) -> None:
        self.intents: list = []
        self.seen: list = []

    def earliest_job(self, intent_at):
        self.intents.append(intent_at)
        return intent_at - 10

    def saw(self, row, arrived):
        self.seen.append((row, arrived))


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class SearchRig:
    def __init__(self, tmp_path, listing, *, server_clock=True) -> None:
        from scenario_nb._engine._live import Settings
        from scenario_nb._engine._search import LostAnswerSearch
        self.history = History(tmp_path / "search.sqlite")
        self.live = LiveRequests()
        self.ledger = Ledger(lambda: self.history, self.live, backend_id=BACKEND, base_url=URL)
        self.lanes, self.settings, self.listing = FakeLanes(), Settings(), listing
        self.settings.search_seconds = 60.0
        self.clock = StillServerClock() if server_clock else None
        self.adopted: list = []
        self.search = LostAnswerSearch(listing, self.lanes, self.live, self.ledger, self.settings,
                                       adopt=lambda h, job: self.adopted.append((h, job)),
                                       server_clock=self.clock)


@pytest.fixture
def search_rig(tmp_path):
    made: list = []

    def make(*pages, **kwargs) -> SearchRig:
        made.append(SearchRig(tmp_path / f"s{len(made)}", JobsListing(*pages, failure=kwargs.pop("failure", None)),
                              **kwargs))
        (tmp_path / f"s{len(made) - 1}").mkdir(exist_ok=True)
        return made[-1]
    yield make
    for r in made:
        r.history.close()


def a_lost_request(intent: float, sent: float = None) -> Generation:
    handle = Generation(model_id="model_lora", base_model_id="model_base", prompt="a kite",
                        inputs={"modelId": "model_lora", "seed": 4}, request_id="req_lost", status="unknown",
                        model_name="Kite LoRA")
    handle._set(submitted_at=intent, sent_at=sent)
    return handle


def a_job(job_id, created, model="model_lora", key="jobId", **inputs):
    echoed = {"prompt": "a kite", "seed": 4, **inputs}
    if model is not None:
        echoed["modelId"] = model
    return {key: job_id, "createdAt": iso(created) if created is not None else None, "metadata": {"input": echoed}}


def test_look_for_schedules_the_search_on_the_poll_lane(search_rig):
    r = search_rig()
    handle = a_lost_request(time.time())
    r.search.look_for(handle)
    r.search.look_for(handle, 2.5)
    assert [(t[0], t[1], t[3]) for t in r.lanes.tasks] == [(handle, 0.0, "poll"), (handle, 2.5, "poll")]
    r.lanes.run_next()
    assert r.listing.asked and r.listing.asked[0][0] == "/jobs"


def test_the_listing_asked_is_jobs_created_after_the_intent_page_after_page(search_rig):
    now = time.time()
    r = search_rig(([], "tok1"), ([a_job("job_1", now)], None))
    handle = a_lost_request(now - 5.5, sent=now - 5)
    r.lanes.schedule(handle, 0, r.search._reconcile)
    r.lanes.run_next()
    since = iso(now - 15.5)
    assert r.listing.asked == [("/jobs", {"createdAfter": since, "pageSize": 100}),
                               ("/jobs", {"createdAfter": since, "pageSize": 100, "paginationToken": "tok1"})]
    assert r.clock.intents == [now - 5.5]  # the intent, not the send
    [(seen, arrived)] = r.clock.seen
    assert seen is r.listing.pages[1][0][0] and r.listing.times[1] <= arrived <= r.listing.times[1] + 1
    assert r.adopted == [(handle, r.listing.pages[1][0][0])]
    assert handle.note == "its answer was lost, and its job was found and adopted"


def test_the_job_found_is_the_earliest_made_after_the_intent_with_the_same_model_and_inputs(search_rig, tmp_path):
    now = time.time()
    rows = [
        a_job("job_known", now - 4),  # followed here already
        a_job("job_before", now - 10),  # made at the earliest moment: before the intent
        a_job("job_other_seed", now - 3, seed=5),
        a_job("job_other_model", now - 3, model="model_other"),
        a_job("job_late", now - 1),
        a_job("job_undated", None),
        {"id": "job_first", "createdAt": iso(now - 2), "metadata": {"input": {"prompt": "a kite", "seed": 4,
                                                                             "modelId": "model_base"}}},
    ]
    r = search_rig((rows, None))
    r.live.know_job("job_known")
    handle = a_lost_request(now)
    assert r.search._find_job(handle, now - 10)["id"] == "job_first"


@pytest.mark.parametrize("row, found", [
    (lambda now: a_job("job_plain", now, model=None), True),  # no modelId echoed: the URL's model
    (lambda now: {"jobId": "job_wf", "createdAt": iso(now), "metadata": {
        "workflowId": "model_base", "input": {"prompt": "a kite", "seed": 4, "modelId": "a_step_model"}}}, True),
    (lambda now: {"jobId": "job_wf2", "createdAt": iso(now), "metadata": {
        "workflowId": "other", "input": {"prompt": "a kite", "seed": 4, "modelId": "other"}}}, False),
    (lambda now: {"jobId": "job_nometa", "createdAt": iso(now)}, False),
    (lambda now: a_job("job_undated", None), True),
])
def test_what_counts_as_the_same_request(search_rig, row, found):
    now = time.time()
    job = row(now)
    r = search_rig(([job], None))
    assert r.search._find_job(a_lost_request(now), now - 10) == (job if found else None)


def test_a_job_the_history_gives_to_another_request_is_passed_over_and_known_from_then_on(search_rig):
    from scenario_nb._history import JobRecord
    now = time.time()
    theirs, mine = a_job("job_theirs", now - 3), a_job("job_mine", now - 2)
    r = search_rig(([theirs, mine], None), ([theirs, mine], None))
    r.history.record(JobRecord(request_id="req_other", job_id="job_theirs", backend_id=BACKEND))
    r.history.record(JobRecord(request_id="req_lost", job_id="job_mine", backend_id=BACKEND))
    assert r.search._find_job(a_lost_request(now), now - 10) is mine
    assert r.live.knows_job("job_theirs") and not r.live.knows_job("job_mine")


def test_with_an_unreadable_history_the_jobs_followed_here_are_the_only_ones_known(tmp_path):
    from scenario_nb._engine._live import Settings
    from scenario_nb._engine._search import LostAnswerSearch
    now = time.time()
    job = a_job("job_1", now)
    live = LiveRequests()
    ledger = Ledger(UnreadableHistory, live, backend_id=BACKEND, base_url=URL)
    search = LostAnswerSearch(JobsListing(([job], None)), FakeLanes(), live, ledger, Settings(), adopt=print,
                              server_clock=StillServerClock())
    assert search._find_job(a_lost_request(now), now - 10) is job and not live.knows_job("job_1")


@pytest.mark.parametrize("ago, delay", [(1.0, 1.0), (20.0, 5.0), (50.0, 8.0)])
def test_a_job_not_listed_yet_is_looked_for_again_sooner_at_first(search_rig, ago, delay):
    r = search_rig()
    handle = a_lost_request(time.time() - ago - 1, sent=time.time() - ago)
    r.search._reconcile(handle)
    assert len(r.lanes.tasks) == 1 and r.lanes.tasks[0][0] is handle and r.lanes.tasks[0][3] == "poll"
    assert r.lanes.tasks[0][1] == pytest.approx(delay, abs=0.05)
    assert not handle.done and r.adopted == []


def test_a_request_never_sent_counts_from_its_intent(search_rig):
    r = search_rig()
    handle = a_lost_request(time.time() - 70)  # sent_at unknown: the intent is the clock
    r.search._reconcile(handle)
    assert handle.done and r.lanes.tasks == []


def test_a_job_still_not_listed_after_the_search_time_leaves_the_request_unknown(search_rig):
    from scenario_nb._errors import OutcomeUnknownError
    r = search_rig()
    handle = a_lost_request(time.time() - 61, sent=time.time() - 60.5)
    r.search._reconcile(handle)
    assert handle.done and handle.status == "unknown" and isinstance(handle.exception, OutcomeUnknownError)
    assert "Kite LoRA" in str(handle.exception) and "req_lost" in str(handle.exception)
    assert r.history.get_request("req_lost").status == "unknown" and r.lanes.tasks == []
    first_end = handle.finished_at
    r.search._reconcile(handle)  # looked for again later (a status check): it is not ended twice
    assert handle.finished_at == first_end and r.lanes.tasks == []
    job = a_job("job_late", time.time())
    r.listing.pages.append(([job], None))
    r.listing.asked.clear()
    r.search._reconcile(handle)  # found after all: taken back
    assert not handle.done and r.adopted == [(handle, job)] and "found and adopted" in handle.note


def test_a_request_ended_otherwise_is_not_looked_for(search_rig):
    r = search_rig()
    handle = a_lost_request(time.time())
    handle._finish(None, "canceled")
    r.search._reconcile(handle)
    assert r.listing.asked == [] and r.lanes.tasks == []


def test_a_failed_listing_is_tried_again(search_rig, log_lines):
    from scenario_nb._errors import ServerError
    r = search_rig(failure=ServerError("listing down"))
    handle = a_lost_request(time.time() - 3, sent=time.time() - 2)
    r.search._reconcile(handle)
    assert [t[0] for t in r.lanes.tasks] == [handle] and not handle.done
    assert any(line.startswith("looking for the job of req_lost failed") and "listing down" in line
               for line in log_lines)


def test_the_search_reads_the_server_clock_it_learned_by_default(tmp_path):
    r = SearchRig(tmp_path, JobsListing(([a_job("job_1", time.time())], None)), server_clock=False)
    handle = a_lost_request(time.time() - 1, sent=time.time() - 0.5)
    r.search._reconcile(handle)
    assert r.adopted and r.adopted[0][0] is handle
    r.history.close()


# -- _engine/_training_rows.py -----------------------------------------------------------------------------------
class FoundStore:
    """A file store that holds some assets (others: StorageError, as the real one says)."""

    def __init__(self, tmp_path, held=("asset_a",)) -> None:
        self.files = {a: tmp_path / f"{a}.png" for a in held}
        self.asked: list = []

    def find(self, asset_id):
        self.asked.append(asset_id)
        if asset_id not in self.files:
            raise StorageError(f"asset {asset_id} is not in the local store")
        return self.files[asset_id]


def a_training_row(**changes):
    from scenario_nb._history import TrainingRecord
    values = dict(model_id="model_t", backend_id=BACKEND, backend_url=URL, name="Potions", type="flux.1-lora",
                  job_id="job_t", status="training", stage="queued-for-training", progress=0.25, cost=40.0,
                  parameters={"maxTrainSteps": 300}, error="its error", hint="its hint", created_at=2000.0,
                  start_sent_at=2001.0,
                  images=[{"name": "a.png", "asset_id": "asset_a", "caption": "a red potion"},
                          {"name": "b.png", "asset_id": "asset_b", "caption": None}, {}])
    values.update(changes)
    return TrainingRecord(**values)


def test_a_training_from_its_row_carries_the_row(tmp_path):
    from scenario_nb._engine._training_rows import training_from
    store = FoundStore(tmp_path)
    owner = object()
    model = {"id": "model_t", "name": "Other", "type": "other", "parameters": {"x": 1},
             "trainingImages": [{"id": "asset_z", "description": "z"}]}
    training = training_from(owner, a_training_row(), model, lambda: store)
    assert training._owner is owner
    assert (training.model_id, training.name, training.type, training.parameters) == (
        "model_t", "Potions", "flux.1-lora", {"maxTrainSteps": 300})
    assert [(i.name, i.asset_id, i.caption, i.path) for i in training.images] == [
        ("a.png", "asset_a", "a red potion", tmp_path / "asset_a.png"), ("b.png", "asset_b", "", None),
        ("", None, "", None)]
    assert (training.job_id, training.cost, training.status, training.stage, training.progress) == (
        "job_t", 40.0, "training", "queued-for-training", 0.25)
    assert (training.error, training.hint, training.created_at, training.start_sent_at) == (
        "its error", "its hint", 2000.0, 2001.0)
    assert store.asked == ["asset_a", "asset_b"]


def test_a_training_row_with_empty_fields_is_filled_from_the_model_or_defaults(tmp_path):
    from scenario_nb._engine._training_rows import training_from
    model = {"id": "model_t", "name": "From API", "type": "flux.1-lora", "parameters": {"x": 1},
             "trainingImages": [{"id": "asset_a", "name": "a.png", "description": "desc"},
                                {"id": "asset_b", "automaticCaptioning": "auto"}, "not a dict", {}]}
    before = time.time()
    training = training_from(None, a_training_row(name="", type="", parameters={}, images=[], status="",
                                                  progress=None, created_at=0.0), model,
                             lambda: FoundStore(tmp_path))
    assert (training.name, training.type, training.parameters) == ("From API", "flux.1-lora", {"x": 1})
    assert [(i.name, i.asset_id, i.caption, i.path) for i in training.images] == [
        ("a.png", "asset_a", "desc", tmp_path / "asset_a.png"), ("", "asset_b", "auto", None), ("", None, "", None)]
    assert training.status == "new" and training.progress == 0.0 and before <= training.created_at <= time.time()
    nameless = training_from(None, a_training_row(name="", type="", images=[]), {}, lambda: FoundStore(tmp_path))
    assert (nameless.name, nameless.type, nameless.images) == ("model_t", "", [])


def test_a_training_from_the_model_alone(tmp_path):
    from scenario_nb._engine._training_rows import training_from
    model = {"id": "model_m", "type": "flux.1-lora", "trainingImages": [{"id": "asset_a", "description": ""}]}
    training = training_from(None, None, model, lambda: FoundStore(tmp_path))
    assert (training.model_id, training.name, training.type, training.parameters) == (
        "model_m", "model_m", "flux.1-lora", {})
    assert [(i.asset_id, i.caption) for i in training.images] == [("asset_a", "")]
    assert (training.job_id, training.status, training.cost, training.start_sent_at) == (None, "new", None, None)
    named = training_from(None, None, {"id": 7, "name": "Seven"}, lambda: FoundStore(tmp_path))
    assert (named.model_id, named.name, named.type, named.images) == ("7", "Seven", "", [])


def test_a_stored_path_is_none_without_an_id_or_a_readable_store(tmp_path):
    from scenario_nb._engine._training_rows import stored_path
    store = FoundStore(tmp_path)
    assert stored_path(lambda: store, "asset_a") == tmp_path / "asset_a.png"
    assert stored_path(lambda: store, "asset_missing") is None
    assert stored_path(lambda: store, "") is None and stored_path(lambda: store, None) is None
    assert stored_path(lambda: store, 5) is None
    assert store.asked == ["asset_a", "asset_missing"]


# -- _engine/_own_models.py --------------------------------------------------------------------------------------
class ModelsServer:
    """The account's models: `GET /models` (pages of 2), `GET /models/{id}`, `POST /models`, `DELETE`."""

    def __init__(self, models=(), create=None) -> None:
        self.models = [dict(m) for m in models]
        self.create_answer = create  # a dict answered, or an exception raised
        self.calls: list = []

    def get(self, path, **params):
        self.calls.append(("GET", path, dict(params)))
        if path != "/models":
            return {"model": next(m for m in self.models if path == f"/models/{m['id']}")}
        start = int(params.get("paginationToken") or 0)
        page = self.models[start:start + 2]
        more = start + 2 < len(self.models)
        return {"models": page, "nextPaginationToken": str(start + 2) if more else None}

    def request(self, method, path, json_body=None):
        self.calls.append((method, path, json_body))
        if method == "POST":
            if isinstance(self.create_answer, BaseException):
                raise self.create_answer
            return self.create_answer
        return {}


def own_models(tmp_path, server, history=None):
    from scenario_nb._engine._own_models import OwnModels
    history = history or History(tmp_path / "own.sqlite")
    return OwnModels(server, Ledger(lambda: history, LiveRequests(), backend_id=BACKEND, base_url=URL)), history


def test_the_models_listed_are_every_page_of_the_private_ones(tmp_path):
    server = ModelsServer([{"id": f"m{i}", "name": f"M{i}"} for i in range(5)])
    models, history = own_models(tmp_path, server)
    assert [m["id"] for m in models.listed()] == ["m0", "m1", "m2", "m3", "m4"]
    assert [c[2] for c in server.calls] == [{"privacy": "private"}, {"privacy": "private", "paginationToken": "2"},
                                            {"privacy": "private", "paginationToken": "4"}]
    assert {c[1] for c in server.calls} == {"/models"}
    assert models.model("m3") == {"id": "m3", "name": "M3"} and server.calls[-1][1] == "/models/m3"
    history.close()


def test_models_of_a_name_in_any_case_newest_first(tmp_path):
    server = ModelsServer([{"id": "a", "name": "Potions", "createdAt": "2026-01-01T00:00:00Z"},
                           {"id": "b", "name": " potions ", "createdAt": "2026-03-01T00:00:00Z"},
                           {"id": "c", "name": "Other"}, {"id": "d"},
                           {"id": "e", "name": "POTIONS", "createdAt": "2026-02-01T00:00:00Z"},
                           {"id": "f", "name": "potions"}])
    models, history = own_models(tmp_path, server)
    assert [m["id"] for m in models.named("  Potions ")] == ["b", "e", "a", "f"]
    assert models.named("xxxx") == []  # a model with no name is named by no name
    history.close()


def test_a_model_is_made_once(tmp_path):
    server = ModelsServer(create={"model": {"id": "model_new"}})
    models, history = own_models(tmp_path, server)
    assert models.create("Potions", "flux.1-lora") == "model_new"
    assert server.calls == [("POST", "/models", {"name": "Potions", "type": "flux.1-lora"})]
    history.close()


@pytest.mark.parametrize("lost", ["connection", "server"])
def test_a_model_whose_answer_was_lost_is_found_among_the_new_ones_of_its_name(tmp_path, lost):
    from scenario_nb._engine._own_models import CLOCK_SKEW
    from scenario_nb._errors import APIConnectionError, ServerError
    now = time.time()
    failure = APIConnectionError("reset") if lost == "connection" else ServerError("bad gateway")
    server = ModelsServer([
        {"id": "old", "name": "Potions", "status": "new", "type": "flux.1-lora",
         "createdAt": iso(now - CLOCK_SKEW - 5)},
        {"id": "trained", "name": "Potions", "status": "trained", "type": "flux.1-lora", "createdAt": iso(now)},
        {"id": "other_type", "name": "Potions", "status": "new", "type": "sdxl-lora", "createdAt": iso(now)},
        {"id": "made", "name": "potions", "status": "new", "type": "flux.1-lora",
         "createdAt": iso(now - CLOCK_SKEW + 5)},
        {"id": "undated", "name": "Potions", "status": "new", "type": "flux.1-lora"}], create=failure)
    models, history = own_models(tmp_path, server)
    assert models.create("Potions", "flux.1-lora") == "made"
    assert [c[0] for c in server.calls].count("POST") == 1
    history.close()


def test_a_lost_model_not_found_raises_and_a_refusal_is_not_looked_for(tmp_path):
    from scenario_nb._errors import APIConnectionError, BadRequestError
    server = ModelsServer([{"id": "old", "name": "Potions", "status": "new", "type": "flux.1-lora",
                            "createdAt": "2020-01-01T00:00:00Z"}], create=APIConnectionError("reset"))
    models, history = own_models(tmp_path, server)
    with pytest.raises(APIConnectionError):
        models.create("Potions", "flux.1-lora")
    server.create_answer = BadRequestError("bad name")
    server.calls.clear()
    with pytest.raises(BadRequestError):
        models.create("Potions", "flux.1-lora")
    assert [c[0] for c in server.calls] == ["POST"]
    history.close()


def drafts_rig(tmp_path):
    from scenario_nb._history import TrainingRecord
    server = ModelsServer([{"id": "d1", "name": "Potions", "status": "new"},
                           {"id": "d2", "name": "Boats", "status": "new"},
                           {"id": "d3", "name": "boats", "status": "new"},
                           {"id": "t1", "name": "Trained", "status": "trained"},
                           {"id": "x1", "name": "Not ours", "status": "new"},
                           {"id": "o1", "name": "Other backend", "status": "new"}])
    models, history = own_models(tmp_path, server)
    for model_id in ("d1", "d2", "d3", "t1"):
        history.record_training(TrainingRecord(model_id=model_id, backend_id=BACKEND))
    history.record_training(TrainingRecord(model_id="o1", backend_id=URL + "#key2"))
    return models, history, server


def test_drafts_are_this_backends_untrained_models(tmp_path):
    models, history, _ = drafts_rig(tmp_path)
    assert [m["id"] for m in models.drafts()] == ["d1", "d2", "d3"]
    history.close()


def test_drafts_are_found_among_more_than_a_hundred_trainings(tmp_path):
    from scenario_nb._history import TrainingRecord
    models, history, server = drafts_rig(tmp_path)
    for i in range(120):
        history.record_training(TrainingRecord(model_id=f"z{i}", backend_id=BACKEND, created_at=time.time() + i))
    assert [m["id"] for m in models.drafts()] == ["d1", "d2", "d3"]
    history.close()


def test_with_an_unreadable_history_nothing_is_a_draft(tmp_path):
    from scenario_nb._engine._own_models import OwnModels
    from scenario_nb._errors import InputError

    class Unreadable:
        def trainings(self, backend_id, limit=100):
            raise StorageError("unreadable")
    server = ModelsServer([{"id": "d1", "name": "Potions", "status": "new"}])
    models = OwnModels(server, Ledger(Unreadable, LiveRequests(), backend_id=BACKEND, base_url=URL))
    assert models.drafts() == []
    with pytest.raises(InputError):
        models.delete_draft("d1")
    assert [c[0] for c in server.calls if c[0] == "DELETE"] == []


def test_a_draft_is_deleted_by_id_or_name_and_nothing_else_is(tmp_path):
    from scenario_nb._errors import InputError
    from scenario_nb._history import TrainingRecord
    models, history, server = drafts_rig(tmp_path)
    assert models.delete_draft(" potions ")["id"] == "d1"
    assert models.delete_draft("d2")["id"] == "d2"
    deleted = [c[1] for c in server.calls if c[0] == "DELETE"]
    assert deleted == ["/models/d1", "/models/d2"]
    for refused, words in (("Trained", "no draft named 'Trained'"), ("x1", "no draft named 'x1'"),
                           ("o1", "no draft"), ("Boats", "2 drafts are named 'Boats': d2, d3; name one by its id")):
        with pytest.raises(InputError) as error:
            models.delete_draft(refused)
        assert words in str(error.value)
    assert [c[1] for c in server.calls if c[0] == "DELETE"] == deleted
    server.models.append({"id": "n1", "status": "new"})  # a draft with no name
    history.record_training(TrainingRecord(model_id="n1", backend_id=BACKEND))
    with pytest.raises(InputError):
        models.delete_draft("xxxx")
    assert [c[1] for c in server.calls if c[0] == "DELETE"] == deleted
    history.close()


def test_a_learned_limit_does_not_count_the_request_being_sent(rig):
    """Limit 1, nothing of ours running: the one request being sent is not its own obstacle."""
    r = rig(created("job_1"))
    r.sender._slots.learned(1)
    handle = a_request()
    r.sender.submit(handle)
    r.lanes.run_next()
    assert len(r.http.sent) == 1 and r.sender.waiting() == [] and r.adopted[0][0] is handle


# -- _engine/_captions.py ----------------------------------------------------------------------------------------
class CaptionServer:
    """`POST /generate/caption`: answers by the image's bytes (a dict, or an exception raised), and logs each
    request with what the history held for that image when it arrived."""

    def __init__(self, history, answers=None, delay=0.0, gather=0) -> None:
        """`gather`: each request is held until that many are in flight at once (or 10 s have passed), so the peak
        reached is the client's limit, whatever the machine's load."""
        self.history = history
        self.answers = dict(answers or {})
        self.delay = delay
        self.gather = gather
        self.requests: list = []
        self.in_flight = 0
        self.peak = 0
        self._lock = __import__("threading").Condition()

    def request(self, method, path, params=None, json_body=None):
        import base64
        import hashlib
        data = base64.b64decode(json_body["images"][0].split(",", 1)[1])
        digest = hashlib.sha256(data).hexdigest()
        rows = [(r.status, r.details_level) for r in self.history.captions(BACKEND, digest)]
        self.stamps = [(r.created_at, r.updated_at) for r in self.history.captions(BACKEND, digest)]
        with self._lock:
            self.requests.append((method, path, params, json_body["detailsLevel"], data, rows))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self._lock.notify_all()
            self._lock.wait_for(lambda: self.peak >= self.gather, timeout=10)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        answer = self.answers.get(data, {"captions": [f"caption of {data.decode()}"], "creativeUnitsCost": 2})
        if isinstance(answer, BaseException):
            raise answer
        return answer


def an_image(name: str):
    from scenario_nb._local_images import LocalImage
    return LocalImage(name, name.encode(), "image/png", 8, 8)


def captioner(history, server):
    from scenario_nb._engine._captions import Captioner
    return Captioner(server, Ledger(lambda: history, LiveRequests(), backend_id=BACKEND, base_url=URL))


def a_caption_row(image, level="basic", **changes):
    import hashlib
    from scenario_nb._history import CaptionRecord
    values = dict(status="done", caption=f"old caption of {image.name}", name=image.name, updated_at=time.time())
    values.update(changes)
    return CaptionRecord(BACKEND, hashlib.sha256(image.data).hexdigest(), level, **values)


def test_captions_are_priced_by_one_dry_run_for_the_images_not_captioned_yet(history):
    server = CaptionServer(history, {b"b": {"creativeUnitsCost": 3}})
    a, b, c, d = (an_image(n) for n in "abcd")
    history.record_caption(a_caption_row(a))
    history.record_caption(a_caption_row(c, status="unknown"))
    history.record_caption(a_caption_row(d, level="detailed"))  # another level: not this one's caption
    assert captioner(history, server).price([a, b, c, d], "basic") == 6.0
    assert [(m, p, q, lvl, data) for m, p, q, lvl, data, _ in server.requests] == [
        ("POST", "/generate/caption", {"dryRun": "true"}, "basic", b"b")]
    server.requests.clear()
    assert captioner(history, server).price([a, c], "basic") == 0.0 and server.requests == []
    server.answers[b"b"] = {}
    assert captioner(history, server).price([b], "basic") == 0.0


def test_captions_are_recorded_before_they_are_asked_for_and_reused_after(history):
    server = CaptionServer(history, {b"b": {"captions": ["a boat"], "creativeUnitsCost": "x"},
                                     b"e": {"captions": [None]}, b"f": {}})
    a, b, c, e, f = (an_image(n) for n in "abcef")
    history.record_caption(a_caption_row(a))
    history.record_caption(a_caption_row(c, status="unknown"))
    texts, lost = captioner(history, server).caption_all([a, b, c, e, f], "basic")
    assert texts == ["old caption of a", "a boat", "", "", ""] and lost == ["c"]
    assert sorted(r[4] for r in server.requests) == [b"b", b"e", b"f"]
    assert all(r[5] == [("sending", "basic")] and r[2] is None and r[3] == "basic" for r in server.requests)
    assert {(r[0], r[1]) for r in server.requests} == {("POST", "/generate/caption")}
    [row] = history.captions(BACKEND, __import__("hashlib").sha256(b"b").hexdigest())
    assert (row.status, row.caption, row.cost, row.name, row.details_level) == ("done", "a boat", None, "b", "basic")
    assert row.created_at <= row.updated_at <= time.time()
    server.requests.clear()
    assert captioner(history, server).caption_all([b, a], "basic") == (["a boat", "old caption of a"], [])
    assert server.requests == []


def test_a_caption_costs_what_the_answer_says(history):
    server = CaptionServer(history)
    before = time.time()
    captioner(history, server).caption_all([an_image("a")], "basic")
    [(created, updated)] = server.stamps  # the row written before the request left
    assert before <= created == updated <= time.time()
    [row] = history.captions(BACKEND)
    assert row.cost == 2.0 and row.caption == "caption of a"


def test_a_lost_caption_is_recorded_unknown_and_raised_after_the_others(history):
    from scenario_nb._engine._captions import CaptionLost
    from scenario_nb._errors import APIConnectionError, ServerError
    server = CaptionServer(history, {b"a": ServerError("bad gateway"), b"c": APIConnectionError("reset")})
    a, b, c = (an_image(n) for n in "abc")
    with pytest.raises(CaptionLost) as lost:
        captioner(history, server).caption_all([a, b, c], "basic")
    assert "bad gateway" in str(lost.value) and " a " in f" {lost.value} "
    rows = {r.name: r.status for r in history.captions(BACKEND)}
    assert rows == {"a": "unknown", "b": "done", "c": "unknown"}
    server.requests.clear()
    texts, lost_names = captioner(history, server).caption_all([a, b, c], "basic")
    assert texts == ["", "caption of b", ""] and lost_names == ["a", "c"] and server.requests == []


def test_a_refused_caption_leaves_no_row_and_is_raised(history):
    from scenario_nb._errors import BadRequestError
    server = CaptionServer(history, {b"a": BadRequestError("too small")})
    with pytest.raises(BadRequestError):
        captioner(history, server).caption_all([an_image("a"), an_image("b")], "basic")
    assert [r.name for r in history.captions(BACKEND)] == ["b"]


def test_a_history_that_cannot_be_read_or_written_asks_for_no_caption(history):
    class Unwritable:
        def __init__(self, readable):
            self.readable = readable

        def captions(self, backend_id, digest=None):
            if not self.readable:
                raise StorageError("unreadable")
            return []

        def record_caption(self, record):
            raise StorageError("disk full")
    for readable, reason in ((False, "unreadable"), (True, "disk full")):
        server = CaptionServer(history)
        with pytest.raises(StorageError) as refused:
            captioner(Unwritable(readable), server).caption_all([an_image("a")], "basic")
        assert reason in str(refused.value) and "no caption was asked for" in str(refused.value)
        assert server.requests == []


def test_a_caption_made_but_not_recorded_is_used_and_logged(history, log_lines):
    class WritesOnce:
        def __init__(self):
            self.writes = 0

        def captions(self, backend_id, digest=None):
            return []

        def record_caption(self, record):
            self.writes += 1
            if self.writes > 1:
                raise StorageError("disk full")
    server = CaptionServer(history)
    assert captioner(WritesOnce(), server).caption_all([an_image("a")], "basic") == (["caption of a"], [])
    assert log_lines == ["the caption of a is not in the history: disk full"]


def test_captions_are_asked_for_sixteen_at_a_time(history):
    server = CaptionServer(history, gather=16, delay=0.3)  # held till 16 are in flight, then 0.3 s more
    images = [an_image(f"img{i:02d}") for i in range(20)]
    texts, _ = captioner(history, server).caption_all(images, "basic")
    assert texts == [f"caption of img{i:02d}" for i in range(20)] and server.peak == 16


def test_a_request_that_cannot_be_recorded_is_never_sent(rig):
    """The write-ahead: no row, no request (StorageError), and nothing queued or followed."""
    r = rig(created("job_1"))
    r.sender._ledger = Ledger(BrokenHistory, r.live, backend_id=BACKEND, base_url=URL)
    handle = a_request()
    with pytest.raises(StorageError, match="nothing was sent"):
        r.sender.submit(handle)
    assert r.lanes.tasks == [] and r.http.sent == [] and r.live.get(handle.request_id) is None


def test_a_closed_client_says_so(rig):
    from scenario_nb._errors import SubmitFailedError
    r = rig()
    r.lanes.closed = True
    with pytest.raises(SubmitFailedError) as refused:
        r.sender.submit(a_request())
    assert str(refused.value) == ("this client was closed (the session switched backend or the kernel is stopping): "
                                  "nothing was sent")


def test_a_new_request_waits_behind_those_already_held(rig):
    """The gate has opened but the queue has not drained yet: a new request joins the queue at once (waiting,
    recorded so, answered), never ahead of the held ones."""
    r = rig(created("job_1"), created("job_2"))
    r.http.creation_gate.wait = 1.0
    first = a_request(n=1)
    r.sender.submit(first)
    r.http.creation_gate.wait = 0.0
    second = a_request(n=2)
    r.sender.submit(second)
    assert second.status == "waiting" and r.row(second).status == "waiting" and second._answered.is_set()
    assert r.sender.waiting() == [first, second]
    while r.lanes.tasks:
        r.lanes.run_next()
    assert [body["n"] for _, _, body in r.http.sent] == [1, 2]


def test_the_listing_starts_at_the_earliest_moment_to_the_millisecond(search_rig):
    r = search_rig()
    assert r.search._find_job(a_lost_request(0.0), 1_700_000_001.25) is None
    assert r.listing.asked == [("/jobs", {"createdAfter": "2023-11-14T22:13:21.250Z", "pageSize": 100})]


def test_the_search_ends_when_its_time_is_up_to_the_second(search_rig, monkeypatch):
    r = search_rig()
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    handle = a_lost_request(now - 61, sent=now - r.settings.search_seconds)  # exactly the search time ago
    r.search._reconcile(handle)
    assert handle.done and handle.status == "unknown" and r.lanes.tasks == []


def test_jobs_named_by_id_alone_are_known_and_owned_like_the_others(search_rig):
    from scenario_nb._history import JobRecord
    now = time.time()

    def by_id(job_id, created):
        row = a_job(job_id, created)
        row["id"] = row.pop("jobId")
        return row
    followed, theirs, mine = by_id("job_followed", now - 4), by_id("job_theirs", now - 3), by_id("job_mine", now - 2)
    r = search_rig(([followed, theirs, mine], None))
    r.live.know_job("job_followed")
    r.history.record(JobRecord(request_id="req_other", job_id="job_theirs", backend_id=BACKEND))
    assert r.search._find_job(a_lost_request(now), now - 10) is mine


def test_a_job_made_at_the_earliest_moment_itself_is_not_the_requests(search_rig):
    earliest = 1_700_000_001.25
    r = search_rig(([a_job("job_then", earliest)], None))
    assert r.search._find_job(a_lost_request(earliest + 10), earliest) is None


def test_of_two_undated_candidates_the_first_listed_is_taken(search_rig):
    now = time.time()
    first, second = a_job("job_1", None), a_job("job_2", None)
    r = search_rig(([first, second], None))
    assert r.search._find_job(a_lost_request(now), now - 10) is first


def test_a_model_made_just_within_the_clock_skew_is_the_one_whose_answer_was_lost(tmp_path, monkeypatch):
    from scenario_nb._engine._own_models import CLOCK_SKEW
    from scenario_nb._errors import APIConnectionError
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    server = ModelsServer([{"id": "made", "name": "Potions", "status": "new", "type": "flux.1-lora",
                            "createdAt": iso(now - CLOCK_SKEW)}], create=APIConnectionError("reset"))
    models, history = own_models(tmp_path, server)
    assert models.create("Potions", "flux.1-lora") == "made"
    history.close()


def test_drafts_are_read_from_the_newest_ten_thousand_trainings(tmp_path):
    """The oldest of 10,001 trainings is past the limit: its model is not counted as a draft."""
    import sqlite3
    models, history, server = drafts_rig(tmp_path)
    server.models.append({"id": "oldest", "name": "Oldest", "status": "new"})
    conn = sqlite3.connect(history.path)
    with conn:
        conn.execute("DELETE FROM trainings")
        conn.executemany("INSERT INTO trainings (model_id, backend_id, created_at) VALUES (?, ?, ?)",
                         [("oldest", BACKEND, 1.0)] + [(f"z{i}", BACKEND, 10.0 + i) for i in range(10_000)])
    conn.close()
    assert models.drafts() == []
    history.close()


# -- _engine/_ledger.py: the workbench's own rows (model creations, uploads) -------------------------------------
def test_a_workbench_intent_is_written_before_it_leaves(ledger, history):
    before = time.time()
    row = ledger.intent("model", name="Potions", what="create a flux.1-lora model", model_id="m0")
    stored = history.get_request(row.request_id)
    assert stored == row and row.request_id.startswith("req_")
    assert (row.kind, row.model_name, row.prompt, row.model_id, row.status, row.source) == (
        "model", "Potions", "create a flux.1-lora model", "m0", "sending", "workbench")
    assert (row.backend_id, row.backend_url, row.job_id, row.finished_at) == (BACKEND, URL, None, None)
    assert before <= row.sent_at == row.created_at == row.updated_at <= time.time()
    assert ledger.intent("upload", name="Potions", what="a.png").model_id == ""


def test_a_workbench_intent_that_cannot_be_written_is_refused(live):
    ledger = Ledger(BrokenHistory, live, backend_id=BACKEND, base_url=URL)
    with pytest.raises(StorageError) as refused:
        ledger.intent("model", name="Potions", what="create")
    assert str(refused.value) == "disk full; nothing was sent"


@pytest.mark.parametrize("status, final", [("success", True), ("not-sent", True), ("unknown", False)])
def test_a_workbench_row_is_settled_with_its_outcome(ledger, history, status, final):
    row = ledger.intent("model", name="Potions", what="create")
    sent = row.updated_at
    ledger.settle(row, status, model_id="model_9", cost=5.0)
    stored = history.get_request(row.request_id)
    assert (stored.status, stored.model_id, stored.cost) == (status, "model_9", 5.0)
    assert sent <= stored.updated_at <= time.time()
    assert stored.finished_at == (stored.updated_at if final else None)


def test_a_workbench_row_that_cannot_be_settled_is_logged(live, log_lines):
    from scenario_nb._history import JobRecord
    ledger = Ledger(BrokenHistory, live, backend_id=BACKEND, base_url=URL)
    row = JobRecord(request_id="req_w", kind="upload", model_name="Potions")
    ledger.settle(row, "success")
    assert row.status == "success" and log_lines == ["the upload of Potions is not in the history: disk full"]


def test_a_training_row_names_the_process_that_wrote_it(ledger, history):
    import os
    import socket
    ledger.record_training(a_training())
    assert history.training("model_t").owner == f"{socket.gethostname()}:{os.getpid()}"


# -- _engine/_own_models.py: creations through the ledger --------------------------------------------------------
def test_a_model_made_is_a_settled_row_of_its_own(tmp_path):
    server = ModelsServer(create={"model": {"id": "model_new"}, "creativeUnitsCost": 3})
    models, history = own_models(tmp_path, server)
    models.create("Potions", "flux.1-lora")
    [row] = history.workbench(BACKEND)
    assert (row.kind, row.model_name, row.status, row.model_id, row.cost) == (
        "model", "Potions", "success", "model_new", 3.0)
    assert row.prompt == "create a flux.1-lora model"
    history.close()


def test_a_refused_creation_is_not_sent_and_an_interrupted_one_unknown(tmp_path):
    from scenario_nb._errors import BadRequestError
    server = ModelsServer(create=BadRequestError("bad name"))
    models, history = own_models(tmp_path, server)
    with pytest.raises(BadRequestError):
        models.create("Potions", "flux.1-lora")
    server.create_answer = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        models.create("Boats", "flux.1-lora")
    rows = {r.model_name: (r.status, r.error) for r in history.workbench(BACKEND)}
    assert rows == {"Potions": ("not-sent", "bad name"),
                    "Boats": ("unknown", "interrupted while waiting for the answer")}
    history.close()


def test_a_lost_creation_found_or_not_is_settled_so(tmp_path):
    from scenario_nb._errors import APIConnectionError
    now = time.time()
    server = ModelsServer([{"id": "made", "name": "Potions", "status": "new", "type": "flux.1-lora",
                            "createdAt": iso(now)}], create=APIConnectionError("reset"))
    models, history = own_models(tmp_path, server)
    assert models.create("Potions", "flux.1-lora") == "made"
    with pytest.raises(APIConnectionError):
        models.create("Boats", "flux.1-lora")
    rows = {r.model_name: (r.status, r.model_id) for r in history.workbench(BACKEND)}
    assert rows == {"Potions": ("success", "made"), "Boats": ("unknown", "")}
    history.close()


def test_lost_creations_of_a_name_are_settled_by_the_model_found(tmp_path, monkeypatch):
    from scenario_nb._engine._own_models import CLOCK_SKEW
    models, history = own_models(tmp_path, ModelsServer())
    ledger = models._ledger
    lost = ledger.intent("model", name="Potions", what="create")
    ledger.settle(lost, "unknown", error="interrupted while waiting for the answer")
    sending = ledger.intent("model", name="Potions", what="create")
    later = ledger.intent("model", name="Potions", what="create")
    later.sent_at = time.time() + 10 * CLOCK_SKEW
    history.record(later)
    done = ledger.intent("model", name="Potions", what="create")
    ledger.settle(done, "success", model_id="model_old")
    upload = ledger.intent("upload", name="Potions", what="a.png")
    other = ledger.intent("model", name="Boats", what="create")
    models.settle_unknown("Potions", {"id": "model_found", "createdAt": iso(time.time() - CLOCK_SKEW + 1)})
    status = {r.request_id: (r.status, r.model_id) for r in history.workbench(BACKEND)}
    assert status[lost.request_id] == ("success", "model_found") == status[sending.request_id]
    assert status[later.request_id] == ("sending", "")  # sent after the model was made: not its creation
    assert status[done.request_id] == ("success", "model_old")
    assert status[upload.request_id] == ("sending", "") and status[other.request_id] == ("sending", "")
    assert history.get_request(lost.request_id).error is None
    history.close()


def test_lost_creations_are_left_alone_when_the_history_cannot_be_read(tmp_path):
    from scenario_nb._engine._own_models import OwnModels

    class Unreadable:
        def workbench(self, backend_id, name=None):
            raise StorageError("unreadable")
    models = OwnModels(ModelsServer(), Ledger(Unreadable, LiveRequests(), backend_id=BACKEND, base_url=URL))
    models.settle_unknown("Potions", {"id": "m"})  # no error


def test_a_model_a_lost_creation_may_have_made_is_a_draft(tmp_path):
    from scenario_nb._engine._own_models import CLOCK_SKEW
    now = time.time()
    server = ModelsServer([
        {"id": "made", "name": " potions ", "status": "new", "createdAt": iso(now)},
        {"id": "older", "name": "Potions", "status": "new", "createdAt": iso(now - CLOCK_SKEW - 60)},
        {"id": "trained", "name": "Potions", "status": "trained", "createdAt": iso(now)},
        {"id": "stranger", "name": "Boats", "status": "new", "createdAt": iso(now)},
        {"id": "settled", "name": "Kites", "status": "new"}])
    models, history = own_models(tmp_path, server)
    lost = models._ledger.intent("model", name="Potions", what="create")
    models._ledger.settle(lost, "unknown")
    done = models._ledger.intent("model", name="Kites", what="create")
    models._ledger.settle(done, "success", model_id="settled")
    upload = models._ledger.intent("upload", name="Boats", what="a.png")
    models._ledger.settle(upload, "unknown")
    assert sorted(m["id"] for m in models.drafts()) == ["made", "settled"]
    history.close()


def test_a_gate_closed_for_half_a_second_since_queueing_holds_the_only_request(rig):
    r = rig(created("job_1"))
    handle = a_request()
    r.sender.submit(handle)
    r.http.creation_gate.wait = 0.5  # a 429 elsewhere, after this one was queued; nothing else is held
    r.lanes.run_next()
    assert r.http.sent == [] and handle.status == "waiting" and r.sender.waiting() == [handle]
    assert [(t[1], t[3]) for t in r.lanes.tasks] == [(0.5, "send")]


def test_captions_are_asked_for_on_threads_named_for_them(history):
    """Their threads say what they are (in a stack dump or `threading.enumerate()`)."""
    import threading
    names: list = []

    class NamingServer(CaptionServer):
        def request(self, *args, **kwargs):
            names.append(threading.current_thread().name)
            return super().request(*args, **kwargs)
    captioner(history, NamingServer(history)).caption_all([an_image("a"), an_image("b")], "basic")
    assert len(names) == 2 and all(n.startswith("scenario-caption_") for n in names), names


def test_a_lost_creation_is_settled_by_a_model_made_exactly_at_the_clock_skew_edge(tmp_path, monkeypatch):
    from scenario_nb._engine._own_models import CLOCK_SKEW
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    models, history = own_models(tmp_path, ModelsServer())
    lost = models._ledger.intent("model", name="Potions", what="create")
    models._ledger.settle(lost, "unknown")
    models.settle_unknown("Potions", {"id": "model_edge", "createdAt": iso(now - CLOCK_SKEW)})
    assert history.get_request(lost.request_id).model_id == "model_edge"
    history.close()


def test_drafts_by_lost_creations_still_sending_or_by_name_and_never_by_uploads(tmp_path, monkeypatch):
    """A creation still `sending` (its kernel stopped mid-request) names a draft as a lost one does, to the second
    of the clock skew; an upload row's model id makes no draft, and a nameless model is no creation's."""
    from scenario_nb._engine._own_models import CLOCK_SKEW
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    server = ModelsServer([{"id": "edge", "name": "Potions", "status": "new", "createdAt": iso(now - CLOCK_SKEW)},
                           {"id": "uploaded_to", "name": "Boats", "status": "new"},
                           {"id": "nameless", "status": "new", "createdAt": iso(now)}])
    models, history = own_models(tmp_path, server)
    models._ledger.intent("model", name="Potions", what="create")  # still sending
    upload = models._ledger.intent("upload", name="Boats", what="a.png", model_id="uploaded_to")
    models._ledger.settle(upload, "success")
    odd = models._ledger.intent("model", name="xxxx", what="create")
    models._ledger.settle(odd, "unknown")
    assert [m["id"] for m in models.drafts()] == ["edge"]
    history.close()
