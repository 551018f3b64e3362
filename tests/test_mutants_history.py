"""Tests written to kill the mutants mutmut planted in `scenario_nb/_history.py` that the rest of the suite let live
(the run, the figures and the equivalent mutants: tests/mutants-equivalent.md; the first tests of this module are in
tests/test_mutants.py).

Each checks by effect: rows in the history, what SQLite holds, the error a caller gets.
"""

from __future__ import annotations

import errno
import sqlite3
import warnings

import pytest

from scenario_nb import StorageError
from scenario_nb._history import (SCHEMA_VERSION, CaptionRecord, History, JobRecord, _disk_full, _of_backend,
                                  _rollback, _url_of)
from scenario_nb._history_trainings import TrainingRecord

URL = "https://api.example.test/v1"
BACKEND = URL + "#abc123"


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "h.sqlite")
    yield h
    h.close()


# -- Which backend a row belongs to ----------------------------------------------------------------------------------
def test_the_url_of_a_backend_id():
    assert _url_of(BACKEND) == URL
    assert _url_of(URL) == URL
    assert _url_of("a#b#c") == "a"
    assert _url_of("#x") == ""
    assert _of_backend(BACKEND) == ("(backend_id = ? OR (backend_id = backend_url AND backend_url = ?))",
                                    (BACKEND, URL))


def test_a_row_is_of_its_backend_or_a_schema_1_row_of_its_url():
    assert JobRecord("r", backend_id=BACKEND, backend_url=URL).of_backend(BACKEND)
    assert not JobRecord("r", backend_id=URL + "#other", backend_url=URL).of_backend(BACKEND)
    legacy = JobRecord("r", backend_id=URL, backend_url=URL)
    assert legacy.legacy and legacy.of_backend(BACKEND) and legacy.of_backend(URL + "#any")
    assert not legacy.of_backend("https://elsewhere.test/v1#abc123")
    assert not JobRecord("r", backend_id="", backend_url="").legacy
    assert not JobRecord("r", backend_id="", backend_url="").of_backend(BACKEND)
    assert JobRecord("r").of_backend("")


def test_rows_of_a_backend_include_its_schema_1_rows(history):
    history.record(JobRecord("mine", backend_id=BACKEND, backend_url=URL, status="running", request_key="k",
                             created_at=1.0))
    history.record(JobRecord("legacy", backend_id=URL, backend_url=URL, status="running", request_key="k",
                             created_at=2.0))
    history.record(JobRecord("other", backend_id=URL + "#zzz", backend_url=URL, status="running", request_key="k",
                             created_at=3.0))
    assert [r.request_id for r in history.recent(10, BACKEND)] == ["legacy", "mine"]
    assert [r.request_id for r in history.unfinished(BACKEND)] == ["legacy", "mine"]
    assert history.find_reusable("k", BACKEND).request_id == "legacy"
    assert [r.request_id for r in history.recent(10)] == ["other", "legacy", "mine"]


# -- Errors ---------------------------------------------------------------------------------------------------------
class Named(Exception):
    sqlite_errorname = "SQLITE_FULL"


def test_a_full_disk_is_told_by_sqlites_name_the_errno_or_the_words():
    assert _disk_full(Named("x"))
    assert _disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert _disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not _disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not _disk_full(sqlite3.OperationalError("database is locked"))
    assert not _disk_full(ValueError("disk is ful"))

    class Other(Exception):
        sqlite_errorname = "SQLITE_BUSY"

    assert not _disk_full(Other("busy"))


def test_the_error_a_caller_gets(history):
    full = history._fail(OSError(errno.ENOSPC, "No space"), "write")
    assert isinstance(full, StorageError)
    assert str(full) == (f"cannot write the history database {history.path}: the disk is full. Free some space "
                         f"there, or set SCENARIO_NB_HOME (or %config ScenarioMagics.history_path) to another disk")
    other = history._fail(sqlite3.OperationalError("it broke"))
    assert str(other) == (f"cannot use the history database {history.path} (it broke). Set SCENARIO_NB_HOME (or "
                          f"%config ScenarioMagics.history_path) to a writable place")


class Conn:
    """A connection that notes what it runs."""

    def __init__(self, in_transaction, fails=False):
        self.in_transaction = in_transaction
        self.fails = fails
        self.ran: list = []

    def execute(self, sql):
        self.ran.append(sql)
        if self.fails:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")


def test_rollback_only_inside_a_transaction_and_quietly():
    idle = Conn(False)
    _rollback(idle)
    assert idle.ran == []
    busy = Conn(True)
    _rollback(busy)
    assert busy.ran == ["ROLLBACK"]
    failing = Conn(True, fails=True)
    _rollback(failing)
    assert failing.ran == ["ROLLBACK"]


def test_a_failed_write_reports_the_first_error_and_leaves_no_transaction(history):
    def work(conn):
        conn.execute("INSERT INTO jobs (request_id) VALUES ('a')")
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(StorageError) as caught:
        history._transaction(work)
    assert "the disk is full" in str(caught.value) and "rollback" not in str(caught.value)
    assert history.get_request("a") is None and not history._conn.in_transaction


# -- A history written by a newer version -----------------------------------------------------------------------
def test_a_newer_history_is_read_only_warned_once_and_refuses_writes(tmp_path):
    path = tmp_path / "h.sqlite"
    History(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO jobs (request_id, status, created_at) VALUES ('old', 'success', 1.0)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.warns(UserWarning) as warned:
        h = History(path)
    assert len(warned) == 1 and h.read_only and h.newer_version == SCHEMA_VERSION + 1
    text = str(warned[0].message)
    assert text == (f"the history database {path} was written by a newer scenario_nb (schema {SCHEMA_VERSION + 1}; "
                    f"this version knows {SCHEMA_VERSION}): opened read-only, nothing new is recorded. Upgrade "
                    f"scenario_nb, or set SCENARIO_NB_HOME (or %config ScenarioMagics.history_path) to another place")
    assert [r.request_id for r in h.recent()] == ["old"]
    assert h._connection() is h._connection()  # kept open, not opened again at every read
    with pytest.raises(StorageError) as caught:
        h.record(JobRecord("new"))
    assert str(caught.value) == text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h._open()  # opened again: no second warning
    assert h.read_only
    h.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    check.close()


# -- Captions ---------------------------------------------------------------------------------------------------
def test_caption_rows_by_backend_and_image_newest_first(history):
    history.record_caption(CaptionRecord("b1", "img1", "basic", status="done", caption="a cat", cost=0.5,
                                         name="a.png", created_at=1.0, updated_at=5.0))
    history.record_caption(CaptionRecord("b1", "img2", "basic", updated_at=7.0))
    history.record_caption(CaptionRecord("b1", "img1", "detailed", status="unknown", updated_at=6.0))
    history.record_caption(CaptionRecord("b2", "img1", "basic", updated_at=9.0))
    assert [(c.image_sha256, c.details_level) for c in history.captions("b1")] == [
        ("img2", "basic"), ("img1", "detailed"), ("img1", "basic")]
    assert [(c.image_sha256, c.details_level) for c in history.captions("b1", "img1")] == [
        ("img1", "detailed"), ("img1", "basic")]
    first = history.captions("b1", "img1")[1]
    assert first == CaptionRecord("b1", "img1", "basic", status="done", caption="a cat", cost=0.5, name="a.png",
                                  created_at=1.0, updated_at=5.0)
    history.record_caption(CaptionRecord("b1", "img1", "basic", status="done", caption="a dog", updated_at=8.0))
    assert [c.caption for c in history.captions("b1", "img1")] == ["a dog", ""]
    history.forget_caption("b1", "img1", "basic")
    assert [(c.image_sha256, c.details_level) for c in history.captions("b1")] == [
        ("img2", "basic"), ("img1", "detailed")]
    history.forget_caption("b1", "img1", "nope")
    history.forget_caption("b2", "img2", "basic")
    assert len(history.captions("b1")) == 2 and len(history.captions("b2")) == 1


def test_captions_that_cannot_be_read_say_which_file(history, tmp_path):
    history._connection().execute("DROP TABLE captions")
    with pytest.raises(StorageError) as caught:
        history.captions("b1")
    assert str(caught.value).startswith(f"cannot read the history database {history.path} (no such table")


# -- Workbench rows and trainings --------------------------------------------------------------------------------
def test_workbench_rows_of_a_backend_and_name(history):
    for rid, kind, backend, name, at in (("m1", "model", "b1", "Cats", 1.0), ("u1", "upload", "b1", "Cats", 2.0),
                                         ("g1", "generation", "b1", "Cats", 3.0), ("m2", "model", "b2", "Cats", 4.0),
                                         ("m3", "model", "b1", "Dogs", 5.0)):
        history.record(JobRecord(rid, kind=kind, backend_id=backend, model_name=name, status="unknown",
                                 created_at=at))
    assert [r.request_id for r in history.workbench("b1")] == ["m3", "u1", "m1"]
    assert [r.request_id for r in history.workbench("b1", "Cats")] == ["u1", "m1"]
    assert history.workbench("b1", "") == []
    assert [r.request_id for r in history.unfinished("b1")] == ["g1"]


def test_a_claim_is_written_unless_a_live_claim_of_the_name_holds(history):
    held = TrainingRecord("claim_a", backend_id="b1", name=" Cats ", status="preparing", owner="h:1")
    history.claim_training(held)
    mine = TrainingRecord("claim_b", backend_id="b1", name="cats", status="preparing", owner="h:2")
    assert history.claim_training(mine, holds=lambda row: True).model_id == "claim_a"
    assert history.training("claim_b") is None
    assert history.claim_training(mine) is None  # no `holds`: nothing is asked, the claim is written
    assert history.training("claim_b") is not None
    history.forget_training("claim_b")
    other = TrainingRecord("claim_c", backend_id="b2", name="Cats", status="preparing")
    assert history.claim_training(other, holds=lambda row: True) is None
    asked: list = []
    assert history.claim_training(mine, holds=lambda row: asked.append(row.model_id) or False) is None
    assert asked == ["claim_a"]
    gone = history.training("claim_a")
    assert gone.status == "not-started" and gone.error == ("abandoned while being prepared: its process (h:1) "
                                                           "stopped")
    assert history.training("claim_b").status == "preparing"


def test_a_claim_of_another_name_is_not_asked(history):
    history.claim_training(TrainingRecord("claim_a", backend_id="b1", name="Dogs", status="preparing"))
    history.claim_training(TrainingRecord("claim_x", backend_id="b1", name="Cats", status="trained"))
    asked: list = []
    history.claim_training(TrainingRecord("claim_b", backend_id="b1", name="Cats", status="preparing"),
                           holds=lambda row: asked.append(row) or True)
    assert asked == [] and history.training("claim_b") is not None


def test_moving_touching_and_forgetting_a_training_row(history):
    history.record_training(TrainingRecord("claim_a", backend_id="b1", name="Cats", status="preparing",
                                           updated_at=1.0))
    history.record_training(TrainingRecord("model_1", backend_id="b1", name="Old", status="new"))
    history.record_training(TrainingRecord("model_2", backend_id="b1", name="Other", status="preparing"))
    history.touch_training("claim_a", 50.0)
    history.touch_training("model_1", 50.0)  # not preparing: untouched
    assert history.training("claim_a").updated_at == 50.0 and history.training("model_1").updated_at == 0.0
    history.move_training("claim_a", "model_1")
    assert history.training("claim_a") is None
    moved = history.training("model_1")
    assert moved.name == "Cats" and moved.status == "preparing"
    history.move_training("model_1", "model_1")  # the same id: the row stays
    assert history.training("model_1").name == "Cats"
    history.forget_training("model_1")
    assert history.training("model_1") is None and history.training("model_2") is not None


def test_unfinished_trainings_of_a_backend_newest_first(history):
    for model_id, status, backend, at in (("m1", "training", "b1", 1.0), ("m2", "trained", "b1", 2.0),
                                          ("m3", "waiting", "b2", 3.0), ("m4", "not-started", "b1", 4.0),
                                          ("m5", "unknown", "b1", 5.0), ("m6", "failed", "b1", 6.0),
                                          ("m7", "training-canceled", "b1", 7.0)):
        history.record_training(TrainingRecord(model_id, backend_id=backend, status=status, created_at=at))
    assert [r.model_id for r in history.unfinished_trainings("b1")] == ["m5", "m1"]
    assert [r.model_id for r in history.unfinished_trainings()] == ["m5", "m3", "m1"]
    assert [r.model_id for r in history.trainings("b1", limit=2)] == ["m7", "m6"]


def test_a_trainings_table_that_cannot_be_read_says_which_file(history):
    history._connection().execute("DROP TABLE trainings")
    with pytest.raises(StorageError) as caught:
        history.trainings()
    assert str(caught.value).startswith(f"cannot read the history database {history.path} (no such table")


def test_count_and_close(history):
    assert history.count() == 0
    history.record(JobRecord("a"))
    history.record(JobRecord("b"))
    assert history.count() == 2
    history.close()
    assert history._conn is None
    history.close()
    assert history.count() == 2


def test_a_claim_held_behind_a_claim_of_another_name_is_found(history):
    history.claim_training(TrainingRecord("claim_a", backend_id="b1", name="Dogs", status="preparing"))
    history.claim_training(TrainingRecord("claim_b", backend_id="b1", name="Cats", status="preparing"))
    asked: list = []
    found = history.claim_training(TrainingRecord("claim_c", backend_id="b1", name="cats", status="preparing"),
                                   holds=lambda row: asked.append(row.model_id) or True)
    assert found.model_id == "claim_b" and asked == ["claim_b"] and history.training("claim_c") is None
