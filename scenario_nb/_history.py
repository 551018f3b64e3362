"""The local job history: SQLite in WAL mode, written before anything waits on a job.

A killed kernel loses nothing that was paid for: a new one lists every job and re-attaches to it.
Several kernels may write at once; each write is one short immediate transaction, retried while the
database is locked.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

from ._errors import StorageError

SCHEMA_VERSION = 1
TERMINAL = ("success", "failure", "canceled")
_JSON_COLUMNS = {"inputs": dict, "asset_ids": list, "files": list}


@dataclass
class JobRecord:
    """One row of the history."""

    job_id: str
    backend_url: str = ""
    model_id: str = ""
    base_model_id: Optional[str] = None
    prompt: str = ""
    inputs: dict = field(default_factory=dict)
    request_key: str = ""
    cost: Optional[float] = None
    status: str = ""
    progress: float = 0.0
    asset_ids: list = field(default_factory=list)
    files: list = field(default_factory=list)
    error: Optional[str] = None
    hint: Optional[str] = None
    source: str = "api"
    kind: str = "generation"
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: Optional[float] = None


COLUMNS = [f.name for f in fields(JobRecord)]


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if name in _JSON_COLUMNS else value


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
    """Every job this machine started or re-attached to, newest first."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._execute("""CREATE TABLE IF NOT EXISTS jobs (
                job_id TEXT PRIMARY KEY, backend_url TEXT, model_id TEXT, base_model_id TEXT, prompt TEXT,
                inputs TEXT, request_key TEXT, cost REAL, status TEXT, progress REAL, asset_ids TEXT,
                files TEXT, error TEXT, hint TEXT, source TEXT, kind TEXT, created_at REAL, updated_at REAL,
                finished_at REAL)""")
            self._execute("CREATE INDEX IF NOT EXISTS jobs_request_key ON jobs (request_key)")
            self._execute("CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at)")
            self._execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot use the history database {self.path} ({exc}); set "
                               f"%config ScenarioMagics.history_path or SCENARIO_NB_HOME to a writable "
                               f"place") from None

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def _execute(self, sql: str, params: tuple = ()) -> None:
        """One short write transaction, retried while another process holds the lock."""
        conn = self._connection()
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(sql, params)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise StorageError(f"the history database {self.path} stayed locked; try again")

    def _query(self, sql: str, params: tuple = ()) -> list[JobRecord]:
        try:
            return [_decode(r) for r in self._connection().execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the history database {self.path} ({exc})") from None

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self._execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the history database {self.path} ({exc}); check the disk "
                               f"and SCENARIO_NB_HOME") from None

    def record(self, rec: JobRecord) -> None:
        """Insert or replace a job, keeping the first created_at."""
        values = [_encode(name, getattr(rec, name)) for name in COLUMNS]
        placeholders = ", ".join("?" * len(COLUMNS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("job_id", "created_at"))
        self._write(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
                    f"ON CONFLICT(job_id) DO UPDATE SET {updates}", tuple(values))

    def update(self, job_id: str, **changes: Any) -> None:
        unknown = set(changes) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown history columns: {sorted(unknown)}")
        if not changes:
            return
        assignments = ", ".join(f"{name} = ?" for name in changes)
        self._write(f"UPDATE jobs SET {assignments} WHERE job_id = ?",
                    tuple(_encode(k, v) for k, v in changes.items()) + (job_id,))

    def get(self, job_id: str) -> Optional[JobRecord]:
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0] if rows else None

    def recent(self, limit: int = 20, backend_url: Optional[str] = None) -> list[JobRecord]:
        if backend_url:
            return self._query("SELECT * FROM jobs WHERE backend_url = ? ORDER BY created_at DESC LIMIT ?",
                               (backend_url, limit))
        return self._query("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))

    def unfinished(self, backend_url: Optional[str] = None) -> list[JobRecord]:
        marks = ", ".join("?" * len(TERMINAL))
        sql = f"SELECT * FROM jobs WHERE (status IS NULL OR status NOT IN ({marks}))"
        params: tuple = TERMINAL
        if backend_url:
            sql, params = sql + " AND backend_url = ?", params + (backend_url,)
        return self._query(sql + " ORDER BY created_at DESC", params)

    def find_success(self, request_key: str, backend_url: str) -> Optional[JobRecord]:
        rows = self._query("SELECT * FROM jobs WHERE request_key = ? AND backend_url = ? AND status = 'success' "
                           "ORDER BY created_at DESC LIMIT 1", (request_key, backend_url))
        return rows[0] if rows else None

    def count(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def request_key(model_id: str, prompt: str, inputs: dict) -> str:
        """The same model, prompt and inputs always give the same key (re-run safety)."""
        canonical = json.dumps({"model": model_id, "prompt": prompt, "inputs": inputs}, sort_keys=True,
                               separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()
