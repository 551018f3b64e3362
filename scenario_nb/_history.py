"""The local job history and write-ahead ledger: SQLite in WAL mode.

A request is written here *before* it leaves the machine (status `sending`), its job id the moment it is
known, and every change after that. So a killed kernel, a Ctrl-C or a lost answer never loses a paid job:
the next look at the history (this kernel or the next) finds it and follows it on. If the history cannot
be written, nothing is sent.

Rows are keyed by a local request id; `job_id` is filled in once the server names the job. Several kernels
may write at once: each write is one short immediate transaction, and SQLite's busy timeout waits out the
others.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import threading
import uuid
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ._errors import StorageError
from ._history_trainings import (TRAINING_COLUMNS, TRAINING_TERMINAL, TrainingRecord, _decode_training,
                                 _encode_training, _ensure_trainings)

SCHEMA_VERSION = 2
TERMINAL = ("success", "failure", "canceled", "not-sent")
WORKBENCH_KINDS = ("model", "upload")
"""Rows of the workbench's own paid steps (a model created, a training image uploaded): never jobs to follow."""
"""Statuses after which a row never changes again on the server (`not-sent`: proven never created)."""
_JSON_COLUMNS = {"inputs": dict, "asset_ids": list, "files": list, "mime_types": list}


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


@dataclass
class JobRecord:
    """One row of the history: a request, and its job once it exists."""

    request_id: str
    job_id: Optional[str] = None
    backend_id: str = ""
    backend_url: str = ""
    model_id: str = ""
    base_model_id: Optional[str] = None
    model_name: str = ""
    prompt: str = ""
    inputs: dict = field(default_factory=dict)
    request_key: str = ""
    cost: Optional[float] = None
    status: str = ""
    progress: float = 0.0
    asset_ids: list = field(default_factory=list)
    mime_types: list = field(default_factory=list)
    files: list = field(default_factory=list)
    text: Optional[str] = None
    error: Optional[str] = None
    hint: Optional[str] = None
    source: str = "api"
    kind: str = "generation"
    sent_at: Optional[float] = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: Optional[float] = None

    @property
    def in_flight(self) -> bool:
        return self.status not in TERMINAL

    @property
    def legacy(self) -> bool:
        """Written by schema 1, which named a backend by its URL alone (no key digest): any key's job on that URL,
        until a client whose key the server knows the job under follows it and stamps its own backend."""
        return bool(self.backend_url) and self.backend_id == self.backend_url

    def of_backend(self, backend_id: str) -> bool:
        """Whether this row may belong to that backend (its own, or a schema-1 row of its URL)."""
        return self.backend_id == backend_id or (self.legacy and self.backend_url == _url_of(backend_id))


def _url_of(backend_id: str) -> str:
    """The URL part of a backend id (`URL#key digest`)."""
    return backend_id.split("#", 1)[0]


def _of_backend(backend_id: str) -> tuple[str, tuple]:
    """The SQL condition for `JobRecord.of_backend`, and its parameters."""
    return "(backend_id = ? OR (backend_id = backend_url AND backend_url = ?))", (backend_id, _url_of(backend_id))


COLUMNS = [f.name for f in fields(JobRecord)]
_TYPES = {"cost": "REAL", "progress": "REAL", "sent_at": "REAL", "created_at": "REAL", "updated_at": "REAL",
          "finished_at": "REAL"}
_SCHEMA = ["CREATE TABLE IF NOT EXISTS jobs (request_id TEXT PRIMARY KEY, job_id TEXT UNIQUE, " +
           ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in COLUMNS[2:]) + ")",
           "CREATE INDEX IF NOT EXISTS jobs_request_key ON jobs (request_key)",
           "CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at)",
           "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)"]


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if name in _JSON_COLUMNS else value


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo a failed transaction, if SQLite has not already (it has, on a full disk): the first error is the one
    worth reporting, never "cannot rollback"."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _disk_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or getattr(exc, "errno", None) == errno.ENOSPC \
        or "disk is full" in str(exc)


def _decode(row: sqlite3.Row) -> JobRecord:
    values = {}
    for name in COLUMNS:
        value = row[name]
        if name in _JSON_COLUMNS:
            try:
                value = json.loads(value) if value else _JSON_COLUMNS[name]()
            except ValueError:
                value = _JSON_COLUMNS[name]()
        values[name] = value
    return JobRecord(**values)


class History:
    """Every request this machine sent (or re-attached to), newest first."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        self.newer_version: Optional[int] = None  # set when a newer scenario_nb wrote it: then it is read-only
        with self._lock:
            self._open()

    @property
    def read_only(self) -> bool:
        return self.newer_version is not None

    def _newer_text(self) -> str:
        return (f"the history database {self.path} was written by a newer scenario_nb (schema {self.newer_version}; "
                f"this version knows {SCHEMA_VERSION}): opened read-only, nothing new is recorded. Upgrade "
                f"scenario_nb, or set SCENARIO_NB_HOME (or %config ScenarioMagics.history_path) to another place")

    def _fail(self, exc: BaseException, doing: str = "use") -> StorageError:
        if _disk_full(exc):
            return StorageError(f"cannot {doing} the history database {self.path}: the disk is full. Free some "
                                f"space there, or set SCENARIO_NB_HOME (or %config ScenarioMagics.history_path) "
                                f"to another disk")
        return StorageError(f"cannot {doing} the history database {self.path} ({exc}). Set SCENARIO_NB_HOME "
                            f"(or %config ScenarioMagics.history_path) to a writable place")

    def _open(self) -> sqlite3.Connection:
        """(Re)open the database, creating it and its schema if it is missing (deleted while we ran)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:  # read it as it is; never migrate it, nor stamp our older version on it
                conn.execute("PRAGMA query_only = ON")
                first_time, self.newer_version = self.newer_version is None, version
                if first_time:
                    warnings.warn(self._newer_text(), stacklevel=2)
                self._conn = conn
                return conn
            self.newer_version = None
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                if version == 1:
                    _migrate_v1(conn)
                for statement in _SCHEMA:
                    conn.execute(statement)
                _ensure_trainings(conn)
                conn.execute(_CAPTIONS_TABLE)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except (OSError, sqlite3.Error) as exc:
            raise self._fail(exc) from None
        self._conn = conn
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or not self.path.exists():
            return self._open()
        return self._conn

    def _write(self, sql: str, params: tuple) -> int:
        """One short write transaction; returns the number of rows changed."""
        return self._transaction(lambda conn: conn.execute(sql, params).rowcount)

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work(conn)` in one write transaction (`BEGIN IMMEDIATE`: other writers wait), committed, or rolled
        back on any error; returns what `work` returns."""
        with self._lock:
            try:
                conn = self._connection()
                if self.read_only:
                    raise StorageError(self._newer_text())
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
                return result
            except (OSError, sqlite3.Error) as exc:
                raise self._fail(exc, "write") from None

    def _query(self, sql: str, params: tuple = ()) -> list[JobRecord]:
        with self._lock:
            try:
                return [_decode(r) for r in self._connection().execute(sql, params).fetchall()]
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"cannot read the history database {self.path} ({exc})") from None

    # -- Writing -----------------------------------------------------------------------------------
    def record(self, rec: JobRecord) -> None:
        """Insert or replace a row (keyed by request id), keeping its first created_at."""
        values = [_encode(name, getattr(rec, name)) for name in COLUMNS]
        placeholders = ", ".join("?" * len(COLUMNS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("request_id", "created_at"))
        self._write(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
                    f"ON CONFLICT(request_id) DO UPDATE SET {updates}", tuple(values))

    def update(self, request_id: str, **changes: Any) -> None:
        unknown = set(changes) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown history columns: {sorted(unknown)}")
        if changes:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            self._write(f"UPDATE jobs SET {assignments} WHERE request_id = ?",
                        tuple(_encode(k, v) for k, v in changes.items()) + (request_id,))

    # -- Reading -----------------------------------------------------------------------------------
    def _one(self, sql: str, params: tuple) -> Optional[JobRecord]:
        rows = self._query(sql + " LIMIT 1", params)
        return rows[0] if rows else None

    def get(self, job_id: str) -> Optional[JobRecord]:
        return self._one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))

    def get_request(self, request_id: str) -> Optional[JobRecord]:
        return self._one("SELECT * FROM jobs WHERE request_id = ?", (request_id,))

    def recent(self, limit: int = 20, backend_id: Optional[str] = None) -> list[JobRecord]:
        if backend_id:
            mine, params = _of_backend(backend_id)
            return self._query(f"SELECT * FROM jobs WHERE {mine} ORDER BY created_at DESC LIMIT ?", params + (limit,))
        return self._query("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))

    def unfinished(self, backend_id: Optional[str] = None) -> list[JobRecord]:
        """Requests and jobs not known to have ended: what a new kernel follows on."""
        marks = ", ".join("?" * len(TERMINAL))
        sql = (f"SELECT * FROM jobs WHERE (status IS NULL OR status NOT IN ({marks})) "
               f"AND (kind IS NULL OR kind NOT IN ('model', 'upload'))")  # schema 1 rows have no kind
        params: tuple = TERMINAL
        if backend_id:
            mine, theirs = _of_backend(backend_id)
            sql, params = f"{sql} AND {mine}", params + theirs
        return self._query(sql + " ORDER BY created_at DESC", params)

    def workbench(self, backend_id: str, model_name: Optional[str] = None) -> list[JobRecord]:
        """This backend's model creations and training-image uploads (of one model name, when given), newest first."""
        sql = "SELECT * FROM jobs WHERE kind IN ('model', 'upload') AND backend_id = ?"
        params: tuple = (backend_id,)
        if model_name is not None:
            sql, params = sql + " AND model_name = ?", params + (model_name,)
        return self._query(sql + " ORDER BY created_at DESC", params)

    def find_reusable(self, request_key: str, backend_id: str) -> Optional[JobRecord]:
        """The newest identical request on this backend that is paid for or may be: anything but failed,
        canceled or proven never created."""
        mine, params = _of_backend(backend_id)
        return self._one(f"SELECT * FROM jobs WHERE request_key = ? AND {mine} AND status NOT IN "
                         "('failure', 'canceled', 'not-sent') ORDER BY created_at DESC", (request_key,) + params)

    def count(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- Trainings (a table of their own, keyed by model id) -----------------------------------------------
    def record_training(self, rec: "TrainingRecord") -> None:
        """Insert or replace a training's row (keyed by model id), keeping its first created_at."""
        values = [_encode_training(name, getattr(rec, name)) for name in TRAINING_COLUMNS]
        placeholders = ", ".join("?" * len(TRAINING_COLUMNS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in TRAINING_COLUMNS if c not in ("model_id", "created_at"))
        self._write(f"INSERT INTO trainings ({', '.join(TRAINING_COLUMNS)}) VALUES ({placeholders}) "
                    f"ON CONFLICT(model_id) DO UPDATE SET {updates}", tuple(values))

    def claim_training(self, rec: "TrainingRecord",
                       holds: Optional[Callable[["TrainingRecord"], bool]] = None) -> Optional["TrainingRecord"]:
        """Write `rec` (a `preparing` row) unless another `preparing` row of its backend and name `holds` (its
        process alive): then that row is returned and nothing written. A row that no longer holds is marked
        `not-started`. One transaction, so two kernels never both claim a name."""
        def claim(conn: sqlite3.Connection) -> Optional[TrainingRecord]:
            rows = [_decode_training(r) for r in conn.execute(
                "SELECT * FROM trainings WHERE backend_id = ? AND status = 'preparing'", (rec.backend_id,))]
            for row in rows:
                if row.name.strip().lower() != rec.name.strip().lower() or holds is None:
                    continue
                if holds(row):
                    return row
                conn.execute("UPDATE trainings SET status = 'not-started', error = ? WHERE model_id = ?",
                             (f"abandoned while being prepared: its process ({row.owner}) stopped", row.model_id))
            values = [_encode_training(name, getattr(rec, name)) for name in TRAINING_COLUMNS]
            conn.execute(f"INSERT INTO trainings ({', '.join(TRAINING_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(values))})", tuple(values))
            return None

        return self._transaction(claim)

    def move_training(self, old_id: str, new_id: str) -> None:
        """A claim's row now names its model (created, or a draft reused): any row of that model gives way."""
        with self._lock:
            self._write("DELETE FROM trainings WHERE model_id = ? AND model_id != ?", (new_id, old_id))
            self._write("UPDATE trainings SET model_id = ? WHERE model_id = ?", (new_id, old_id))

    def forget_training(self, model_id: str) -> None:
        """A claim or row of a training that paid nothing (a dry run, a refused price): no row."""
        self._write("DELETE FROM trainings WHERE model_id = ?", (model_id,))

    def touch_training(self, model_id: str, now: float) -> None:
        """A claim's heartbeat: its process is alive and still preparing."""
        self._write("UPDATE trainings SET updated_at = ? WHERE model_id = ? AND status = 'preparing'", (now, model_id))

    def _training_query(self, sql: str, params: tuple = ()) -> list["TrainingRecord"]:
        with self._lock:
            try:
                return [_decode_training(r) for r in self._connection().execute(sql, params).fetchall()]
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"cannot read the history database {self.path} ({exc})") from None

    def training(self, model_id: str) -> Optional["TrainingRecord"]:
        rows = self._training_query("SELECT * FROM trainings WHERE model_id = ? LIMIT 1", (model_id,))
        return rows[0] if rows else None

    def trainings(self, backend_id: Optional[str] = None, limit: int = 100) -> list["TrainingRecord"]:
        """Trainings, newest first (of one backend when given)."""
        if backend_id:
            return self._training_query("SELECT * FROM trainings WHERE backend_id = ? ORDER BY created_at DESC "
                                        "LIMIT ?", (backend_id, limit))
        return self._training_query("SELECT * FROM trainings ORDER BY created_at DESC LIMIT ?", (limit,))

    def unfinished_trainings(self, backend_id: Optional[str] = None) -> list["TrainingRecord"]:
        """Trainings not known to have ended: what a new kernel follows on."""
        marks = ", ".join("?" * len(TRAINING_TERMINAL))
        sql = f"SELECT * FROM trainings WHERE (status IS NULL OR status NOT IN ({marks}))"
        params: tuple = TRAINING_TERMINAL
        if backend_id:
            sql, params = sql + " AND backend_id = ?", params + (backend_id,)
        return self._training_query(sql + " ORDER BY created_at DESC", params)

    @staticmethod
    def request_key(model_id: str, prompt: str, inputs: dict) -> str:
        """The same model, prompt and inputs always give the same key (re-run safety)."""
        canonical = json.dumps({"model": model_id, "prompt": prompt, "inputs": inputs}, sort_keys=True,
                               separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


    # -- Captions: paid per image, recorded per image content and settings, reused by any later attempt ----
    def record_caption(self, rec: "CaptionRecord") -> None:
        """Insert or replace one image's caption row (its state: sending, done or unknown)."""
        values = [getattr(rec, name) for name in CAPTION_COLUMNS]
        self._write(f"INSERT OR REPLACE INTO captions ({', '.join(CAPTION_COLUMNS)}) VALUES "
                    f"({', '.join('?' for _ in values)})", tuple(values))

    def forget_caption(self, backend_id: str, image_sha256: str, details_level: str) -> None:
        """A caption the server refused (nothing made, nothing paid): no row."""
        self._write("DELETE FROM captions WHERE backend_id = ? AND image_sha256 = ? AND details_level = ?",
                    (backend_id, image_sha256, details_level))

    def captions(self, backend_id: str, image_sha256: Optional[str] = None) -> list["CaptionRecord"]:
        """This backend's caption rows (of one image, when given), newest first."""
        sql = "SELECT * FROM captions WHERE backend_id = ?"
        params: tuple = (backend_id,)
        if image_sha256 is not None:
            sql, params = sql + " AND image_sha256 = ?", (backend_id, image_sha256)
        with self._lock:
            try:
                rows = self._connection().execute(sql + " ORDER BY updated_at DESC", params).fetchall()
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"cannot read the history database {self.path} ({exc})") from None
        return [CaptionRecord(**{k: r[k] for k in r.keys() if k in CAPTION_COLUMNS}) for r in rows]


@dataclass
class CaptionRecord:
    """One paid caption: the image's content digest and the caption settings it was made with, its state
    (`sending` before the request, `done`, or `unknown`: the answer was lost, it may have been charged)."""

    backend_id: str
    image_sha256: str
    details_level: str
    status: str = "sending"
    caption: str = ""
    cost: Optional[float] = None
    name: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


CAPTION_COLUMNS = [f.name for f in fields(CaptionRecord)]
_CAPTIONS_TABLE = ("CREATE TABLE IF NOT EXISTS captions (backend_id TEXT, image_sha256 TEXT, details_level TEXT, "
                   "status TEXT, caption TEXT, cost REAL, name TEXT, created_at REAL, updated_at REAL, "
                   "PRIMARY KEY (backend_id, image_sha256, details_level))")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 keyed rows by job id; keep every row, its job id doubling as the request id."""
    conn.execute("ALTER TABLE jobs RENAME TO jobs_v1")
    conn.execute(_SCHEMA[0])
    old = [r[1] for r in conn.execute("PRAGMA table_info(jobs_v1)").fetchall()]
    shared = [c for c in COLUMNS if c in old]
    conn.execute(f"INSERT INTO jobs (request_id, backend_id, {', '.join(shared)}) "
                 f"SELECT job_id, backend_url, {', '.join(shared)} FROM jobs_v1")
    conn.execute("DROP TABLE jobs_v1")
