"""A history written by a newer scenario_nb: this version reads it but never writes it, so it never stamps
its own, older, schema version over the newer one (which the newer version would then misread)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import requests

from scenario_nb import ScenarioClient, StorageError
from scenario_nb._history import SCHEMA_VERSION, History, JobRecord

from conftest import SUITE_KEY, SUITE_SECRET, until

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


# -- Schema 1: rows keyed by job id, with a backend URL and no key digest ---------------------------------------------

SCHEMA_1 = ("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, backend_url TEXT, model_id TEXT, base_model_id TEXT, "
            "prompt TEXT, inputs TEXT, request_key TEXT, cost REAL, status TEXT, progress REAL, asset_ids TEXT, "
            "files TEXT, error TEXT, hint TEXT, source TEXT, kind TEXT, created_at REAL, updated_at REAL, "
            "finished_at REAL)")


def written_by_schema_1(path, rows: list) -> None:
    """A history as the first version wrote it: `rows` are (job id, backend URL, model id, prompt, inputs,
    status); the request key is the one schema 1 computed (the same formula as today's)."""
    now = time.time()
    conn = sqlite3.connect(path)
    conn.execute(SCHEMA_1)
    for job_id, url, model_id, prompt, inputs, status in rows:
        conn.execute("INSERT INTO jobs (job_id, backend_url, model_id, prompt, inputs, request_key, status, "
                     "asset_ids, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, '[]', ?, ?)",
                     (job_id, url, model_id, prompt, json.dumps(inputs), History.request_key(model_id, prompt, inputs),
                      status, now - 30, now - 30))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_schema_1_rows_are_followed_and_reused_by_the_backend_they_came_from(sb, tmp_path):
    """Schema-1 rows name their backend by URL alone (today's rows: URL and a key digest), so before, no client
    matched them: a new kernel neither followed the job an old one left running nor re-used a finished request,
    and paid for it again. Now a schema-1 row belongs to any client of its URL whose key the server knows the job
    under (then it is claimed: re-stamped with that client's backend), and one the server does not know (another
    key's) is left as it is, never called failed."""
    home = tmp_path / "home"
    home.mkdir()
    model = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=tmp_path / "other").model(
        "model_google-gemini-3-1-flash")
    auth = (SUITE_KEY, SUITE_SECRET)

    def post(prompt: str) -> str:
        return requests.post(f"{sb.url}/generate/custom/{model.id}", json={"prompt": prompt}, auth=auth,
                             timeout=10).json()["job"]["jobId"]

    running, finished = post("left running by an old kernel"), post("finished under an old kernel")
    until(lambda: requests.get(f"{sb.url}/jobs/{finished}", auth=auth, timeout=10).json()["job"]["status"] ==
          "success", what="the old job finishing")
    written_by_schema_1(home / "history.sqlite", [
        (running, sb.url, model.id, "left running by an old kernel", {"prompt": "left running by an old kernel"},
         "queued"),
        (finished, sb.url, model.id, "finished under an old kernel", {"prompt": "finished under an old kernel"},
         "success"),
        ("job_of_another_key", sb.url, model.id, "another key's job", {"prompt": "another key's job"}, "queued")])
    posts = sb.generate_posts

    client = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=home)
    try:
        followed = {h.job_id: h for h in client.recover()}
        assert running in followed, "the job an old kernel left running is not followed"
        assert followed[running].wait(timeout=30).ok
        row = client.history.get(running)
        assert row.status == "success" and row.backend_id == client.backend_id and row.files
        other = client.history.get("job_of_another_key")
        assert other.status == "queued" and other.backend_id == sb.url, "another key's job was judged"

        again = client.previous(model, client.prepare(model, "finished under an old kernel")[2])
        assert again is not None and again.job_id == finished, "a finished request would be paid again"
        assert again.wait(timeout=30).ok and again.images
        assert sb.generate_posts == posts, "a schema-1 request was sent again"
        assert {running, finished} <= {r.job_id for r in client.history.recent(backend_id=client.backend_id)}
    finally:
        client.close()
