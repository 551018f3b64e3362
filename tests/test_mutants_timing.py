"""Tests written to kill mutants that mutmut planted in the timing model (`scenario_nb/_engine/_timing.py`; the run,
the figures and the mutants that cannot be killed: tests/mutants-equivalent.md).

In-process and fast: `PollTiming`, `DurationModel` and `ServerClock` with real live bookkeeping and history, a clock
the test moves and a fixed random share (the modules' `time` and `random` swapped: no sleeping). Checked by
effect: the delays and due times returned, the scouts chosen, the durations learned.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scenario_nb._engine import _clock, _live, _timing
from scenario_nb._engine._live import Settings
from scenario_nb._engine._timing import (DurationModel, PollTiming, ServerClock, phase_start, server_duration)
from scenario_nb._errors import StorageError
from scenario_nb._generation import Generation
from scenario_nb._history import JobRecord

from ledger_parts import BACKEND, ModuleClock

NOW = 1_000_000.0


def near(value):
    """Equal to the microsecond (pytest.approx's default, relative, would allow a whole second at NOW)."""
    return pytest.approx(value, rel=0, abs=1e-5)


def Clock() -> ModuleClock:  # noqa: N802 (a class in the other files)
    return ModuleClock(wall=NOW)


class Random:
    def __init__(self) -> None:
        self.share = 1.0
        self.asked: list = []

    def uniform(self, a, b):
        self.asked.append((a, b))
        return self.share


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_clock, "time", c)  # the engine's clock reads the time through this module
    return c


@pytest.fixture
def rand(monkeypatch):
    r = Random()
    monkeypatch.setattr(_timing, "random", r)
    return r


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


class Rig:
    def __init__(self, history, live) -> None:
        self.history, self.live = history, live
        self.settings = Settings(floor=1.0, ceiling=20.0, target_quantile=0.7)
        self.timing = PollTiming(live, self.settings, history=lambda: history, backend_id=BACKEND)

    def job(self, request_id, model="m", sent=NOW - 10, status="queued", job_id=None, progress=0.0,
            history=None, offset=0.0) -> Generation:
        h = Generation(model_id=model, request_id=request_id, prompt="p", status=status)
        h._set(sent_at=sent, job_id=job_id or f"job_{request_id}", progress=progress,
               status_history=history or [], server_offset=offset)
        self.live.bind_job(h.job_id, h)
        return h


@pytest.fixture
def rig(history, live, clock, rand):
    return Rig(history, live)


# -- ServerClock -----------------------------------------------------------------------------------------------

def test_until_an_answer_says_otherwise_the_clock_may_be_ten_seconds_ahead():
    c = ServerClock()
    assert c.ahead_at_most() == 10.0 and c.earliest_job(100.0) == 90.0


def test_a_creation_answer_says_how_far_ahead_plus_a_margin():
    c = ServerClock()
    c.created({"createdAt": iso(NOW - 2)}, NOW)
    c.created({"createdAt": iso(NOW - 3)}, NOW + 0.0)
    assert c.ahead_at_most() == near(2.5) and c.earliest_job(NOW) == near(NOW - 2.5)


def test_a_creation_answer_without_a_date_teaches_nothing():
    c = ServerClock()
    c.created({"status": "queued"}, NOW)
    c.created("odd", NOW)
    assert c.ahead_at_most() == 10.0


def test_other_answers_can_only_say_less(rig):
    c = ServerClock()
    c.saw({"createdAt": iso(NOW - 50), "updatedAt": iso(NOW - 4),
           "statusHistory": [{"date": iso(NOW - 6)}, "odd", {"status": "x"}]}, NOW)
    assert c.ahead_at_most() == near(4.5)  # its newest stamp
    c.saw({"statusHistory": [{"date": iso(NOW - 3)}]}, NOW)
    assert c.ahead_at_most() == near(3.5)
    c.created({"createdAt": iso(NOW - 1)}, NOW)  # the creation is newer: it stamps what it saw too
    assert c.ahead_at_most() == near(1.5)
    c.saw({}, NOW)
    c.saw("odd", NOW)
    assert c.ahead_at_most() == near(1.5)


def test_a_loose_bound_above_the_close_one_changes_nothing():
    c = ServerClock()
    c._created.append(2.0)
    c._seen.append(5.0)
    assert c.ahead_at_most() == 2.5


def test_a_loose_bound_alone_is_taken_when_under_the_assumption():
    c = ServerClock()
    c._seen.append(20.0)
    assert c.ahead_at_most() == 10.0


def test_only_the_latest_32_answers_count():
    c = ServerClock()
    c.created({"createdAt": iso(NOW - 1)}, NOW)
    for _ in range(32):
        c.created({"createdAt": iso(NOW - 5)}, NOW)
    assert c.ahead_at_most() == near(5.5)
    small = ServerClock(size=2)
    small.created({"createdAt": iso(NOW - 1)}, NOW)
    small.created({"createdAt": iso(NOW - 5)}, NOW)
    small.created({"createdAt": iso(NOW - 5)}, NOW)
    assert small.ahead_at_most() == near(5.5)


def test_only_the_latest_32_loose_bounds_count():
    c = ServerClock()
    c.saw({"createdAt": iso(NOW - 1)}, NOW)
    for _ in range(32):
        c.saw({"createdAt": iso(NOW - 5)}, NOW)
    assert c.ahead_at_most() == near(5.5)


# -- DurationModel, server_duration, phase_start -------------------------------------------------------------------

def test_durations_are_a_quantile_of_the_positive_ones_seen():
    d = DurationModel()
    assert d.quantile("m", 0.7) is None
    for s in (5, 1, 0, -2, 3, 2, 4):
        d.add("m", s)
    assert [d.quantile("m", q) for q in (0.0, 0.5, 0.7, 0.99, 1.0)] == [1, 3, 4, 5, 5]
    assert d.quantile("other", 0.5) is None


def test_only_the_latest_32_durations_count():
    d = DurationModel()
    d.add("m", 100.0)
    for _ in range(32):
        d.add("m", 1.0)
    assert d.quantile("m", 1.0) == 1.0
    small = DurationModel(size=2)
    for s in (100.0, 1.0, 1.0):
        small.add("m", s)
    assert small.quantile("m", 1.0) == 1.0


def test_a_model_is_seeded_once_with_its_positive_durations():
    d = DurationModel()
    d.seed("m", [3.0, 0.0, -1.0, 1.0])
    assert d.quantile("m", 0.0) == 1.0 and d.quantile("m", 1.0) == 3.0
    d.seed("m", [0.5])
    assert d.quantile("m", 0.0) == 1.0
    d.add("n", 9.0)
    d.seed("n", [0.5])
    assert d.quantile("n", 0.0) == 9.0


def test_a_server_duration_runs_from_the_first_status_to_the_last_success():
    history = [{"status": "queued", "date": iso(NOW + 1)}, {"status": "in-progress", "date": iso(NOW)}, "odd",
               {"status": "success", "date": iso(NOW + 5)}, {"status": "success", "date": iso(NOW + 7)}]
    assert server_duration(history) == near(7.0)


@pytest.mark.parametrize("history", [
    [],
    [{"status": "queued", "date": iso(NOW)}],
    [{"status": "queued"}, {"status": "success"}],
    [{"status": "queued", "date": iso(NOW)}, {"status": "success", "date": iso(NOW + 3)}, {"status": "success"}],
    ["odd", {"status": "success", "date": "not a date"}],
])
def test_no_server_duration_without_dated_statuses_and_a_dated_success(history):
    assert server_duration(history) is None


def test_a_phase_starts_at_its_first_date_on_our_clock():
    h = Generation(model_id="m", prompt="p", status="queued")
    h._set(server_offset=2.0, status_history=[{"status": "queued", "date": iso(NOW)},
                                              {"status": "in-progress", "date": iso(NOW + 1)},
                                              {"status": "in-progress", "date": iso(NOW + 4)},
                                              {"status": "finalizing"}])
    assert phase_start(h, "queued") == near(NOW + 2)
    assert phase_start(h, "in-progress") == near(NOW + 3)
    assert phase_start(h, "finalizing") is None and phase_start(h, "success") is None


# -- PollTiming.learn_success, sibling_dues ----------------------------------------------------------------------

def a_success(rig, request_id="r", model="m", duration=10.0, finalize=None, offset=0.0):
    history = [{"status": "queued", "date": iso(NOW - duration)}]
    if finalize is not None:
        history.append({"status": "finalizing", "date": iso(NOW - finalize)})
    history.append({"status": "success", "date": iso(NOW)})
    return rig.job(request_id, model=model, status="success", history=history, offset=offset)


def test_a_success_teaches_its_duration_and_how_long_it_finalized(rig):
    h = a_success(rig, duration=10.0, finalize=2.0)
    assert rig.timing.learn_success(h) == near(10.0)
    assert rig.timing.durations.quantile("m", 0.5) == near(10.0)
    assert rig.timing._finishing.quantile("m", 0.5) == near(2.0)


def test_siblings_are_due_when_the_model_usually_ends_if_later(rig):
    rig.timing.durations.add("m", 30.0)
    assert rig.timing.learn_success(a_success(rig, "a", duration=10.0)) == near(30.0)
    assert rig.timing.learn_success(a_success(rig, "b", duration=50.0)) == near(50.0)
    assert rig.timing._finishing.quantile("m", 0.5) is None  # no finalizing status


def test_a_success_without_a_duration_teaches_none_and_stops_scouting(rig):
    h = rig.job("r", status="success", history=[{"status": "success"}])
    rig.timing._scouts["r"] = 0.0
    rig.timing._learned["r"] = 5.0
    assert rig.timing.learn_success(h) is None
    assert rig.timing._scouts == {} and rig.timing._learned == {} and rig.timing.durations.quantile("m", 0.5) is None


def test_siblings_of_the_same_model_are_due_when_they_have_run_as_long(rig, clock):
    done = a_success(rig, "done")
    rig.job("same", sent=NOW - 8)
    rig.live.note_created("same", NOW - 7)
    rig.job("other", model="n")
    ended = rig.job("ended")
    ended._finish(None, "success")
    no_job = rig.job("nojob")
    no_job._set(job_id=None)
    rig.job("completing")
    rig.live.claim_answer("completing", success=True)
    rig.job("sampled", status="in-progress", progress=0.5,
                      history=[{"status": "in-progress", "date": iso(NOW - 4)}])
    rig.live.sample("sampled", 0.5)
    rig.job("unknowing", status="queued")
    rig.live.sample("unknowing", 0.0)
    dues = rig.timing.sibling_dues(done, 12.0)
    assert [(h.request_id, due) for h, due in dues] == [("same", NOW - 7 + 12.0), ("unknowing", NOW - 10 + 12.0)]


# -- follower_dues, replace_scout, _role, _cohort_end ------------------------------------------------------------------

def a_scout_in_progress(rig, clock, request_id="s", sent=NOW - 10, progress=0.5):
    h = rig.job(request_id, sent=sent, status="in-progress", progress=progress,
                history=[{"status": "in-progress", "date": iso(NOW - 10)}])
    assert rig.timing._role(h) == "scout"
    rig.live.sample(request_id, progress)
    return h


def test_the_first_two_of_a_cohort_scout_out_of_step_and_the_rest_follow(rig):
    a, b, c = rig.job("a"), rig.job("b", sent=NOW - 5), rig.job("c", sent=NOW - 1)
    far, other = rig.job("far", sent=NOW - 30), rig.job("other", model="n")
    assert [rig.timing._role(h) for h in (a, b, c)] == ["scout", "scout", "follower"]
    assert rig.timing._scouts == {"a": 0.0, "b": 0.5}  # floor * near / SCOUTS
    assert rig.timing._role(a) == "scout"  # asked again: still one
    assert rig.timing._role(far) == "scout" and rig.timing._role(other) == "scout"  # another cohort


def test_a_cohort_is_ten_seconds_wide(rig):
    rig.timing._role(rig.job("a", sent=NOW - 20))
    rig.timing._role(rig.job("b", sent=NOW - 20))
    assert rig.timing._role(rig.job("edge", sent=NOW - 10)) == "follower"
    assert rig.timing._role(rig.job("out", sent=NOW - 9.9)) == "scout"


def test_a_scout_that_ended_frees_its_place(rig):
    a, b = rig.job("a"), rig.job("b")
    rig.timing._role(a), rig.timing._role(b)
    rig.timing._learned["a"] = 3.0
    a._finish(None, "failure")
    assert rig.timing._role(rig.job("c")) == "scout" and "a" not in rig.timing._scouts
    assert "a" not in rig.timing._learned
    rig.live.forget("b")
    assert rig.timing._role(rig.job("d")) == "scout" and "b" not in rig.timing._scouts


def test_a_scout_that_knows_its_end_tells_its_followers_when_to_ask(rig, clock):
    scout = a_scout_in_progress(rig, clock)  # half done after 10 s: ends in 10 s, then 0.2 s to finalize
    rig.timing._role(rig.job("s2", sent=NOW - 9))
    follower = rig.job("f", sent=NOW - 8)
    late = rig.job("late", sent=NOW - 30)
    other = rig.job("o", model="n", sent=NOW - 8)
    completing = rig.job("c", sent=NOW - 8)
    rig.live.claim_answer("c", success=True)
    assert rig.timing._role(follower) == "follower"
    dues = rig.timing.follower_dues(scout)
    learned = rig.timing._learned["s"]
    assert learned == near(10 + 10 + 0.2)
    offset = learned
    assert [(h.request_id, d) for h, d in dues] == [("f", near(NOW - 8 + offset + 2 * 1.0 + 0.05 * offset))]
    assert late and other and completing


def test_no_follower_dues_from_a_follower_an_unknowing_or_barely_started_scout(rig, clock):
    follower = rig.job("f")
    assert rig.timing.follower_dues(follower) == []
    scout = rig.job("s", status="queued")
    rig.timing._role(scout)
    assert rig.timing.follower_dues(scout) == []
    early = a_scout_in_progress(rig, clock, "e", progress=0.05)
    assert rig.timing.follower_dues(early) == [] and "e" not in rig.timing._learned


def test_a_scout_at_exactly_the_teaching_progress_teaches(rig, clock):
    scout = a_scout_in_progress(rig, clock, progress=0.1)
    rig.timing._role(rig.job("s2"))
    rig.job("f")
    assert len(rig.timing.follower_dues(scout)) == 1


def test_once_a_success_taught_everyone_scouts_tell_nobody(rig, clock):
    scout = a_scout_in_progress(rig, clock)
    rig.timing._role(rig.job("s2"))
    rig.job("f")
    rig.timing.durations.add("m", 12.0)
    assert rig.timing.follower_dues(scout) == []
    assert "s" in rig.timing._learned


def test_a_follower_far_from_every_learned_scout_has_no_cohort_end(rig, clock):
    scout = a_scout_in_progress(rig, clock)
    rig.timing._learned["s"] = 20.0
    assert rig.timing._cohort_end(rig.job("far", sent=NOW - 21)) is None
    assert rig.timing._cohort_end(rig.job("other", model="n")) is None
    assert rig.timing._cohort_end(rig.job("edge", sent=NOW - 20)) == near(NOW - 20 + 20 + 2 + 1)
    rig.live.forget("s")
    assert rig.timing._cohort_end(rig.job("near", sent=NOW - 10)) is None
    assert scout


def test_the_nearest_scouts_shortest_lesson_is_taken(rig, clock):
    a_scout_in_progress(rig, clock, "s1")
    a_scout_in_progress(rig, clock, "s2")
    rig.timing._learned.update({"s1": 30.0, "s2": 10.0})
    assert rig.timing._cohort_end(rig.job("f")) == near(NOW - 10 + 10 + 2 + 0.5)


def test_a_scout_that_ended_without_success_hands_over_to_the_earliest_followers(rig):
    s1, s2 = rig.job("s1", sent=NOW - 9), rig.job("s2", sent=NOW - 9)
    rig.timing._role(s1), rig.timing._role(s2)
    rig.timing._learned["s1"] = 4.0
    f_late, f_early, f_mid = rig.job("fl", sent=NOW - 3), rig.job("fe", sent=NOW - 8), rig.job("fm", sent=NOW - 5)
    rig.job("o", model="n", sent=NOW - 9)
    rig.job("c", sent=NOW - 9)
    rig.live.claim_answer("c", success=True)
    for f in (f_late, f_early, f_mid):
        assert rig.timing._role(f) == "follower"
    s1._finish(None, "failure")
    assert rig.timing.replace_scout(s1) == [f_early]
    assert set(rig.timing._scouts) == {"s2", "fe"} and "s1" not in rig.timing._learned
    assert rig.timing.replace_scout(f_late) == []  # not a scout


def test_two_scouts_gone_hand_over_to_two_followers(rig):
    s1, s2 = rig.job("s1"), rig.job("s2")
    rig.timing._role(s1), rig.timing._role(s2)
    fa, fb, fc = rig.job("fa", sent=NOW - 9), rig.job("fb", sent=NOW - 8), rig.job("fc", sent=NOW - 7)
    s1._finish(None, "failure"), s2._finish(None, "failure")
    rig.live.forget("s2")
    assert rig.timing.replace_scout(s1) == [fa, fb] and fc


# -- next_delay --------------------------------------------------------------------------------------------------

def test_a_scout_with_nothing_known_probes_at_a_random_share_of_a_fifth_of_its_age(rig, rand):
    h = rig.job("r", sent=NOW - 50)
    rand.share = 0.5
    assert rig.timing.next_delay(h) == near(0.2 * 50 * 0.5)
    assert rand.asked == [(0.3, 1.0)]
    rand.share = 1.0
    assert rig.timing.next_delay(rig.job("old", sent=NOW - 500, model="n")) == 20.0  # the ceiling
    assert rig.timing.next_delay(rig.job("new", sent=NOW - 1, model="k")) == 1.0  # the floor


def test_a_follower_with_nothing_known_asks_at_the_ceiling(rig):
    rig.timing._role(rig.job("a"))
    rig.timing._role(rig.job("b"))
    assert rig.timing.next_delay(rig.job("f")) == 20.0


def test_a_request_never_sent_counts_from_its_submission(rig, rand):
    h = rig.job("r")
    h._set(sent_at=None, submitted_at=NOW - 30)
    assert rig.timing.next_delay(h) == near(6.0)


def test_a_job_is_asked_when_its_model_usually_ends(rig, clock):
    rig.timing.durations.seed("m", [10.0, 20.0, 30.0])
    h = rig.job("r", sent=NOW - 15)
    assert rig.timing.next_delay(h) == near(30.0 - 15)  # the 70th percentile: index 2 of 3
    rig.settings.target_quantile = 0.4
    assert rig.timing.next_delay(h) == near(20.0 - 15)


def test_a_job_is_asked_at_the_earliest_prediction_still_ahead(rig, clock):
    rig.timing.durations.seed("m", [100.0])
    h = rig.job("r", sent=NOW - 10, status="in-progress", progress=0.5,
                history=[{"status": "in-progress", "date": iso(NOW - 10)}])
    rig.live.sample("r", 0.5)
    assert rig.timing.next_delay(h) == near(10.2)  # its own rate, before the model's 90 s


def test_an_overdue_job_is_asked_more_slowly_each_time(rig, clock):
    rig.timing.durations.seed("m", [5.0])
    h = rig.job("r", sent=NOW - 10)
    assert rig.timing.next_delay(h) == 1.0  # no poll yet
    rig.live.count_poll("r")
    assert rig.timing.next_delay(h) == 1.0
    rig.live.count_poll("r")
    assert rig.timing.next_delay(h) == 1.25
    rig.live._polls["r"] = 14
    assert rig.timing.next_delay(h) == near(1.25 ** 12)
    rig.live._polls["r"] = 30
    assert rig.timing.next_delay(h) == near(1.25 ** 12)
    rig.settings.ceiling = 5.0
    assert rig.timing.next_delay(h) == 5.0


def test_a_prediction_within_a_floor_is_overdue(rig, clock):
    rig.timing.durations.seed("m", [10.0])
    assert rig.timing.next_delay(rig.job("r", sent=NOW - 9)) == 1.0  # due in exactly a floor
    assert rig.timing.next_delay(rig.job("s", sent=NOW - 8.9)) == near(1.1)


def test_a_far_prediction_is_asked_at_the_ceiling(rig):
    rig.timing.durations.seed("m", [100.0])
    assert rig.timing.next_delay(rig.job("r", sent=NOW - 10)) == 20.0


def test_a_scout_whose_progress_tells_asks_at_its_phase(rig, clock):
    scout = a_scout_in_progress(rig, clock, "s1")
    second = a_scout_in_progress(rig, clock, "s2")
    assert rig.timing.next_delay(scout) == near(10.2)
    assert rig.timing.next_delay(second) == near(10.2 + 0.5)


def test_a_follower_is_asked_at_its_cohorts_end(rig, clock):
    scout = a_scout_in_progress(rig, clock, "s1")
    rig.timing._role(rig.job("s2"))
    f = rig.job("f", sent=NOW - 10)
    assert rig.timing._role(f) == "follower"
    rig.timing.follower_dues(scout)
    offset = rig.timing._learned["s1"]
    assert rig.timing.next_delay(f) == near(min(20.0, offset + 2 + 0.05 * offset - 10))


def test_a_job_is_started_when_the_server_created_it(rig, clock):
    queued = rig.job("q", sent=NOW - 20, offset=1.0, history=[{"status": "queued", "date": iso(NOW - 12)}])
    assert rig.timing.started(queued) == near(NOW - 11)
    no_offset = rig.job("n", sent=NOW - 20, history=[{"status": "queued", "date": iso(NOW - 12)}])
    rig.live.note_created("n", NOW - 15)
    assert rig.timing.started(no_offset) == NOW - 15
    undated = rig.job("u", sent=NOW - 20, offset=1.0, history=[{"status": "queued"}])
    assert rig.timing.started(undated) == NOW - 20


def test_a_job_created_answer_at_time_zero_still_counts(rig):
    h = rig.job("z", sent=NOW - 20)
    rig.live.note_created("z", 0.0)
    assert rig.timing.started(h) == 0.0


# -- progress_end --------------------------------------------------------------------------------------------------

def test_a_jobs_end_from_its_rate_in_progress(rig, clock):
    h = rig.job("r", status="in-progress", progress=0.25, history=[{"status": "in-progress", "date": iso(NOW - 4)}])
    assert rig.timing.progress_end(h) is None  # no sample yet
    rig.live.sample("r", 0.25)
    assert rig.timing.progress_end(h) == near(NOW + 12 + 0.2)
    rig.timing._finishing.add("m", 3.0)
    assert rig.timing.progress_end(h) == near(NOW + 12 + 3.05)
    assert rig.timing.progress_end(h, None) == near(NOW + 12 + 0.2)
    assert rig.timing.progress_end(h, 1.0) == near(NOW + 12 + 1.05)


@pytest.mark.parametrize("status, progress, started", [
    ("queued", 0.5, -4), ("in-progress", 0.0, -4), ("in-progress", 1.0, -4), ("in-progress", 0.5, None),
    ("in-progress", 0.5, 0),
])
def test_no_end_from_a_rate_that_cannot_be_read(rig, clock, status, progress, started):
    history = [] if started is None else [{"status": "in-progress", "date": iso(NOW + started)}]
    h = rig.job("r", status=status, progress=progress, history=history)
    rig.live.sample("r", progress)
    assert rig.timing.progress_end(h) is None


def test_a_finalizing_job_ends_when_finalizing_usually_does(rig):
    h = rig.job("r", status="finalizing", history=[{"status": "finalizing", "date": iso(NOW - 1)}])
    assert rig.timing.progress_end(h) is None
    rig.timing._finishing.add("m", 2.0)
    assert rig.timing.progress_end(h) == near(NOW + 1.05)
    undated = rig.job("u", status="finalizing", history=[{"status": "finalizing"}])
    assert rig.timing.progress_end(undated) is None


def test_a_finalizing_job_is_asked_when_it_should_be_done(rig, clock):
    rig.timing._finishing.add("m", 5.0)
    h = rig.job("r", status="finalizing", history=[{"status": "finalizing", "date": iso(NOW - 1)}])
    assert rig.timing.next_delay(h) == near(4.05)
    h2 = rig.job("r2", status="finalizing", history=[{"status": "finalizing", "date": iso(NOW - 4.2)}])
    assert rig.timing.next_delay(h2) == 1.0  # within a floor
    rig.timing._finishing.add("m", 500.0)
    rig.timing._finishing.add("m", 500.0)
    assert rig.timing.next_delay(h) == 20.0


# -- _scout_turn -----------------------------------------------------------------------------------------------------

def finalizing(rig, request_id, sent=NOW - 10):
    return rig.job(request_id, sent=sent, status="finalizing", history=[{"status": "finalizing", "date": iso(NOW)}])


def test_a_finalizing_job_that_is_no_scout_asks_at_the_floor(rig):
    assert rig.timing.next_delay(finalizing(rig, "r")) == 1.0


def test_scouts_finalizing_ask_out_of_step(rig, clock):
    a, b = finalizing(rig, "a"), finalizing(rig, "b")
    rig.timing._role(a), rig.timing._role(b)
    assert rig.timing.next_delay(a) == 1.0  # b has no poll due
    rig.live.new_poll("a", 1.0)
    assert rig.timing.next_delay(b) == near(1.5)  # half a floor after a
    rig.live.new_poll("a", 0.6)  # due within half a floor before b's next: b moves half a floor after it
    assert rig.timing._scout_turn(b) == near(1.1)


def test_a_scout_turn_moves_past_every_scout_too_close(rig, clock):
    _a, _b, c = finalizing(rig, "a"), finalizing(rig, "b"), finalizing(rig, "c")
    rig.timing._scouts.update({"a": 0.0, "b": 0.5, "c": 0.0})
    rig.live.new_poll("a", 0.8)  # due at +0.8: within half a floor of +1.0 → +1.3
    rig.live.new_poll("b", 1.6)  # then +1.6 is within 0.5 of +1.3 → +2.1
    assert rig.timing._scout_turn(c) == near(2.1)


def test_a_scout_turn_ignores_itself_other_models_gone_and_unscheduled_scouts(rig, clock):
    a = finalizing(rig, "a")
    other = rig.job("o", model="n", status="finalizing")
    gone = finalizing(rig, "g")
    unscheduled = finalizing(rig, "u")
    rig.timing._scouts.update({"a": 0.0, "o": 0.0, "g": 0.0, "u": 0.0})
    rig.live.new_poll("a", 1.0)
    rig.live.new_poll("o", 1.0)
    rig.live.new_poll("g", 1.0)
    rig.live.forget("g")
    rig.live._due["g"] = clock.mono + 1.0
    assert rig.timing._scout_turn(a) == 1.0
    assert other and gone and unscheduled


def test_a_scout_turn_exactly_half_a_floor_apart_stays(rig, clock):
    _a, b = finalizing(rig, "a"), finalizing(rig, "b")
    rig.timing._scouts.update({"a": 0.0, "b": 0.0})
    rig.live.new_poll("a", 0.5)
    assert rig.timing._scout_turn(b) == near(1.0)


# -- _seed_from_history ---------------------------------------------------------------------------------------------

def a_row(history, i, model="m", status="success", kind="generation", sent=100.0, finished=110.0, base=None,
          backend=BACKEND, created=90.0):
    history.record(JobRecord(f"req_{i}", job_id=f"j{i}", backend_id=backend, model_id=model, base_model_id=base,
                             status=status, kind=kind, sent_at=sent, created_at=created, finished_at=finished))


def test_a_models_durations_are_seeded_once_from_this_backends_past_successes(rig, history, rand):
    a_row(history, 1, finished=112.0)
    a_row(history, 2, sent=None, finished=115.0)  # from its creation: 25 s
    a_row(history, 3, model="lora", base="m", finished=104.0)
    a_row(history, 4, status="failure", finished=101.0)
    a_row(history, 5, kind="upload", finished=101.0)
    a_row(history, 6, model="n", finished=101.0)
    a_row(history, 7, backend="other", finished=101.0)
    a_row(history, 8, finished=None)
    rig.timing.next_delay(rig.job("r"))
    assert sorted(rig.timing.durations._seen["m"]) == [4.0, 12.0, 25.0]
    a_row(history, 9, finished=101.0)
    rig.timing.next_delay(rig.job("s"))
    assert sorted(rig.timing.durations._seen["m"]) == [4.0, 12.0, 25.0]


def test_at_most_32_durations_of_the_latest_200_rows_are_seeded(rig, history):
    for i in range(40):
        a_row(history, i, finished=100.0 + 1 + i, created=1000.0 + i)
    rig.timing._seed_from_history("m")
    assert len(rig.timing.durations._seen["m"]) == 32
    assert min(rig.timing.durations._seen["m"]) == 9.0  # the 32 newest


def test_only_the_latest_200_rows_are_read(rig, history):
    a_row(history, 0, finished=150.0, created=1.0)
    for i in range(1, 201):
        a_row(history, i, model="n", created=10.0 + i)
    rig.timing._seed_from_history("m")
    assert rig.timing.durations.quantile("m", 0.5) is None


def test_an_unreadable_history_seeds_nothing_once(clock, rand):
    asked = []

    class Locked:
        def recent(self, *args, **kwargs):
            asked.append(args)
            raise StorageError("locked")
    timing = PollTiming(_live.LiveRequests(), Settings(), history=lambda: Locked(), backend_id=BACKEND)
    h = Generation(model_id="m", prompt="p", status="queued")
    timing.next_delay(h)
    timing.next_delay(h)
    assert len(asked) == 1 and timing.durations.quantile("m", 0.5) is None


def test_a_finalizing_sibling_whose_end_is_known_is_not_woken(rig):
    rig.timing._finishing.add("m", 2.0)
    done = a_success(rig, "done")
    knows = rig.job("knows", status="finalizing", history=[{"status": "finalizing", "date": iso(NOW - 1)}])
    rig.live.sample("knows", 0.9)
    assert rig.timing.sibling_dues(done, 12.0) == [] and knows


def test_a_creation_answer_still_bounds_the_clock_once_its_loose_bound_is_forgotten():
    c = ServerClock()
    c.created({"createdAt": iso(NOW - 2)}, NOW)
    for _ in range(32):  # polls of older jobs push the creation's own loose bound out
        c.saw({"createdAt": iso(NOW - 5)}, NOW)
    assert c.ahead_at_most() == near(2.5)


def test_a_creation_answer_is_also_a_loose_bound_from_its_newest_stamp():
    c = ServerClock()
    c.created({"createdAt": iso(NOW - 2), "updatedAt": iso(NOW - 1)}, NOW)
    assert c.ahead_at_most() == near(1.5)


def test_a_followers_cohort_end_adds_two_floors(rig, clock):
    rig.settings.floor = 0.5
    a_scout_in_progress(rig, clock)
    rig.timing._learned["s"] = 20.0
    assert rig.timing._cohort_end(rig.job("f", sent=NOW - 10)) == near(NOW - 10 + 20 + 1.0 + 1.0)


def test_a_scout_turn_exactly_half_a_floor_before_another_stays(rig, clock):
    a, b = finalizing(rig, "a"), finalizing(rig, "b")
    rig.timing._scouts.update({"a": 0.0, "b": 0.0})
    rig.live.new_poll("a", 1.5)
    assert rig.timing._scout_turn(b) == near(1.0) and a


def test_a_scouts_lesson_is_no_prediction_for_a_job_whose_model_is_known(rig, clock):
    rig.timing.durations.seed("m", [100.0])
    rig.timing._role(rig.job("s", sent=NOW - 10))
    rig.timing._learned["s"] = 20.0
    assert rig.timing.next_delay(rig.job("r", sent=NOW - 10)) == 20.0  # the ceiling, not the cohort's 13 s


def test_a_prediction_exactly_a_floor_ahead_is_overdue(rig, clock):
    rig.timing.durations.seed("m", [10.0])
    h = rig.job("r", sent=NOW - 9)
    rig.live._polls["r"] = 2
    assert rig.timing.next_delay(h) == 1.25


def test_a_prediction_now_is_overdue(rig, clock):
    rig.timing.durations.seed("m", [10.0])
    assert rig.timing.next_delay(rig.job("r", sent=NOW - 10)) == 1.0
    assert rig.timing.next_delay(rig.job("s", sent=NOW - 10.5)) == 1.0


def test_a_scouts_phase_is_dropped_once_its_models_duration_is_known(rig, clock):
    rig.timing._role(rig.job("s1"))
    second = rig.job("s2", sent=NOW - 5)
    rig.timing._role(second)
    assert rig.timing._scouts["s2"] == 0.5
    rig.timing.durations.seed("m", [15.0])
    assert rig.timing.next_delay(second) == near(10.0)
