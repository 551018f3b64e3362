"""A history written by a newer scenario_nb: this version reads it but never writes it, so it never stamps
its own, older, schema version over the newer one (which the newer version would then misread)."""

from __future__ import annotations

import sqlite3

import pytest

from scenario_nb import StorageError
from scenario_nb._history import SCHEMA_VERSION, History, JobRecord

NEWER = SCHEMA_VERSION + 1


def stored_version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def written_by_a_newer_version(path) -> None:
    """A history with one finished job, then stamped as a newer version would stamp it."""
    history = History(path)
    history.record(JobRecord("req_old", job_id="job_old", backend_id="b", status="success", created_at=1.0))
    history.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {NEWER}")
    assert stored_version(path) == NEWER


def test_a_newer_history_opens_read_only_says_so_once_and_keeps_its_version(tmp_path):
    path = tmp_path / "history.sqlite"
    written_by_a_newer_version(path)
    with pytest.warns(UserWarning, match="newer scenario_nb.*read-only") as said:
        history = History(path)
        assert history.get("job_old").status == "success"  # what it holds is still shown
        with pytest.raises(StorageError, match="newer scenario_nb"):
            history.record(JobRecord("req_new", status="sending"))
        with pytest.raises(StorageError, match="read-only"):
            history.update("req_old", status="failure")
    assert len(said) == 1, [str(w.message) for w in said]
    assert stored_version(path) == NEWER
    assert history.get("job_old").status == "success" and history.get_request("req_new") is None


def test_a_generation_on_a_newer_history_is_refused_before_sending(client, sb):
    written_by_a_newer_version(client.history_path)
    model = client.models(public=True)[0]
    sent_before = len(sb.jobs)
    with pytest.warns(UserWarning, match="read-only"):
        with pytest.raises(StorageError, match="newer scenario_nb.*nothing was sent"):
            client.generate(model, "a lighthouse")
    assert len(sb.jobs) == sent_before
    assert stored_version(client.history_path) == NEWER
