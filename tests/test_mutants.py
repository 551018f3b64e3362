"""Tests written to kill mutants that mutmut planted in the modules that move money and that the rest of the suite
let live (the run, the figures and the mutants that cannot be killed: tests/mutants-equivalent.md).

Each checks by effect: rows in the history, what SQLite holds, requests the sandbox received.
"""

from __future__ import annotations

import email.utils
import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from scenario_nb import StorageError
from scenario_nb import _backoff, _http
from scenario_nb._errors import (APIConnectionError, APIError, APITimeoutError, NotFoundError,
                                 PermissionDeniedError, RateLimitError, ServerError)
from scenario_nb._history import History, JobRecord, TrainingRecord, new_request_id


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "h.sqlite")
    yield h
    h.close()


# -- _history.py -------------------------------------------------------------------------------------------------
def test_the_database_is_opened_with_its_settings_and_schema_version(tmp_path):
    """A history in a folder that does not exist yet is created there, in WAL mode, stamped with the schema
    version, with a 10 s busy timeout (other kernels' writes are waited out) and synchronous=NORMAL."""
    h = History(tmp_path / "a" / "b" / "h.sqlite")
    conn = sqlite3.connect(h.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    mine = h._connection()
    assert mine.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    assert mine.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"jobs", "trainings"} <= tables
    assert {"jobs_request_key", "jobs_created_at", "jobs_status", "trainings_backend"} <= indexes
    conn.close()
    h.close()
    History(h.path).close()  # opening it again (existing folder, existing schema) is fine


def test_the_trainings_table_has_exactly_its_columns_and_their_types(history):
    """A new history's trainings table has one column per TrainingRecord field and no other, numbers REAL and
    the rest TEXT (in any order and letter case), so text that looks like a number (a training named "2024")
    comes back as text."""
    from scenario_nb._history import TRAINING_COLUMNS
    numbers = {"progress", "remaining", "cost", "created_at", "updated_at", "finished_at", "start_sent_at"}
    info = history._connection().execute("PRAGMA table_info(trainings)").fetchall()
    assert {(r[1], r[2].upper()) for r in info} == {(c, "REAL" if c in numbers else "TEXT") for c in TRAINING_COLUMNS}
    assert len(info) == len(TRAINING_COLUMNS)
    history.record_training(TrainingRecord("model_a", name="2024", stage="1.5", job_id="42"))
    row = history.training("model_a")
    assert (row.name, row.stage, row.job_id) == ("2024", "1.5", "42")


def test_reading_the_history_writes_nothing(history):
    """Reads reuse the open connection: another process sees no change to the file (SQLite's data_version)."""
    history.record(JobRecord("req_1", status="queued"))
    other = sqlite3.connect(history.path)
    before = other.execute("PRAGMA data_version").fetchone()[0]
    history.recent(), history.get("job_x"), history.count(), history.unfinished(), history.trainings()
    assert other.execute("PRAGMA data_version").fetchone()[0] == before
    other.close()


def test_a_history_whose_folder_cannot_be_made_again_refuses_every_write_until_it_can(tmp_path):
    """The history's folder deleted and a file put in its place: every write raises StorageError (not another
    error), and once the folder can be made again the history is recreated there."""
    folder = tmp_path / "home"
    h = History(folder / "h.sqlite")
    h.record(JobRecord("req_1", status="queued"))
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("in the way")
    for request_id in ("req_2", "req_3"):
        with pytest.raises(StorageError, match="cannot use the history database"):
            h.record(JobRecord(request_id, status="queued"))
    folder.unlink()
    h.record(JobRecord("req_4", status="queued"))
    assert [r.request_id for r in h.recent()] == ["req_4"]
    h.close()


def test_a_corrupt_history_refuses_with_sqlites_reason(tmp_path):
    """A file that is not a database: StorageError with SQLite's reason, for whoever must fix it."""
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"garbage, not a database " * 200)
    with pytest.raises(StorageError, match="cannot use the history database") as refused:
        History(path)
    assert "file is not a database" in str(refused.value)


def test_a_history_that_cannot_be_migrated_is_left_as_it_was_and_unlocked(tmp_path):
    """A version-1 history without the columns a migration needs: StorageError (not another error), the file
    still version 1 with its rows, and no lock left behind (another writer can start at once)."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE jobs (status TEXT)")
    conn.execute("INSERT INTO jobs VALUES ('success')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="cannot use the history database") as refused:
        History(path)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # "database is locked" if the failed migration kept its lock
    other.execute("ROLLBACK")
    assert other.execute("PRAGMA user_version").fetchone()[0] == 1
    assert other.execute("SELECT status FROM jobs").fetchall() == [("success",)]
    other.close()
    assert refused.value is not None


def test_columns_added_to_an_older_trainings_table_keep_numbers_and_text_apart(tmp_path):
    """A trainings table from a version with fewer columns gets the missing ones with their types: a progress
    comes back a number, a stage that looks like a number comes back text."""
    path = tmp_path / "h.sqlite"
    History(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE trainings")
    conn.execute("CREATE TABLE trainings (model_id TEXT PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    h = History(path)
    h.record_training(TrainingRecord("model_a", name="2024", stage="1.5", progress=0.5, cost=3.0))
    row = h.training("model_a")
    assert (row.name, row.stage, row.progress, row.cost) == ("2024", "1.5", 0.5, 3.0)
    assert isinstance(row.progress, float) and isinstance(row.stage, str)
    h.close()


def test_a_failed_write_is_rolled_back_and_the_next_write_goes_through(history):
    """A write SQLite refuses (a second request claiming the same job id) raises StorageError and leaves no
    transaction open: the next request is recorded, the refused one is not."""
    history.record(JobRecord("req_1", job_id="job_1", status="queued"))
    with pytest.raises(StorageError, match="cannot write the history database") as refused:
        history.record(JobRecord("req_2", job_id="job_1", status="queued"))
    assert "UNIQUE constraint failed" in str(refused.value)  # SQLite's own words, for whoever must fix it
    history.record(JobRecord("req_3", job_id="job_3", status="queued"))
    assert history.count() == 2 and history.get_request("req_2") is None
    assert history.get_request("req_3").job_id == "job_3"


def test_recording_again_keeps_the_first_created_at_and_replaces_the_rest(history):
    """A row recorded twice (the same request id) is one row: its first created_at, everything else new."""
    history.record(JobRecord("req_1", backend_id="u", status="sending", created_at=1.0, updated_at=1.0))
    history.record(JobRecord("req_1", job_id="job_1", backend_id="u", status="queued", cost=2.5, created_at=9.0,
                             updated_at=9.0, inputs={"a": 1}, asset_ids=["asset_1"]))
    row = history.get_request("req_1")
    assert (row.created_at, row.updated_at, row.job_id, row.status, row.cost) == (1.0, 9.0, "job_1", "queued", 2.5)
    assert row.inputs == {"a": 1} and row.asset_ids == ["asset_1"] and history.count() == 1


def test_update_changes_only_what_it_names_and_refuses_unknown_columns(history):
    """`update` writes the named columns of that one request; an unknown column raises and writes nothing."""
    history.record(JobRecord("req_1", job_id="job_1", status="queued", prompt="p"))
    history.record(JobRecord("req_2", job_id="job_2", status="queued"))
    history.update("req_1", status="success", files=["a.png"])
    with pytest.raises(ValueError, match="unknown history columns"):
        history.update("req_2", status="failure", bogus=1)
    history.update("req_2")  # nothing to change
    assert history.get("job_1").status == "success" and history.get("job_1").files == ["a.png"]
    assert history.get("job_1").prompt == "p" and history.get("job_2").status == "queued"


def test_unfinished_recent_and_reusable_rows_by_backend_and_status(history):
    """What a new kernel follows on (`unfinished`), the newest rows (`recent`) and what a re-run reuses
    (`find_reusable`), each of one backend when asked: terminal statuses end a row, a row without a status
    does not, and a failed, canceled or never-sent request is never reused."""
    key = History.request_key("m", "p", {})
    rows = [("req_a", "u", "success", 1.0), ("req_b", "u", "failure", 2.0), ("req_c", "u", "canceled", 3.0),
            ("req_d", "u", "not-sent", 4.0), ("req_e", "u", "queued", 5.0), ("req_f", "v", "in-progress", 6.0),
            ("req_g", "u", None, 7.0)]
    for request_id, backend, status, at in rows:
        history.record(JobRecord(request_id, backend_id=backend, request_key=key, created_at=at))
        history.update(request_id, status=status)
    assert [r.request_id for r in history.unfinished()] == ["req_g", "req_f", "req_e"]
    assert [r.request_id for r in history.unfinished("u")] == ["req_g", "req_e"]
    assert [r.request_id for r in history.recent(2)] == ["req_g", "req_f"]
    assert [r.request_id for r in history.recent(3, backend_id="u")] == ["req_g", "req_e", "req_d"]
    assert history.find_reusable(key, "v").request_id == "req_f"
    history.update("req_g", status="failure")
    history.update("req_e", status="canceled")
    assert history.find_reusable(key, "u").request_id == "req_a"  # the newest paid one
    assert history.get("nope") is None and history.get_request("nope") is None


def test_recent_lists_the_newest_20_unless_told(history):
    """`recent()` lists at most the 20 newest rows when no limit is given."""
    for i in range(21):
        history.record(JobRecord(f"req_{i:02}", backend_id="u", status="queued", created_at=float(i)))
    listed = history.recent()
    assert len(listed) == 20 and listed[0].request_id == "req_20" and listed[-1].request_id == "req_01"
    assert len(history.recent(backend_id="u")) == 20


def test_a_history_that_cannot_be_read_says_which_file(history):
    """A read SQLite refuses (here: its tables gone) raises StorageError naming the history file, for jobs and
    for trainings alike."""
    conn = history._connection()
    conn.execute("DROP TABLE jobs")
    conn.execute("DROP TABLE trainings")
    for read in (history.recent, history.trainings):
        with pytest.raises(StorageError, match="cannot read the history database") as refused:
            read()
        assert str(history.path) in str(refused.value)


def test_a_column_holding_broken_json_reads_as_empty(history):
    """A JSON column that is not JSON (or empty) reads as an empty dict or list, not an error."""
    history.record(JobRecord("req_1", job_id="job_1", status="success", inputs={"a": 1}, asset_ids=["x"]))
    conn = history._connection()
    conn.execute("UPDATE jobs SET inputs = '{broken', asset_ids = '', mime_types = NULL WHERE request_id = 'req_1'")
    row = history.get("job_1")
    assert (row.inputs, row.asset_ids, row.mime_types, row.files) == ({}, [], [], [])


def test_the_request_key_is_the_sha256_of_canonical_json(history):
    """The re-run key must not change between versions (old rows must still match): SHA-256 of the compact,
    key-sorted JSON of model, prompt and inputs."""
    canonical = '{"inputs":{"a":1,"b":[2,3]},"model":"m","prompt":"p"}'
    assert History.request_key("m", "p", {"b": [2, 3], "a": 1}) == hashlib.sha256(canonical.encode()).hexdigest()
    with_a_path = '{"inputs":{"image":"/data/crate.png"},"model":"m","prompt":"p"}'  # anything else: its text
    assert History.request_key("m", "p", {"image": Path("/data/crate.png")}) == \
        hashlib.sha256(with_a_path.encode()).hexdigest()


def test_request_ids_are_unique_and_shaped(history):
    """A request id is `req_` and 24 hex digits, never the same twice."""
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("req_") and len(i) == 28 and int(i[4:], 16) >= 0 for i in ids)


def test_another_thread_writes_and_reads_the_same_history(history):
    """The engine records from its own thread on the connection the kernel's thread opened."""
    history.record(JobRecord("req_0", status="queued"))
    errors = []

    def work():
        try:
            history.record(JobRecord("req_1", status="queued"))
            history.update("req_0", status="success")
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors and history.count() == 2 and history.get_request("req_0").status == "success"


def test_closed_history_opens_again_on_use(history):
    """After `close`, the next read or write reopens the database."""
    history.record(JobRecord("req_1", status="queued"))
    history.close()
    history.close()  # twice is fine
    assert history.count() == 1
    history.close()
    history.record(JobRecord("req_2", status="queued"))
    assert history.count() == 2


def test_a_version_1_history_is_migrated_whole(tmp_path):
    """Migrating schema 1 keeps every column it had, moves no column it lacked, leaves no old table, and
    stamps the new version."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, backend_url TEXT, prompt TEXT, status TEXT, "
                 "cost REAL, created_at REAL)")
    conn.execute("INSERT INTO jobs VALUES ('job_old', 'https://api', 'a crate', 'success', 3.0, 5.0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    h = History(path)
    row = h.get("job_old")
    assert (row.request_id, row.backend_id, row.backend_url, row.prompt, row.status, row.cost, row.created_at) == \
        ("job_old", "https://api", "https://api", "a crate", "success", 3.0, 5.0)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name = 'jobs_v1'")] == []
    conn.close()
    h.close()


def test_trainings_rows_by_backend_status_and_limit(history):
    """Trainings: recorded again keeps the first created_at; listed newest first, of one backend and up to a
    limit when asked; unfinished ones are those not trained, failed, canceled or never started."""
    rows = [("model_a", "u", "trained", 1.0), ("model_b", "u", "failed", 2.0), ("model_c", "u", "training-canceled",
            3.0), ("model_d", "u", "not-started", 4.0), ("model_e", "u", "training", 5.0),
            ("model_f", "v", "queued", 6.0)]
    for model_id, backend, status, at in rows:
        history.record_training(TrainingRecord(model_id, backend_id=backend, status="new", created_at=at))
        history.record_training(TrainingRecord(model_id, backend_id=backend, status=status, created_at=at + 100,
                                               parameters={"steps": 10}, images=[{"name": "a.png"}]))
    assert history.training("model_a").created_at == 1.0 and history.training("model_a").status == "trained"
    assert history.training("model_a").parameters == {"steps": 10} and history.training("nope") is None
    assert [t.model_id for t in history.trainings()] == ["model_f", "model_e", "model_d", "model_c", "model_b",
                                                         "model_a"]
    assert [t.model_id for t in history.trainings("u", limit=2)] == ["model_e", "model_d"]
    assert [t.model_id for t in history.trainings(limit=1)] == ["model_f"]
    assert [t.model_id for t in history.unfinished_trainings()] == ["model_f", "model_e"]
    assert [t.model_id for t in history.unfinished_trainings("u")] == ["model_e"]


def test_trainings_lists_the_newest_100_unless_told(history):
    """`trainings()` lists at most the 100 newest trainings when no limit is given."""
    for i in range(101):
        history.record_training(TrainingRecord(f"model_{i:03}", backend_id="u", created_at=float(i)))
    listed = history.trainings()
    assert len(listed) == 100 and listed[0].model_id == "model_100" and listed[-1].model_id == "model_001"
    assert len(history.trainings("u")) == 100


def test_a_training_row_with_empty_columns_reads_with_defaults(history):
    """A training row whose status, stage, name, type or progress is NULL, or whose JSON is broken, reads with
    the dataclass defaults (status `new`, still in flight) instead of failing."""
    history.record_training(TrainingRecord("model_a", backend_id="u", status="training", name="n", type="t",
                                           stage="s", progress=0.5, parameters={"a": 1}, images=[{"x": 1}]))
    history._connection().execute("UPDATE trainings SET status = NULL, stage = NULL, name = NULL, type = NULL, "
                                  "progress = NULL, parameters = '{broken', images = '' WHERE model_id = 'model_a'")
    row = history.training("model_a")
    assert (row.status, row.stage, row.name, row.type, row.progress) == ("new", "", "", "", 0.0)
    assert (row.parameters, row.images, row.backend_id) == ({}, [], "u")
    assert row.in_flight and [t.model_id for t in history.unfinished_trainings()] == ["model_a"]


def test_values_json_cannot_say_are_stored_as_their_text(history):
    """A path (or any object JSON has no word for) among a request's inputs or a training's parameters is
    stored as its text instead of failing the write, which would refuse the request."""
    where = Path("/data/crates")
    history.record(JobRecord("req_1", status="queued", inputs={"image": where}))
    history.record_training(TrainingRecord("model_a", parameters={"folder": where}, images=[{"path": where}]))
    assert history.get_request("req_1").inputs == {"image": str(where)}
    assert history.training("model_a").parameters == {"folder": str(where)}
    assert history.training("model_a").images == [{"path": str(where)}]


# -- _http.py: the server's words and waits, the network's failures, the creation gate -------------------------
def test_the_servers_wait_is_read_from_retry_after_or_the_body():
    """`Retry-After` in seconds (a fraction, zero), or as an HTTP date, else a cooldown's `remainingSeconds`;
    a header that is negative, absurd or unreadable counts as no header."""
    def wait(value=None, body=None):
        headers = CaseInsensitiveDict({"Retry-After": value} if value is not None else {})
        return _http._retry_after(headers, body)

    assert wait("2.5") == 2.5 and wait("0.0") == 0.0 and wait("0") == 0 and wait("86399.5") == 86399.5
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 <= wait(in_a_minute) <= 61
    assert wait("soon") is None and wait("-3.5") is None and wait("1e9") is None
    assert wait("soon", {"remainingSeconds": 7}) == 7.0 and isinstance(wait(body={"remainingSeconds": 7}), float)
    assert wait(body={"remainingSeconds": "7"}) is None and wait(body=[7]) is None and wait() is None


def test_the_servers_reason_is_its_first_words_found():
    """An error's reason: the body's `reason`, `message`, `error` or `detail` (the first non-empty text), else
    the body's text, trimmed and cut at 300 characters, else 'no reason given'."""
    assert _http._reason({"reason": "r", "message": "m"}, "t") == "r"
    assert _http._reason({"reason": "", "message": "m"}, "t") == "m"
    assert _http._reason({"reason": 5, "error": "e"}, "t") == "e"
    assert _http._reason({"detail": "d"}, "t") == "d"
    assert _http._reason({"other": "x"}, "  plain words \n") == "plain words"
    assert _http._reason(None, "x" * 500) == "x" * 300
    assert _http._reason(None, "   ") == _http._reason({}, None) == "no reason given"


def test_an_error_answer_becomes_the_matching_error_with_the_servers_reason():
    """A non-2xx answer raises the error of its status carrying the server's reason; a 2xx that is not JSON is
    a malformed answer; an empty 2xx is an empty object."""
    with pytest.raises(NotFoundError, match="no such job") as raised:
        _http._answer(404, {}, b'{"reason": "no such job"}', "GET", "/jobs/x")
    assert raised.value.status_code == 404 and raised.value.body == {"reason": "no such job"}
    with pytest.raises(ServerError, match="bad gateway"):
        _http._answer(502, {}, b"bad gateway", "GET", "/jobs/x")
    with pytest.raises(_http.MalformedAnswer, match="malformed JSON in the answer to GET /jobs/x"):
        _http._answer(200, {}, b"{cut sh", "GET", "/jobs/x")
    assert _http._answer(269, {}, b"", "POST", "/x") == {} and _http._answer(200, {}, b"[1]", "GET", "/x") == [1]
    with pytest.raises(APIError) as raised:
        _http._answer(300, {}, b"", "GET", "/x")
    assert raised.value.status_code == 300


def test_a_refused_asset_download_says_why_in_the_cdns_words():
    """A CDN's XML error gives its <Message>; 403 and 404 say signed URLs expire; other statuses keep theirs."""
    xml = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>\n Request has expired \n</Message></Error>"
    expired = _http._download_error(403, xml)
    assert isinstance(expired, PermissionDeniedError) and expired.reason == "asset URL refused: Request has expired"
    assert "expire" in expired.hint and expired.status_code == 403
    gone = _http._download_error(404, b"not here")
    assert isinstance(gone, NotFoundError) and gone.reason == "asset URL refused: not here" and gone.hint
    broken = _http._download_error(503, b" overloaded " + b"z" * 300)
    assert isinstance(broken, ServerError) and broken.status_code == 503
    assert broken.reason == (" overloaded " + "z" * 300)[:200].strip() and not broken.hint.startswith("signed")
    late = _http._download_error(500, b"x" * 2000 + b"<Message>late</Message>")
    assert "late" not in late.reason


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.ConnectionError(MaxRetryError(None, "/v1/x", reason=reason))


def test_only_a_connection_that_never_opened_counts_as_never_sent():
    """Refused connections and connect timeouts never reached the server; a dropped connection, a read
    timeout or a proxy's failure may have."""
    dropped = requests.ConnectionError(MaxRetryError(None, "/v1/x", reason=ProtocolError("Connection aborted.")))
    assert _http._never_sent(_refused()) and _http._never_sent(requests.ConnectTimeout("slow"))
    assert not _http._never_sent(dropped) and not _http._never_sent(requests.ReadTimeout("slow"))
    assert not _http._never_sent(requests.exceptions.ProxyError(_refused().args[0]))
    assert not _http._never_sent(requests.ConnectionError("no cause"))


def test_network_failures_are_worded_by_what_is_known_of_them():
    """Never connected, connected too slowly, no answer in time, or dropped: each in its own words, with the
    short cause."""
    refused = _http._connection_error(_refused(), "POST", "/generate")
    assert type(refused) is APIConnectionError and str(refused).startswith(
        "could not reach the API (connection refused); check the URL")
    slow = _http._connection_error(requests.ConnectTimeout("x"), "POST", "/generate")
    assert type(slow) is APITimeoutError and "could not connect to the API in time" in str(slow)
    late = _http._connection_error(requests.ReadTimeout("x"), "GET", "/jobs/j")
    assert type(late) is APITimeoutError and "GET /jobs/j got no answer in time" in str(late)
    reset = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError("Connection reset")))
    dropped = _http._connection_error(reset, "GET", "/jobs/j")
    assert type(dropped) is APIConnectionError
    assert "the connection dropped during GET /jobs/j (connection reset)" in str(dropped)
    assert _http._short(OSError("[Errno -2] Name or service not known")) == "name or service not known"
    assert _http._short(OSError("read timed out")) == "timed out"
    assert _http._short(ValueError("something else")) == "ValueError"
    assert _http._short(requests.ConnectionError()) == "ConnectionError"


def test_the_creation_gate_backs_off_1_2_4_up_to_30_seconds_and_resets(monkeypatch):
    """After 429s without Retry-After nobody creates for 1 s, 2 s, 4 s ... at most 30 s (jitter: x0.75 to
    x1.25); a 429 answering a request sent before the last 429 came back does not grow the wait; the first job
    created starts over at 1 s; the server's own Retry-After is taken as is."""
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)  # no jitter
    gate = _http.CreationGate()
    assert gate.remaining() == 0.0
    waits = [gate.refused(None) for _ in range(7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert 29.0 < gate.remaining() <= 30.0
    assert gate.refused(None, sent_at=time.time() - 60) == 30.0  # side by side with the last one
    gate.created()
    assert gate.refused(None) == 1.0
    assert gate.refused(None, sent_at=time.time() - 60) == 1.0  # the same refusal: no growth
    assert gate.refused(None, sent_at=time.time() + 1) == 2.0
    assert gate.refused(0.25) == 0.25 and 29.0 < gate.remaining() <= 30.0  # a shorter wait never reopens it
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.0)
    assert _http.CreationGate().refused(None) == 0.75
    monkeypatch.setattr(_backoff.random, "random", lambda: 1.0)
    assert _http.CreationGate().refused(None) == 1.25
    fresh = _http.CreationGate()
    assert fresh.refused(3.0) == 3.0 and 2.5 < fresh.remaining() <= 3.0


def test_the_backoff_policy_doubles_to_its_cap_jitters_and_never_undercuts_the_server(monkeypatch):
    """One rule for every wait: base x 2^attempt, capped, x0.75 to x1.25, and never shorter than the server's
    Retry-After; a URL the server answered with Retry-After is held that long (a shorter one never shortens it)."""
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)  # no jitter
    policy = _backoff.Backoff(base=0.5, cap=8.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(0, 3.0) == 3.0 and policy.delay(5, 0.1) == 8.0 and policy.delay(1, None) == 1.0
    assert policy.delay(2, base=0.25, cap=0.75) == 0.75 and policy.delay(1, base=0.25) == 0.5
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.0)
    assert policy.delay(1) == 0.75
    monkeypatch.setattr(_backoff.random, "random", lambda: 1.0)
    assert policy.delay(1) == 1.25 and policy.delay(9) == 10.0
    assert policy.held("http://api/v1/jobs/j") == 0.0
    policy.hold("http://api/v1/jobs/j", 2.0)
    policy.hold("http://api/v1/jobs/j", 0.5)
    policy.hold("http://api/v1/jobs/k", None)
    policy.hold("http://api/v1/jobs/k", 0)
    assert 1.9 < policy.held("http://api/v1/jobs/j") <= 2.0 and policy.held("http://api/v1/jobs/k") == 0.0


def test_reads_retried_in_place_wait_as_the_policy_says(monkeypatch):
    """urllib3's in-place retries of a read: nothing before the second consecutive error, then the client's
    policy (its jitter: x1.25 here) from 1 s (base 0.5 x 2), doubling, at most 8 s before jitter."""
    from urllib3.exceptions import ConnectTimeoutError
    monkeypatch.setattr(_backoff.random, "random", lambda: 1.0)
    transport = _http.Transport(_http.Credentials("k", "s", "http://127.0.0.1:9/v1"), max_retries=8)
    retry = transport._adapter.max_retries
    assert retry.policy is transport.backoff and transport.creation_gate._backoff is transport.backoff
    waits = []
    for _ in range(6):
        retry = retry.increment(method="GET", url="/v1/jobs/j", error=ConnectTimeoutError("slow"))
        waits.append(retry.get_backoff_time())
    assert waits == [0.0, 1.25, 2.5, 5.0, 10.0, 10.0]
    transport.close()


def test_a_url_the_server_held_is_not_asked_by_the_engine_before_its_time():
    """The engine's one-try GETs of a URL answered with Retry-After raise RateLimitError (with the wait left)
    and send nothing: a closed port would otherwise answer with a connection error."""
    transport = _http.Transport(_http.Credentials("k", "s", "http://127.0.0.1:9/v1"))
    transport.backoff.hold("http://127.0.0.1:9/v1/jobs/j", 5.0)
    transport.backoff.hold("http://127.0.0.1:9/assets/a.png", 5.0)
    for ask in (lambda: transport.get_once("/jobs/j"),
                lambda: transport.download_once("http://127.0.0.1:9/assets/a.png?Signature=x")):
        with pytest.raises(RateLimitError) as info:
            ask()
        assert 4.0 < info.value.retry_after <= 5.0
    with pytest.raises(APIConnectionError):  # another URL is asked (and the port is closed)
        transport.get_once("/jobs/other")
    transport.close()


def test_a_request_to_a_refused_port_is_tried_three_times_not_fifteen(refused_port, monkeypatch):
    """A POST that never connects is tried again by the transport's own loop (nothing was sent), not also by
    urllib3 underneath it: three TCP attempts, where the two layers together made fifteen."""
    attempts = refused_port
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.0)  # the policy's shortest waits: 0.375 s, 0.75 s
    transport = _http.Transport(_http.Credentials("k", "s", "http://127.0.0.1:9/v1"))
    with pytest.raises(APIConnectionError, match="could not reach the API"):
        transport.request("POST", "/assets", json_body={"image": "x"})
    assert len(attempts) == 3
    transport.close()
