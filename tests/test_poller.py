"""The one poller and live Generation handles, against the real local sandbox."""

from __future__ import annotations

import _thread
import json
import threading
import time

import pytest
from PIL import Image

from scenario_nb import JobFailedError, JobTimeoutError, ScenarioClient, wait_all
from scenario_nb import sandbox as sandbox_mod

from conftest import SUITE_KEY as KEY, SUITE_SECRET as SECRET  # noqa: E402 (scanned for in every exception)


def make(tmp_path, **options):
    sb = sandbox_mod.start(api_key=KEY, api_secret=SECRET, **options)
    client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
    model = next(m for m in client.models(public=True) if client.model(m.id).input("numOutputs") is not None
                 and client.model(m.id).runnable)
    return sb, client, model.id


@pytest.fixture
def setup(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=0.4, job_jitter=0.3, seed=3)
    yield sb, client, model
    client.close()
    sb.stop()


def client_threads() -> int:
    """Threads of this process other than the in-process sandbox's per-connection server threads."""
    return sum("process_request_thread" not in t.name for t in threading.enumerate())


def test_many_handles_complete_out_of_order_on_few_threads(setup):
    sb, client, model = setup
    before = client_threads()
    handles = [client.generate(model, f"crate number {i}", seed=i) for i in range(64)]
    peak = client_threads()
    wait_all(handles, timeout=60)
    peak = max(peak, client_threads())
    assert all(h.ok and h.images for h in handles)
    assert peak - before <= client.poller.threads + 2, "a thread per job?"
    order = sorted(handles, key=lambda h: h.finished_at)
    assert [h.job_id for h in order] != [h.job_id for h in handles], "expected out-of-order completion"


def test_failure_carries_error_and_hint(setup):
    sb, client, model = setup
    sb.inject("job_failure", error="content policy violation", hint="Rephrase the prompt")
    gen = client.generate(model, "forbidden")
    with pytest.raises(JobFailedError) as info:
        gen.wait(timeout=30)
    err = info.value
    assert err.job_id == gen.job_id and gen.job_id in str(err)
    assert "content policy violation" in str(err) and "Rephrase the prompt" in str(err)
    assert client.history.get(gen.job_id).status == "failure"


def test_cancel_mid_run(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=3.0)
    try:
        gen = client.generate(model, "to be canceled")
        time.sleep(0.3)
        gen.cancel()
        with pytest.raises(JobFailedError, match="canceled"):
            gen.wait(timeout=30)
        assert gen.status == "canceled"
    finally:
        client.close()
        sb.stop()


def test_429_storm_all_complete_none_early(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=0.5, max_parallel_jobs=4)
    try:
        handles = [client.generate(model, f"storm {i}") for i in range(16)]
        wait_all(handles, timeout=90)
        assert all(h.ok for h in handles)
        assert sb.stats()["jobs_created"] == 16
        for limited in sb.stats()["rate_limited"]:
            later = [r for r in sb.requests if limited["time"] < r["time"] < limited["time"] + limited["retry_after"]
                     - 0.05]
            assert not later, f"request sent before Retry-After allowed: {later[0]}"
    finally:
        client.close()
        sb.stop()


def test_transient_poll_errors_never_lose_a_job(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=0.5, seed=5,
                             faults={"error_5xx": 0.2, "drop": 0.1, "malformed": 0.1})
    try:
        handles = []
        for i in range(12):
            try:
                handles.append(client.generate(model, f"flaky {i}"))
            except Exception:
                pass
        wait_all(handles, timeout=90)
        assert handles and all(h.done for h in handles)
        assert all(h.ok for h in handles if not isinstance(h.exception, Exception)), \
            [str(h.exception) for h in handles]
    finally:
        client.close()
        sb.stop()


def test_wait_timeout_names_the_job_and_it_lives_on(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=1.5)
    try:
        gen = client.generate(model, "patience")
        with pytest.raises(JobTimeoutError, match=gen.job_id):
            gen.wait(timeout=0.2)
        assert gen.wait(timeout=30).ok
    finally:
        client.close()
        sb.stop()


def test_poller_timeout_ends_in_a_clear_error(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=5.0)
    try:
        client.poller.job_timeout = 0.5
        gen = client.generate(model, "too slow")
        with pytest.raises(JobTimeoutError, match=gen.job_id):
            gen.wait(timeout=30)
    finally:
        client.close()
        sb.stop()


def test_interrupted_wait_leaves_the_job_running_and_reattachable(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=1.0)
    try:
        gen = client.generate(model, "interrupt me")
        threading.Timer(0.2, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            gen.wait(timeout=30)
        other = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        again = other.job(gen.job_id).wait(timeout=30)
        assert again.ok and again.images and again.prompt == "interrupt me"
        other.close()
    finally:
        client.close()
        sb.stop()


def test_callbacks_run_on_the_poller_thread(setup):
    sb, client, model = setup
    seen = []
    gen = client.generate(model, "callback")
    gen.on_update(lambda g: seen.append((threading.current_thread().name, g.status)))
    gen.wait(timeout=30)
    time.sleep(0.1)
    assert any(name.startswith("scenario-poll") for name, _ in seen)
    assert seen[-1][1] == "success"


def test_save_writes_png_metadata_and_sidecar(setup, tmp_path):
    sb, client, model = setup
    gen = client.generate(model, "save me", seed=42, numOutputs=2).wait(timeout=30)
    paths = gen.save(tmp_path / "out")
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 2
    text = Image.open(pngs[0]).text
    assert text["prompt"] == "save me" and text["seed"] == "42" and text["job_id"] == gen.job_id
    assert json.loads(text["inputs"])["numOutputs"] == 2 and text["model"] == model
    sidecar = json.loads((tmp_path / "out" / f"{gen.job_id}.json").read_text())
    assert sidecar["job_id"] == gen.job_id and sidecar["asset_ids"] == gen.asset_ids


def test_mimebundle_has_text_image_and_provenance(setup):
    sb, client, model = setup
    gen = client.generate(model, "bundle", numOutputs=2).wait(timeout=30)
    data, meta = gen._repr_mimebundle_()
    assert gen.job_id in data["text/plain"]
    image_mime = next(k for k in data if k.startswith("image/"))
    assert max(meta[image_mime]["width"], meta[image_mime]["height"]) <= 2 * 512 + 4
    assert meta["scenario_nb"]["job_id"] == gen.job_id and meta["scenario_nb"]["prompt"] == "bundle"


def test_adaptive_polls_fewer_than_a_fixed_beat(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=2.0, job_jitter=0.2)
    try:
        client.generate(model, "teach the poller").wait(timeout=30)  # learn this model's duration
        start = len(sb.requests)
        handles = [client.generate(model, f"learned {i}") for i in range(8)]
        wait_all(handles, timeout=30)
        polls = [r for r in sb.requests[start:] if r["method"] == "GET" and "/jobs/" in r["path"]]
        assert len(polls) / 8 <= 2.5, "more job polls than a 1 s fixed beat would make"
    finally:
        client.close()
        sb.stop()
