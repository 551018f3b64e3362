"""The history's trainings table: one row per model trained (or being prepared), its columns and their codec.

A row is written before the first paid step of a training (status `preparing`, with the writing process as its
`owner`): the claim on its name that a second kernel waits behind (`History.claim_training`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field, fields
from typing import Any, Optional

def this_process() -> str:
    """`host:pid`: who writes a training row (a claim's holder, while it is `preparing`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


TRAINING_TERMINAL = ("trained", "failed", "training-canceled", "not-started")
"""Training statuses that never change again (`not-started`: the training was never triggered, nothing paid)."""


@dataclass
class TrainingRecord:
    """One training: its model, where it runs, its dataset (names, asset ids, captions) and its last state."""

    model_id: str
    backend_id: str = ""
    backend_url: str = ""
    name: str = ""
    type: str = ""
    job_id: Optional[str] = None
    status: str = "new"
    stage: str = ""
    progress: float = 0.0
    remaining: Optional[float] = None
    cost: Optional[float] = None
    parameters: dict = field(default_factory=dict)
    images: list = field(default_factory=list)  # [{"name", "asset_id", "caption"}]
    error: Optional[str] = None
    hint: Optional[str] = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: Optional[float] = None
    start_sent_at: Optional[float] = None  # when its start may have reached the server
    owner: str = ""  # "host:pid" of the process that last wrote it (a claim's holder, while `preparing`)

    @property
    def in_flight(self) -> bool:
        return self.status not in TRAINING_TERMINAL


TRAINING_COLUMNS = [f.name for f in fields(TrainingRecord)]
_TRAINING_JSON = {"parameters": dict, "images": list}
_TRAINING_TYPES = {"progress": "REAL", "remaining": "REAL", "cost": "REAL", "created_at": "REAL",
                   "updated_at": "REAL", "finished_at": "REAL", "start_sent_at": "REAL"}


def _ensure_trainings(conn: sqlite3.Connection) -> None:
    """The trainings table, created when missing and given any column a newer version added (additive only:
    older versions of the package read the jobs table as before)."""
    conn.execute("CREATE TABLE IF NOT EXISTS trainings (model_id TEXT PRIMARY KEY, " +
                 ", ".join(f"{c} {_TRAINING_TYPES.get(c, 'TEXT')}" for c in TRAINING_COLUMNS[1:]) + ")")
    have = {r[1] for r in conn.execute("PRAGMA table_info(trainings)").fetchall()}
    for column in TRAINING_COLUMNS:
        if column not in have:
            conn.execute(f"ALTER TABLE trainings ADD COLUMN {column} {_TRAINING_TYPES.get(column, 'TEXT')}")
    conn.execute("CREATE INDEX IF NOT EXISTS trainings_backend ON trainings (backend_id, created_at)")


def _encode_training(name: str, value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if name in _TRAINING_JSON else value


def _decode_training(row: sqlite3.Row) -> TrainingRecord:
    values: dict = {}
    keys = row.keys()
    for name in TRAINING_COLUMNS:
        value = row[name] if name in keys else None
        if name in _TRAINING_JSON:
            try:
                value = json.loads(value) if value else _TRAINING_JSON[name]()
            except ValueError:
                value = _TRAINING_JSON[name]()
        if value is not None or name not in ("status", "stage", "progress", "name", "type"):
            values[name] = value
    return TrainingRecord(**values)
