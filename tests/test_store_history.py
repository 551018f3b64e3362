"""The file store (atomic, validated) and the SQLite history (WAL, concurrent writers)."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import threading

import pytest
from PIL import Image

from scenario_nb import StorageError
from scenario_nb._history import History, JobRecord
from scenario_nb._store import FileStore
from scenario_nb._thumbnails import shrink


def png(size=(64, 64), color="red", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def test_put_round_trip_and_outputs_kept_as_they_came(tmp_path):
    store = FileStore(tmp_path)
    path = store.put("asset_a", png())
    assert store.has("asset_a") and path.read_bytes() == png()
    jpeg = png(fmt="JPEG")
    assert store.put("asset_j", jpeg, "image/jpeg").read_bytes() == jpeg
    assert store.path_for("asset_j", "image/jpeg").suffix == ".jpg" and store.find("asset_j").suffix == ".jpg"
    video = b"\x00\x00\x00\x18ftypmp42 not an image at all"
    assert store.put("asset_v", video, "video/mp4").read_bytes() == video  # never judged as an image
    assert store.open_image("asset_a").size == (64, 64)


def test_stored_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib
        import scenario_nb._store as store_module
        importlib.reload(store_module)
        path = store_module.FileStore(tmp_path).put("asset_m", png())
        assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    finally:
        os.umask(old)


@pytest.mark.parametrize("data, message", [(png()[:60], "not a valid image"), (b"hello", "not a valid image")],
                         ids=["truncated PNG", "not an image"])
def test_corrupt_images_leave_nothing(tmp_path, data, message):
    store = FileStore(tmp_path)
    with pytest.raises(StorageError, match=message):
        store.put("asset_bad", data)
    assert not store.has("asset_bad")
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not left, f"a refused image left files behind: {left}"


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(StorageError, match="decompression bomb"):
        FileStore(tmp_path).put("asset_bomb", png((200, 200)))


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="disk full"):
        store.put("asset_full", png())
    assert not list((tmp_path / "assets").iterdir())


def test_leftover_partials_are_cleaned(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "tmpabc.part").write_bytes(b"half")
    FileStore(tmp_path)
    assert not list((tmp_path / "assets").glob("*.part"))


def test_thumbnail_and_png_text(tmp_path):
    store = FileStore(tmp_path)
    noisy = Image.effect_noise((1024, 1024), 64).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    store.put("asset_big", buf.getvalue())
    thumb = shrink(store.open_image("asset_big"), 256)
    assert thumb.size == (256, 256) and shrink(thumb, 512).size == (256, 256)  # never enlarged
    out = store.save_png_with_metadata("asset_big", tmp_path / "out" / "x.png", {"prompt": "a ship", "seed": "4"})
    assert Image.open(out).text == {"prompt": "a ship", "seed": "4"}


def test_invalid_ids_and_unwritable_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError):
        FileStore(tmp_path).path_for("../etc/passwd")
    with pytest.raises(StorageError, match="cannot"):
        FileStore(tmp_path / "file" / "sub").put("asset_x", png())
    with pytest.raises(StorageError, match="history"):
        History(tmp_path / "file" / "history.sqlite")


def test_history_rows(tmp_path):
    h = History(tmp_path / "h.sqlite")
    key = History.request_key("m", "p", {"b": 1, "a": 2})
    assert key == History.request_key("m", "p", {"a": 2, "b": 1}) != History.request_key("m", "p", {"a": 3})
    h.record(JobRecord("req_1", job_id="job_1", backend_id="u", model_id="m", prompt="p", inputs={"a": 2},
                       request_key=key, status="queued", created_at=1.0))
    h.record(JobRecord("req_2", job_id="job_2", backend_id="u", status="in-progress", created_at=2.0))
    h.record(JobRecord("req_3", backend_id="u", status="unknown", created_at=0.5))  # no job id yet
    assert [r.request_id for r in h.unfinished()] == ["req_2", "req_1", "req_3"]
    h.update("req_1", status="success", asset_ids=["asset_1"], finished_at=3.0)
    assert h.get("job_1").asset_ids == ["asset_1"] and h.get("job_1").inputs == {"a": 2}
    assert h.find_reusable(key, "u").job_id == "job_1" and h.find_reusable(key, "other") is None
    h.update("req_1", status="failure")
    assert h.find_reusable(key, "u") is None  # a failed request is not paid for: it may be sent again
    assert [r.job_id for r in h.recent(1)] == ["job_2"] and h.count() == 3
    conn = h._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_deleted_history_is_recreated_and_a_corrupt_one_refuses(tmp_path):
    path = tmp_path / "h.sqlite"
    h = History(path)
    h.record(JobRecord("req_1", status="queued"))
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"h.sqlite{suffix}").unlink(missing_ok=True)
    h.record(JobRecord("req_2", status="queued"))  # no "no such table": the schema is made again
    assert path.exists() and h.get_request("req_2") is not None
    h.close()
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot use the history database") as refused:
        History(path).record(JobRecord("req_3", status="queued"))
    assert "nothing was sent" not in str(refused.value)  # the history cannot know; whoever was to send says so


def test_version_1_history_is_migrated(tmp_path):
    import sqlite3
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, backend_url TEXT, model_id TEXT, base_model_id TEXT, "
                 "prompt TEXT, inputs TEXT, request_key TEXT, cost REAL, status TEXT, progress REAL, asset_ids TEXT, "
                 "files TEXT, error TEXT, hint TEXT, source TEXT, kind TEXT, created_at REAL, updated_at REAL, "
                 "finished_at REAL)")
    conn.execute("INSERT INTO jobs (job_id, backend_url, status, asset_ids) VALUES ('job_old', 'u', 'success', "
                 "'[\"asset_1\"]')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    row = History(path).get("job_old")
    assert row.request_id == "job_old" and row.asset_ids == ["asset_1"] and row.backend_id == "u"


WRITER = """
import sys
from scenario_nb._history import History, JobRecord
h = History(sys.argv[1])
for i in range(300):
    h.record(JobRecord(f"req_{sys.argv[2]}_{i}", job_id=f"job_{sys.argv[2]}_{i}", status="queued", created_at=i))
    h.update(f"req_{sys.argv[2]}_{i}", status="success", asset_ids=[f"asset_{i}"])
"""


def test_two_processes_and_threads_lose_no_row(tmp_path):
    path = tmp_path / "h.sqlite"
    History(path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag]) for tag in "ab"]
    h = History(path)
    threads = [threading.Thread(target=lambda t=t: [h.record(JobRecord(f"req_t{t}_{i}", job_id=f"job_t{t}_{i}",
                                                                        status="queued")) for i in range(50)])
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert h.count() == 800
    rows = h.recent(1000)
    assert all(r.status == "success" and r.asset_ids for r in rows if not r.job_id.startswith("job_t"))
