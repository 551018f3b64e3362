"""Tests written to kill mutants that mutmut planted in `scenario_nb/_engine/_lanes.py` (the engine's worker
threads) and that the rest of the suite let live (the run, the figures and the mutants that cannot be killed:
tests/mutants-equivalent.md).

In-process and fast: `Lanes` is driven directly with tasks that note when, where and with what they ran, and
checked by effect: what ran, on which thread, in which order and when, and what the log says.
"""

from __future__ import annotations

import threading
import time

import pytest

from scenario_nb._engine._lanes import Lanes
from scenario_nb._engine._live import Settings

from conftest import SteppedClock



class Handle:
    def __init__(self, job_id: str = "job_1", done: bool = False) -> None:
        self.job_id = job_id
        self.done = done


class Runs:
    """A task that notes each run: (handle, token or "-", thread name, daemon, monotonic time)."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.seen: list[tuple] = []
        self.lock = threading.Lock()

    def __call__(self, handle, *token) -> None:
        with self.lock:
            self.seen.append((handle, token[0] if token else "-", threading.current_thread().name,
                              threading.current_thread().daemon, time.monotonic()))
        time.sleep(self.hold)

    def wait_for(self, count: int, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.005)


def worker_of(lanes: Lanes, lane: str) -> threading.Thread:
    """This `Lanes`' one worker of a lane (found by name, it could be another engine's: one an earlier test left
    running, which a moved clock ends at once)."""
    (worker,) = lanes._threads[lane]
    assert worker.name == f"scenario-engine-{lane}"
    return worker


@pytest.fixture
def lanes():
    lanes = Lanes({"poll": 1, "fetch": 2}, Settings(ceiling=0.1))
    yield lanes
    lanes.close()


def test_a_task_runs_once_due_on_a_daemon_thread_of_its_lane(lanes):
    runs = Runs()
    a, b = Handle("a"), Handle("b")
    started = time.monotonic()
    lanes.schedule(a, 0.15, runs)
    lanes.schedule(b, 0.0, runs, "tok", lane="fetch")
    runs.wait_for(2)
    by_handle = {seen[0]: seen for seen in runs.seen}
    assert by_handle[a][1:4] == ("-", "scenario-engine-poll", True)
    assert by_handle[b][1:4] == ("tok", "scenario-engine-fetch", True)
    assert 0.15 <= by_handle[a][4] - started < 0.6  # woken for it, not at the next minute
    assert by_handle[b][4] - started < 0.14


def test_a_token_that_is_falsy_is_still_passed(lanes):
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs, 0)
    runs.wait_for(1)
    assert runs.seen[0][1] == 0


def test_tasks_run_earliest_due_first_and_in_order_when_due_alike(lanes):
    runs = Runs()
    handles = [Handle(str(i)) for i in range(4)]
    gate = threading.Event()
    lanes.schedule(Handle("first"), 0.0, lambda h: gate.wait(2))  # holds the lane's one worker
    lanes.schedule(handles[0], 0.05, runs)
    lanes.schedule(handles[1], 0.0, runs)
    lanes.schedule(handles[2], 0.0, runs)
    lanes.schedule(handles[3], 0.02, runs)
    time.sleep(0.1)
    gate.set()
    runs.wait_for(4)
    assert [seen[0] for seen in runs.seen] == [handles[1], handles[2], handles[3], handles[0]]


def test_a_lane_runs_at_most_its_size_at_once(lanes):
    one, two = Runs(hold=0.2), Runs(hold=0.2)
    for i in range(2):
        lanes.schedule(Handle(str(i)), 0.0, one)
        lanes.schedule(Handle(str(i)), 0.0, two, lane="fetch")
    one.wait_for(2), two.wait_for(2)
    assert one.seen[1][4] - one.seen[0][4] >= 0.19  # one worker: one after the other
    assert two.seen[1][4] - two.seen[0][4] < 0.15  # two workers: side by side
    assert len({seen[2] for seen in two.seen}) == 1  # both named for their lane
    workers = [t for t in threading.enumerate() if t in lanes._threads["fetch"]]
    assert len(workers) == 2 and all(t.name == "scenario-engine-fetch" for t in workers)


def test_a_closed_lanes_drops_its_tasks_and_takes_no_more(lanes):
    runs = Runs()
    assert lanes.closed is False
    lanes.schedule(Handle(), 0.1, runs)
    lanes.close()
    assert lanes.closed
    lanes.schedule(Handle(), 0.0, runs)
    time.sleep(0.25)
    assert runs.seen == []
    assert lanes._queues == {"poll": [], "fetch": []}


def test_a_failing_task_is_logged_and_run_again_after_the_ceiling(lanes, log_lines):
    calls = []

    handle = Handle("job_7")

    def flaky(h, token):
        assert h is handle and threading.current_thread().name == "scenario-engine-fetch"
        calls.append((token, time.monotonic()))
        if len(calls) == 1:
            raise ValueError("odd answer")
    lanes.schedule(handle, 0.0, flaky, "tok", lane="fetch")
    deadline = time.monotonic() + 3
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [t for t, _ in calls] == ["tok", "tok"]
    assert 0.1 <= calls[1][1] - calls[0][1] < 0.5
    assert log_lines == ["odd answer on job_7; trying again"]


@pytest.mark.parametrize("handle", [Handle("job_8", done=True), None])
def test_a_failing_task_of_a_finished_or_no_handle_is_not_run_again(lanes, log_lines, handle):
    calls = []

    def failing(h):
        calls.append(h)
        raise ValueError("late")
    lanes.schedule(handle, 0.0, failing)
    time.sleep(0.3)
    assert calls == [handle]
    assert log_lines == [f"late on {'job_8' if handle else None}; trying again"]


class Clock:
    """`time.monotonic`, moved on at will."""

    def __init__(self, frozen: bool = False) -> None:
        self.real = time.monotonic
        self.start = self.real()
        self.frozen = frozen
        self.ahead = 0.0
        self.asked_by_workers = 0

    def __call__(self) -> float:
        if threading.current_thread().name.startswith("scenario-engine"):
            self.asked_by_workers += 1
        return (self.start if self.frozen else self.real()) + self.ahead


def wake(lanes: Lanes, lane: str) -> None:
    with lanes._lock:
        lanes._wakeups[lane].notify_all()


def test_a_worker_leaves_after_a_minute_of_nothing(lanes, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(1)
    worker = worker_of(lanes, "poll")
    clock.ahead = 59.0
    wake(lanes, "poll")
    time.sleep(0.1)
    assert worker.is_alive()  # under a minute since its last task
    clock.ahead = 60.5
    wake(lanes, "poll")
    worker.join(1)
    assert not worker.is_alive() and lanes._threads["poll"] == []
    lanes.schedule(Handle(), 0.0, runs)  # a new worker for the next task
    runs.wait_for(2)
    assert len(runs.seen) == 2


def test_the_idle_minute_counts_from_the_last_task(lanes, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(1)
    worker = worker_of(lanes, "poll")
    clock.ahead = 50.0
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(2)
    clock.ahead = 100.0  # 100 s since the worker started, 50 s since its last task
    wake(lanes, "poll")
    time.sleep(0.1)
    assert worker.is_alive()


def test_a_worker_with_a_task_waiting_stays(lanes, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(1)
    worker = worker_of(lanes, "poll")
    lanes.schedule(Handle(), 3600.0, runs)
    clock.ahead = 120.0
    wake(lanes, "poll")
    time.sleep(0.1)
    assert worker.is_alive() and len(runs.seen) == 1


def test_a_task_due_exactly_now_runs(lanes, monkeypatch):
    monkeypatch.setattr(time, "monotonic", Clock(frozen=True))
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(1, timeout=1.0)
    assert len(runs.seen) == 1


def test_a_worker_idle_for_exactly_a_minute_stays(lanes, monkeypatch):
    clock = Clock(frozen=True)
    monkeypatch.setattr(time, "monotonic", clock)
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(1)
    worker = worker_of(lanes, "poll")
    clock.ahead = 60.0
    wake(lanes, "poll")
    time.sleep(0.1)
    assert worker.is_alive()


def test_a_worker_waits_for_its_next_task_without_spinning(lanes, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    runs = Runs()
    lanes.schedule(Handle(), 0.3, runs)
    runs.wait_for(1)
    assert len(runs.seen) == 1 and clock.asked_by_workers < 20


def test_a_worker_that_finds_nothing_to_do_waits_on(lanes):
    """A worker whose task was taken before it ran (by another worker, or dropped) idles like any other."""
    lanes.schedule(Handle(), 10.0, Runs())
    worker = worker_of(lanes, "poll")
    with lanes._lock:
        lanes._queues["poll"].clear()
        lanes._wakeups["poll"].notify_all()
    time.sleep(0.1)
    assert worker.is_alive()


class RecordingCondition:
    """A lane's wake-up, noting how long its worker means to sleep."""

    def __init__(self, condition: threading.Condition) -> None:
        self.condition = condition
        self.timeouts: list = []

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        return self.condition.wait(min(timeout, 0.05))

    def notify(self, n=1):
        self.condition.notify(n)

    def notify_all(self):
        self.condition.notify_all()


def test_an_idle_worker_sleeps_the_idle_minute_at_most(lanes):
    recording = lanes._wakeups["poll"] = RecordingCondition(lanes._wakeups["poll"])
    runs = Runs()
    lanes.schedule(Handle(), 0.0, runs)
    runs.wait_for(1)
    time.sleep(0.1)
    assert recording.timeouts and set(recording.timeouts) == {60}


def test_idle_until_is_none_while_a_task_runs_or_is_due_else_the_next_due_time():
    """What a test's clock asks before it moves: it must never move while the engine has work now."""
    clock = SteppedClock()
    lanes = Lanes({"poll": 1, "fetch": 1}, Settings(clock=clock))
    try:
        assert lanes.idle_until() == float("inf")  # nothing scheduled
        later = Runs()
        lanes.schedule(Handle("later"), 5.0, later)
        lanes.schedule(Handle("sooner"), 2.0, later, lane="fetch")
        assert lanes.idle_until() == 2.0  # the earliest of every lane
        release, running = threading.Event(), threading.Event()

        def blocking(handle):
            running.set()
            release.wait(5)
        lanes.schedule(Handle("now"), 0.0, blocking)
        assert running.wait(3)
        assert lanes.idle_until() is None  # a task runs
        release.set()
        deadline = time.monotonic() + 3
        while lanes.idle_until() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert lanes.idle_until() == 2.0  # it ended: idle again until the next due
        clock.run_for(2.0)  # moved to the fetch task's time: it runs, then the poll lane's is next
        assert [h.job_id for h, *_ in later.seen] == ["sooner"] and lanes.idle_until() == 5.0
        clock.run_for(1.0)
        assert [h.job_id for h, *_ in later.seen] == ["sooner"]  # not due yet at 3 s
        clock.run_until(lambda: len(later.seen) == 2)
        assert clock.monotonic() == 5.0 and lanes.idle_until() == float("inf")
    finally:
        lanes.close()


def test_a_worker_waits_through_the_engines_clock():
    """A worker never waits on the machine's time directly: a task due in an hour of the clock's time runs
    as soon as the clock gets there."""
    clock = SteppedClock()
    lanes = Lanes({"poll": 1}, Settings(clock=clock))
    try:
        runs = Runs()
        lanes.schedule(Handle(), 3600.0, runs)
        started = time.monotonic()
        clock.run_until(lambda: bool(runs.seen))
        assert time.monotonic() - started < 5 and clock.monotonic() == 3600.0
    finally:
        lanes.close()


def test_idle_until_stays_none_while_any_of_several_tasks_runs():
    """Two tasks under way on two lanes: the first to end leaves the engine busy, not idle."""
    clock = SteppedClock()
    lanes = Lanes({"poll": 1, "fetch": 1}, Settings(clock=clock))
    try:
        releases = {lane: threading.Event() for lane in ("poll", "fetch")}
        running = {lane: threading.Event() for lane in ("poll", "fetch")}

        def task_of(lane):
            def task(handle):
                running[lane].set()
                releases[lane].wait(5)
            return task
        for lane in ("poll", "fetch"):
            lanes.schedule(Handle(lane), 0.0, task_of(lane), lane=lane)
        assert all(event.wait(3) for event in running.values())
        releases["poll"].set()
        time.sleep(0.2)  # the poll task has ended; the fetch task still runs
        assert lanes.idle_until() is None
        releases["fetch"].set()
        deadline = time.monotonic() + 3
        while lanes.idle_until() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert lanes.idle_until() == float("inf")
    finally:
        lanes.close()
