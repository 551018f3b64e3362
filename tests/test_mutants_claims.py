"""Tests written to kill mutants that mutmut planted in `scenario_nb/_engine/_claims.py` (a training's name
claimed in the history before anything is paid) and that the rest of the suite let live (the run, the figures
and the mutants that cannot be killed: tests/mutants-equivalent.md).

In-process and fast: `claim`, `Claim` and `holds` are driven with a real ledger and history, and checked by
effect: the trainings rows SQLite holds, what the log and stderr say.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time


from scenario_nb._engine import _claims
from scenario_nb._engine._claims import Claim, claim, holds
from scenario_nb._history import History
from scenario_nb._history_trainings import TrainingRecord, this_process

from ledger_parts import BACKEND, URL

def a_dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def a_row(owner: str, updated_at: float) -> TrainingRecord:
    return TrainingRecord(model_id="claim_other", backend_id=BACKEND, name="Cats", type="flux.1-lora",
                          status="preparing", updated_at=updated_at, owner=owner)


def rows(history: History) -> dict:
    return {r.model_id: r for r in history.trainings(backend_id=BACKEND, limit=100)}


# -- holds --------------------------------------------------------------------------------------------------

def test_a_claim_silent_for_longer_than_a_minute_holds_nothing(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    here = f"{socket.gethostname()}:{os.getpid()}"
    assert holds(a_row(here, 940.0))  # exactly 60 s: still fresh
    assert not holds(a_row(here, 939.9))
    assert holds(a_row("elsewhere:1", 999.0))


def test_a_claim_never_beaten_is_stale_from_the_epoch(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 60.5)  # 60.5 s after the epoch: stale only if counted from 0
    assert not holds(a_row("elsewhere:1", None))


def test_a_claim_of_a_dead_process_on_this_host_holds_nothing():
    now = time.time()
    assert not holds(a_row(f"{socket.gethostname()}:{a_dead_pid()}", now))
    assert holds(a_row(f"{socket.gethostname()}:{os.getpid()}", now))
    assert holds(a_row(f"another-host:{a_dead_pid()}", now))  # another host's pid is not ours to ask
    assert holds(a_row(f"{socket.gethostname()}:not-a-pid", now))
    assert holds(a_row("", now))


def test_a_host_name_with_a_colon_is_split_at_the_last_one(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "my:host")
    assert not holds(a_row(f"my:host:{a_dead_pid()}", time.time()))


def test_a_process_we_may_not_signal_still_holds(monkeypatch):
    def refused(pid, sig):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "kill", refused)
    assert holds(a_row(f"{socket.gethostname()}:{a_dead_pid()}", time.time()))


def test_holds_asks_with_signal_zero(monkeypatch):
    asked = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: asked.append((pid, sig)))
    holds(a_row(f"{socket.gethostname()}:4242", time.time()))
    assert asked == [(4242, 0)]


# -- Claim ----------------------------------------------------------------------------------------------------

def test_a_claim_beats_on_a_daemon_thread_of_its_name(ledger, history, monkeypatch):
    monkeypatch.setattr(_claims, "HEARTBEAT", 0.02)
    c = claim(ledger, "Cats", "flux.1-lora", force=False)
    try:
        assert c._beat.name == "scenario-claim" and c._beat.daemon
        first = rows(history)[c.row_id].updated_at
        deadline = time.time() + 3
        while rows(history)[c.row_id].updated_at == first and time.time() < deadline:
            time.sleep(0.01)
        beaten = rows(history)[c.row_id].updated_at
        assert beaten is not None and first < beaten <= time.time()
    finally:
        c.stop()
    c._beat.join(1)
    assert not c._beat.is_alive()


def test_a_claim_beats_every_ten_seconds_not_at_once(ledger, history):
    assert _claims.HEARTBEAT == 10.0 and _claims.CLAIM_STALE == 60.0 and _claims.WAIT_STEP == 0.25
    c = claim(ledger, "Cats", "flux.1-lora", force=False)
    first = rows(history)[c.row_id].updated_at
    time.sleep(0.2)
    c.stop()
    assert rows(history)[c.row_id].updated_at == first


class FlakyHistory:
    """A history whose first heartbeat fails; the ones after it are counted."""

    def __init__(self) -> None:
        self.touched: list = []

    def touch_training(self, model_id, now):
        self.touched.append((model_id, now))
        if len(self.touched) == 1:
            raise OSError("disk busy")

    def forget_training(self, model_id):
        raise OSError("disk gone")


class FakeLedger:
    def __init__(self, history) -> None:
        self.history = history


def test_a_failed_heartbeat_is_logged_and_the_next_one_still_beats(log_lines, monkeypatch):
    monkeypatch.setattr(_claims, "HEARTBEAT", 0.01)
    flaky = FlakyHistory()
    c = Claim(FakeLedger(flaky), "claim_1")
    deadline = time.time() + 3
    while len(flaky.touched) < 2 and time.time() < deadline:
        time.sleep(0.01)
    c.stop()
    assert len(flaky.touched) >= 2 and all(m == "claim_1" for m, _ in flaky.touched)
    assert "claim heartbeat of claim_1 failed: disk busy" in log_lines


def test_a_claim_moved_to_its_model_renames_its_row_once(ledger, history):
    c = claim(ledger, "Cats", "flux.1-lora", force=False)
    c.stop()
    old = c.row_id
    c.moved("model_1")
    assert c.row_id == "model_1" and set(rows(history)) == {"model_1"}
    assert rows(history)["model_1"].status == "preparing"
    c.moved("model_1")  # already its name: nothing moves (a move onto itself would delete the row)
    assert set(rows(history)) == {"model_1"} and old not in rows(history)


def test_a_dropped_claim_stops_beating_and_leaves_no_row(ledger, history):
    c = claim(ledger, "Cats", "flux.1-lora", force=False)
    c.drop()
    c._beat.join(1)
    assert not c._beat.is_alive()
    assert rows(history) == {}


def test_a_claim_that_cannot_be_dropped_is_logged_and_stops(log_lines):
    c = Claim(FakeLedger(FlakyHistory()), "claim_2")
    c.drop()
    c._beat.join(1)
    assert not c._beat.is_alive()
    assert "claim claim_2 could not be removed: disk gone" in log_lines


# -- claim ----------------------------------------------------------------------------------------------------

def test_a_claim_is_a_preparing_row_owned_by_this_process(ledger, history):
    before = time.time()
    c = claim(ledger, "Cats", "flux.1-lora", force=False)
    c.stop()
    row = rows(history)[c.row_id]
    assert c.row_id.startswith("claim_") and len(c.row_id) == len("claim_") + 20
    int(c.row_id[len("claim_"):], 16)
    assert (row.backend_id, row.backend_url, row.name, row.type) == (BACKEND, URL, "Cats", "flux.1-lora")
    assert (row.status, row.stage, row.owner) == ("preparing", "claimed", this_process())
    assert before <= row.created_at <= row.updated_at <= time.time()


def test_two_claims_get_two_row_ids(ledger, history):
    a = claim(ledger, "Cats", "flux.1-lora", force=True)
    b = claim(ledger, "Cats", "flux.1-lora", force=True)
    a.stop(), b.stop()
    assert a.row_id != b.row_id and set(rows(history)) == {a.row_id, b.row_id}


def test_a_claim_held_elsewhere_is_waited_for_once_said_then_taken(ledger, history, capfd, monkeypatch):
    other = a_row(f"{socket.gethostname()}:{os.getpid()}", time.time())  # a live process: it holds
    other.created_at = other.updated_at
    history.record_training(other)
    looks = []
    real = history.claim_training
    monkeypatch.setattr(history, "claim_training", lambda rec, h: looks.append(h) or real(rec, h))

    def finish():
        time.sleep(0.6)
        other.status = "trained"
        history.record_training(other)
    threading.Thread(target=finish).start()
    started = time.time()
    c = claim(ledger, "cats ", "flux.1-lora", force=False)
    c.stop()
    waited = time.time() - started
    assert 0.5 < waited < 1.2  # looked again every quarter of a second
    assert 3 <= len(looks) <= 5 and all(h is not None for h in looks)
    err = capfd.readouterr().err
    assert err.count("is being prepared by another process") == 1
    assert (f"cats  is being prepared by another process ({other.owner}): waiting for it, then following its "
            "training (a claim whose process is gone, or silent for 60 s, is taken over)\n") in err
    row = rows(history)[c.row_id]
    assert row.status == "preparing" and row.updated_at >= started + 0.5  # stamped at the look that took it


def test_a_forced_claim_does_not_wait(ledger, history, capfd):
    other = a_row(f"{socket.gethostname()}:{os.getpid()}", time.time())
    history.record_training(other)
    started = time.time()
    c = claim(ledger, "Cats", "flux.1-lora", force=True)
    c.stop()
    assert time.time() - started < 0.2 and capfd.readouterr().err == ""
    assert set(rows(history)) == {"claim_other", c.row_id}


def test_a_claim_of_a_dead_process_is_taken_over(ledger, history):
    other = a_row(f"{socket.gethostname()}:{a_dead_pid()}", time.time())
    history.record_training(other)
    c = claim(ledger, "Cats", "flux.1-lora", force=False)
    c.stop()
    assert rows(history)["claim_other"].status == "not-started"
    assert rows(history)[c.row_id].status == "preparing"


class FlushedStderr:
    """A stderr that keeps what was written and what had been written at each flush."""

    def __init__(self) -> None:
        self.text = ""
        self.flushed: list[str] = []

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        self.flushed.append(self.text)


def test_the_waiting_line_is_flushed_at_once(ledger, history, monkeypatch):
    """In a kernel stderr is buffered: the line must show while the cell waits, not when it ends."""
    other = a_row(f"{socket.gethostname()}:{os.getpid()}", time.time())
    history.record_training(other)
    stderr = FlushedStderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    seen = []

    def finish():
        deadline = time.time() + 3
        while not stderr.flushed and time.time() < deadline:
            time.sleep(0.01)
        seen.extend(stderr.flushed)
        other.status = "trained"
        history.record_training(other)
    threading.Thread(target=finish).start()
    claim(ledger, "Cats", "flux.1-lora", force=False).stop()
    assert seen and "is being prepared by another process" in seen[0]
