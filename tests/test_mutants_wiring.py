"""Tests written to kill mutants that mutmut planted in the engine's front (`scenario_nb/_engine/_engine.py`: the
parts wired together, and what the client and handles ask of them; the run, the figures and the mutants that
cannot be killed: tests/mutants-equivalent.md).

In-process and fast: an `Engine` on a scripted transport (nothing leaves the process), its parts either the real
ones (each handed the engine's shared pieces) or stand-ins that log what they were asked; checked by effect: the
requests sent, the rows the history holds, what each part was handed.
"""

from __future__ import annotations

import pytest

from scenario_nb._backoff import Backoff
from scenario_nb._engine._engine import Engine, lane_sizes
from scenario_nb._errors import APIConnectionError, BadRequestError, JobFailedError, RateLimitError
from scenario_nb._generation import CANCEL_WORDS, Generation
from scenario_nb._history import JobRecord

from ledger_parts import BACKEND, URL


class Http:
    base_url = URL

    def __init__(self, *outcomes) -> None:
        self.backoff = Backoff()
        self.outcomes = list(outcomes)
        self.sent: list = []

    def request(self, method, path, json_body=None, **kw):
        self.sent.append((method, path, json_body))
        outcome = self.outcomes.pop(0) if self.outcomes else {}
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Store:
    pass


@pytest.fixture
def engine(history):
    store = Store()
    e = Engine(Http(), history=lambda: history, store=lambda: store, backend_id=BACKEND)
    e.the_store = store
    yield e
    e.close()


def a_request(request_id="req_1", **kw) -> Generation:
    return Generation(model_id="m", request_id=request_id, prompt="p", status="queued", **kw)


class Log:
    """A stand-in part: every call logged as (name, args, kwargs), answered from `answers` by name."""

    def __init__(self, **answers) -> None:
        self.calls: list = []
        self.answers = answers

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            answer = self.answers.get(name)
            return answer(*args, **kwargs) if callable(answer) else answer
        return call


# -- lane_sizes, settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers, fetch", [(8, 6), (3, 1), (2, 1), (10, 8)])
def test_lanes_poll_on_two_send_on_four_and_fetch_on_the_rest(workers, fetch):
    assert lane_sizes(workers) == {"poll": 2, "fetch": fetch, "send": 4}


def test_eight_workers_by_default():
    assert lane_sizes() == {"poll": 2, "fetch": 6, "send": 4}


def test_the_engines_settings_are_its_parts_settings(history):
    e = Engine(Http(), history=lambda: history, store=lambda: None, backend_id=BACKEND, floor=0.5, ceiling=9.0,
               job_timeout=60.0, workers=5, target_quantile=0.5)
    s = e.settings
    assert (s.floor, s.ceiling, s.job_timeout, s.target_quantile) == (0.5, 9.0, 60.0, 0.5)
    assert (e.floor, e.ceiling, e.job_timeout, e.target_quantile, e.search_seconds, e.start_grace) == (
        0.5, 9.0, 60.0, 0.5, 75.0, 120.0)
    e.floor, e.ceiling, e.job_timeout, e.search_seconds, e.target_quantile, e.start_grace = 1, 2, 3, 4, 0.9, 6
    assert (s.floor, s.ceiling, s.job_timeout, s.search_seconds, s.target_quantile, s.start_grace) == (
        1, 2, 3, 4, 0.9, 6)
    assert e._lanes._sizes == {"poll": 2, "fetch": 3, "send": 4}
    e.close()


def test_the_default_settings(engine):
    s = engine.settings
    assert (s.floor, s.ceiling, s.job_timeout, s.target_quantile) == (0.25, 5.0, 3600.0, 0.7)
    assert engine._lanes._sizes == {"poll": 2, "fetch": 6, "send": 4}


# -- the parts, each handed the engine's shared pieces -----------------------------------------------------------

def test_every_part_is_handed_the_engines_shared_pieces(engine, history):
    e, http = engine, engine._http
    assert (e.backend_id, e.base_url) == (BACKEND, URL)
    assert e._lanes._settings is e.settings
    assert (e._ledger._live, e._ledger.backend_id, e._ledger.base_url, e._ledger.history) == (
        e._live, BACKEND, URL, history)
    t = e._timing
    assert (t._live, t._settings, t._backend_id, t._history_factory()) == (e._live, e.settings, BACKEND, history)
    c = e._completer
    assert (c._http, c._store_factory(), c._lanes, c._ledger, c._settings) == (
        http, e.the_store, e._lanes, e._ledger, e.settings)
    p = e._poller
    assert (p._http, p._lanes, p._live, p._timing, p._ledger, p._settings, p._server_clock) == (
        http, e._lanes, e._live, e._timing, e._ledger, e.settings, e._server_clock)
    assert p._complete == c.complete
    s = e._search
    assert (s._http, s._lanes, s._live, s._ledger, s._settings, s._adopt, s._server_clock) == (
        http, e._lanes, e._live, e._ledger, e.settings, p.adopt, e._server_clock)
    d = e._sender
    assert (d._http, d._lanes, d._live, d._ledger, d._settings, d._adopt, d._look_for) == (
        http, e._lanes, e._live, e._ledger, e.settings, p.adopt, s.look_for)
    r = e._recovery
    assert (r._owner, r._http, r._live, r._ledger, r._poller, r._search, r._completer) == (
        e, http, e._live, e._ledger, p, s, c)
    f = e._trainings
    assert (f._owner, f._http, f._lanes, f._ledger, f._settings, f._store_factory()) == (
        e, http, e._lanes, e._ledger, e.settings, e.the_store)
    w = e._workbench
    assert (w._owner, w._http, w._ledger, w._follower, w._store_factory()) == (e, http, e._ledger, f, e.the_store)


# -- local state ----------------------------------------------------------------------------------------------

def test_the_history_store_and_durations_are_the_parts(engine, history):
    assert engine.history is history and engine.store is engine.the_store
    assert engine.durations is engine._timing.durations


def test_in_flight_and_waiting_are_the_live_requests_and_the_senders_queue(engine):
    a, b = a_request("a"), a_request("b")
    engine._live.add(a)
    engine._live.add(b)
    b._finish(None, "success")
    assert engine.in_flight() == [a]
    engine._sender = Log(waiting=["held"])
    assert engine.waiting() == ["held"]


def test_a_live_handle_by_job_request_or_request_key(engine):
    a, b = a_request("a"), a_request("b", inputs={"seed": 1})
    engine._live.bind_job("job_a", a)
    engine._live.add(b)
    assert engine.live_handle(job_id="job_a") is a and engine.live_handle(job_id="job_x") is None
    assert engine.live_handle(request_id="b") is b and engine.live_handle(request_id="x") is None
    from scenario_nb._engine._ledger import Ledger
    assert engine.live_handle(request_key=Ledger.request_key(b)) is b
    assert engine.live_handle(request_key=Ledger.request_key(a)) is a
    b._finish(None, "success")
    assert engine.live_handle(request_key=Ledger.request_key(b)) is None
    assert engine.live_handle(request_key="nothing") is None


def test_the_first_live_handle_of_a_request_key_is_returned(engine):
    a, b = a_request("a"), a_request("b")
    engine._live.add(a)
    engine._live.add(b)
    from scenario_nb._engine._ledger import Ledger
    assert engine.live_handle(request_key=Ledger.request_key(a)) is a


def test_a_closed_engine_says_so(engine):
    assert engine.closed is False
    engine.close()
    assert engine.closed is True


# -- submit, submit_many, wait_answered ---------------------------------------------------------------------------

def answered_sender():
    return Log(submit=lambda h: h._answered.set())


def test_submit_sends_then_waits_for_an_answer(engine):
    engine._sender = sender = answered_sender()
    h = a_request()
    assert engine.submit(h) is h and sender.calls == [("submit", (h,), {})]


def test_submit_without_blocking_returns_at_once(engine):
    engine._sender = sender = Log()
    h = a_request()
    assert engine.submit(h, block=False) is h and sender.calls == [("submit", (h,), {})]


def test_submit_many_sends_each_then_waits_for_all(engine):
    engine._sender = sender = answered_sender()
    hs = [a_request("a"), a_request("b")]
    assert engine.submit_many(hs) is hs and [c[1][0] for c in sender.calls] == hs


class Interrupted:
    def __init__(self, after: int = 0) -> None:
        self.after = after

    def wait(self, timeout):
        assert timeout == 0.05
        if self.after:
            self.after -= 1
            return False
        raise KeyboardInterrupt


def test_a_ctrl_c_while_waiting_carries_the_handles(engine):
    a, b = a_request("a"), a_request("b")
    a._answered.set()
    b._answered = Interrupted(after=2)
    with pytest.raises(KeyboardInterrupt) as stopped:
        engine.wait_answered([a, b])
    assert stopped.value.handles == [a, b]


# -- cancel -------------------------------------------------------------------------------------------------------

def notes(h) -> list:
    seen: list = []
    h.on_update(lambda g: seen.append(g.note))
    seen.clear()
    return seen


def test_cancelling_a_finished_request_asks_nothing(engine):
    h = a_request()
    h._finish(None, "success")
    seen = notes(h)
    assert engine.cancel(h) == "finished" and engine._http.sent == []
    assert h.note == CANCEL_WORDS["finished"] and seen == [CANCEL_WORDS["finished"]]


def test_a_request_held_here_is_dropped_and_ended_not_sent(engine, history):
    engine._sender = sender = Log(drop=True)
    h = a_request()
    engine._live.add(h)
    assert engine.cancel(h) == "dropped" and engine._http.sent == []
    assert sender.calls == [("drop", (h,), {})]
    assert h.note == CANCEL_WORDS["dropped"] and h.done and h.status == "not-sent"
    assert isinstance(h.exception, JobFailedError)
    assert (h.exception.job_id, h.exception.status, str(h.exception)) == (
        "req_1", "canceled", "canceled before it was sent: nothing was charged")
    assert history.get_request("req_1").status == "not-sent" and engine._live.get("req_1") is None


def test_a_request_being_sent_cannot_be_cancelled_yet(engine):
    engine._sender = Log(drop=False)
    h = a_request()
    seen = notes(h)
    assert engine.cancel(h) == "unavailable" and not h.done
    assert h.note == CANCEL_WORDS["unavailable"] and seen == [CANCEL_WORDS["unavailable"]]


def test_a_job_is_asked_to_cancel_and_polled_at_once(engine):
    engine._poller = poller = Log()
    h = a_request(job_id="job_1")
    assert engine.cancel(h) == "requested"
    assert engine._http.sent == [("POST", "/jobs/job_1/action", {"action": "cancel"})]
    assert poller.calls == [("poll_soon", (h,), {})] and h.note == CANCEL_WORDS["requested"]


@pytest.mark.parametrize("refusal, outcome", [
    (BadRequestError("this job cannot be CANCELED"), "refused"),
    (BadRequestError("Cancel is not supported"), "refused"),
    (BadRequestError("job is finished"), "unavailable"),
    (RateLimitError("slow"), "unavailable"),
    (APIConnectionError("reset"), "unavailable"),
])
def test_a_refused_or_unreachable_cancel_says_which(engine, refusal, outcome):
    engine._http.outcomes = [refusal]
    engine._poller = poller = Log()
    h = a_request(job_id="job_1")
    assert engine.cancel(h) == outcome and h.note == CANCEL_WORDS[outcome] and poller.calls == []


# -- what is handed on to the parts --------------------------------------------------------------------------------

def test_requests_from_the_history_are_the_recoverys(engine):
    engine._recovery = r = Log(reattach="re", finished_handle="fin", follow_record="fol", recover=["all"])
    row = JobRecord("req_1")
    assert (engine.reattach("job_1"), engine.finished_handle(row), engine.follow_record(row),
            engine.recover()) == ("re", "fin", "fol", ["all"])
    assert r.calls == [("reattach", ("job_1",), {}), ("finished_handle", (row,), {}),
                       ("follow_record", (row,), {}), ("recover", (), {})]


def test_whether_outputs_are_stored_is_the_completers(engine):
    engine._completer = c = Log(outputs_stored=True)
    row = JobRecord("req_1")
    assert engine.outputs_stored(row) is True and c.calls == [("outputs_stored", (row,), {})]


def test_trainings_are_the_followers(engine):
    engine._trainings = f = Log(live_training="live", trainings_in_flight=["t"], cancel_training="requested",
                                training_model="model", finished_training="fin", reattach_training="re",
                                recover_trainings=["r"])
    row = object()
    assert engine.live_training("m1") == "live" and engine.trainings_in_flight() == ["t"]
    assert engine.resume_training("t1") is None
    assert engine.cancel_training("t2") == "requested" and engine.training_model("t3") == "model"
    assert engine.finished_training(row) == "fin" and engine.reattach_training("m2") == "re"
    assert engine.recover_trainings() == ["r"]
    assert f.calls == [("live_training", ("m1",), {}), ("trainings_in_flight", (), {}),
                       ("resume_training", ("t1",), {}), ("cancel_training", ("t2",), {}),
                       ("training_model", ("t3",), {}), ("finished_training", (row,), {}),
                       ("reattach_training", ("m2",), {}), ("recover_trainings", (), {})]


def test_the_paid_steps_of_a_training_are_the_workbenchs(engine):
    engine._workbench = w = Log(train="handle", drafts=["d"], delete_draft={"id": "x"}, caption_images="table")
    confirm = object()
    assert engine.train("plan", dry_run=True, max_cost=3.0, confirm=confirm) == "handle"
    assert engine.train("plan2") == "handle"
    assert engine.drafts() == ["d"] and engine.delete_draft("x") == {"id": "x"}
    assert engine.caption_images(["img"], "action", 2.0) == "table"
    assert engine.caption_images(["img"], "basic") == "table"
    assert w.calls == [("train", ("plan",), {"dry_run": True, "max_cost": 3.0, "confirm": confirm}),
                       ("train", ("plan2",), {"dry_run": False, "max_cost": None, "confirm": None}),
                       ("drafts", (), {}), ("delete_draft", ("x",), {}),
                       ("caption_images", (["img"], "action", 2.0), {}),
                       ("caption_images", (["img"], "basic", None), {})]


def test_submit_waits_for_the_answer_by_default(engine):
    engine._sender = Log()
    h = a_request()
    h._answered = Interrupted()  # waiting for it is stopped by a Ctrl-C
    with pytest.raises(KeyboardInterrupt) as stopped:
        engine.submit(h)
    assert stopped.value.handles == [h]
