"""The engine (send once, follow, store, record) and live Generation handles, against the real sandbox."""

from __future__ import annotations

import json
import threading
import time

import pytest
from PIL import Image

import scenario_nb
from scenario_nb import JobFailedError, JobTimeoutError, ScenarioClient, wait_all
from scenario_nb import sandbox as sandbox_mod

from conftest import SUITE_KEY as KEY, SUITE_SECRET as SECRET  # noqa: E402 (scanned for in every exception)
from conftest import SteppedClock, ctrl_c_at


def make(tmp_path, client_options=None, **options):
    sb = sandbox_mod.start(api_key=KEY, api_secret=SECRET, **options)
    client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path, **(client_options or {}))
    model = next(m for m in client.models(public=True) if client.model(m.id).input("numOutputs") is not None
                 and client.model(m.id).runnable)
    return sb, client, model.id


@pytest.fixture
def made(tmp_path):
    """`made(**sandbox_options)`: a sandbox, a client and a model, all stopped after the test."""
    started = []

    def make_one(**options):
        sb, client, model = make(tmp_path, **options)
        started.append((sb, client))
        return sb, client, model
    yield make_one
    for sb, client in started:
        client.close()
        sb.stop()


@pytest.fixture
def setup(tmp_path):
    sb, client, model = make(tmp_path, job_seconds=0.4, job_jitter=0.3, seed=3)
    yield sb, client, model
    client.close()
    sb.stop()


def on_one_clock(made, **options):
    """`made(**options)` with the engine and the sandbox on one `SteppedClock` (returned last): what is asked
    when is the scheduler's doing alone, whatever the machine's load, and no sandbox time is slept through."""
    clock = SteppedClock()
    sb, client, model = made(clock=clock.time, client_options={"clock": clock}, **options)
    return sb, client, model, clock


def finish(clock: SteppedClock, *handles):
    """Run the engine on `clock` until every handle is done; returns the handles."""
    clock.run_until(lambda: all(h.done for h in handles))
    return handles


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
    assert len(sb.cdn_requests) == sum(len(h.asset_ids) for h in handles), "an output was fetched twice"
    assert peak - before <= 12 + 2, "a thread per job?"  # 2 polling, 6 downloading, 4 sending, slack
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


def test_cancel_refused_the_job_finishes_and_its_images_arrive(made):
    """The real API refuses to cancel generation jobs (contract §6.5): say so, keep following, deliver."""
    sb, client, model = made(job_seconds=2.0)
    gen = client.generate(model, "to be canceled")
    time.sleep(0.3)
    assert gen.cancel() == "refused"
    assert "will finish and be charged" in gen.note and "still arrive" in gen.note
    assert gen.wait(timeout=30).ok and gen.images and gen.files[0].is_file()
    assert client.get_job(gen.job_id)["status"] == "success"  # it ran on, as on the real API
    assert client.history.get(gen.job_id).status == "success"


def test_429_storm_all_complete_none_lost(made):
    sb, client, model = made(job_seconds=0.5, max_parallel_jobs=4)
    handles = [client.generate(model, f"storm {i}") for i in range(16)]
    assert any(h.status == "waiting" for h in handles) and client.waiting()
    wait_all(handles, timeout=120)
    assert all(h.ok for h in handles), [h.summary() for h in handles if not h.ok]
    assert sb.stats()["jobs_created"] == 16 and sb.stats()["rate_limited"]


def test_transient_errors_reach_the_engine_and_never_lose_a_job(made):
    """With no retries in the transport, every 5xx, dropped and malformed answer reaches the engine."""
    sb, client, model = made(job_seconds=1.0, seed=5, client_options={"max_retries": 0})
    handles = [client.generate(model, f"flaky {i}") for i in range(12)]
    assert all(h.job_id for h in handles)  # every request created its job before the faults start
    sb.set_faults(error_5xx=0.25, drop=0.15, malformed=0.1)
    wait_all(handles, timeout=120)
    assert all(h.ok and h.images for h in handles), [h.summary() for h in handles if not h.ok]
    assert sum(sb.stats()["faults"].values()) >= 5, "the faults never happened"


def test_wait_timeout_names_the_job_and_it_lives_on(made):
    sb, client, model = made(job_seconds=1.5)
    gen = client.generate(model, "patience")
    with pytest.raises(JobTimeoutError, match=gen.job_id):
        gen.wait(timeout=0.2)
    assert gen.wait(timeout=30).ok


def test_job_timeout_is_not_the_end(made):
    sb, client, model = made(job_seconds=3.0)
    client.set_polling(job_timeout=0.5)
    gen = client.generate(model, "too slow")
    with pytest.raises(JobTimeoutError, match=gen.job_id) as info:
        gen.wait(timeout=30)
    assert "still running on the server" in str(info.value)
    assert client.history.get(gen.job_id).status not in ("failure", "success")  # in flight, not failed
    client.set_polling(job_timeout=60)
    again = client.job(gen.job_id)
    assert again is gen and again.wait(timeout=30).ok and gen.images  # the same handle, taken back
    assert client.history.get(gen.job_id).status == "success"


def test_interrupted_wait_leaves_the_job_running_and_reattachable(made, tmp_path):
    sb, client, model = made(job_seconds=1.0)
    sb.inject("hold", path="/jobs/", method="GET")  # the first poll's answer: the job can't end before Ctrl-C
    gen = client.generate(model, "interrupt me")
    with pytest.raises(KeyboardInterrupt), ctrl_c_at(lambda: sb.wait_held("GET", f"/jobs/{gen.job_id}")):
        gen.wait(timeout=30)
    assert not gen.done and gen.job_id in sb.jobs
    sb.release()
    other = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
    again = other.job(gen.job_id).wait(timeout=30)
    assert again.ok and again.images and again.prompt == "interrupt me"
    other.close()


def test_callbacks_run_on_the_engine_thread(setup):
    sb, client, model = setup
    seen = []
    gen = client.generate(model, "callback")
    gen.on_update(lambda g: seen.append((threading.current_thread().name, g.status)))
    gen.wait(timeout=30)
    time.sleep(0.1)
    assert any(name.startswith("scenario-engine") for name, _ in seen)
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


def test_adaptive_polls_fewer_than_a_fixed_beat(made):
    sb, client, model, clock = on_one_clock(made, job_seconds=2.0, job_jitter=0.2)
    finish(clock, client.generate(model, "teach the poller"))  # learn this model's duration
    start = len(sb.requests)
    handles = finish(clock, *[client.generate(model, f"learned {i}") for i in range(8)])
    assert all(h.ok for h in handles)
    polls = [r for r in sb.requests[start:] if r["method"] == "GET" and "/jobs/" in r["path"]]
    assert len(polls) / 8 <= 2.5, "more job polls than a 1 s fixed beat would make"


def test_a_batch_is_sent_side_by_side_and_every_request_is_answered(setup, tmp_path):
    sb, client, model = setup
    prompts = [f"barrel {i}" for i in range(24)]
    handles = client.generate_many(model, prompts, seed=4)
    assert [h.prompt for h in handles] == prompts and all(h.job_id for h in handles)
    assert sb.stats()["jobs_created"] == 24 and client.history.count() == 24
    wait_all(handles, timeout=60)
    assert all(h.ok and h.images for h in handles)
    blocked = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path / "b", history_path=tmp_path / "file" / "h.sqlite")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(scenario_nb.StorageError):
        blocked.generate_many(model, prompts)
    assert sb.stats()["jobs_created"] == 24  # a batch that cannot be recorded sends nothing


def _polls_of(sb, handle) -> list:
    return [r["time"] for r in sb.requests if r["method"] == "GET" and r["path"].endswith(f"/jobs/{handle.job_id}")]


def _parse(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_cold_batch_is_probed_by_a_few_scouts_and_every_job_is_seen(made):
    """A first batch on a model (no duration known, no history): a few jobs probe for all the others, so the
    batch costs far fewer polls than each job probing on its own, and every job still completes."""
    sb, client, model, clock = on_one_clock(made, job_seconds=2.5, job_jitter=0.0)
    handles = finish(clock, *client.generate_many(model, [f"cold {i}" for i in range(16)]))
    assert all(h.ok and h.images for h in handles), [h.summary() for h in handles if not h.ok]
    polls = [len(_polls_of(sb, h)) for h in handles]
    assert min(polls) >= 1 and sum(polls) / len(polls) <= 2.5, polls  # each probing alone: about 5 per job
    assert sorted(polls)[-3] <= 2, polls  # at most two probed (the scouts); the rest were told when to ask


def test_scouts_that_fail_leave_no_sibling_behind(made):
    """The cohort's scouts fail half-way: every sibling still completes (taken over, or at the slow fallback)."""
    sb, client, model, clock = on_one_clock(made, job_seconds=2.0, job_jitter=0.0)
    sb.inject("job_failure", count=2)
    scouts = [client.generate(model, f"scout {i}") for i in range(2)]  # sent first: the cohort's scouts
    followers = client.generate_many(model, [f"follower {i}" for i in range(6)])
    finish(clock, *scouts, *followers)
    assert all(isinstance(s.exception, JobFailedError) for s in scouts)
    assert all(f.ok and f.images for f in followers), [f.summary() for f in followers if not f.ok]


def test_scouts_that_end_early_hand_over_at_once(made):
    """Scouts canceled right after sending: siblings take over at once, so they are asked while they still
    run, not only at the slow fallback after their end."""
    sb, client, model, clock = on_one_clock(made, job_seconds=2.5, job_jitter=0.0, cancellable_types=("custom",))
    scouts = [client.generate(model, f"scout {i}") for i in range(2)]  # sent first: the cohort's scouts
    followers = client.generate_many(model, [f"follower {i}" for i in range(6)])
    assert [s.cancel() for s in scouts] == ["requested", "requested"]
    finish(clock, *scouts, *followers)
    assert [s.status for s in scouts] == ["canceled", "canceled"]
    assert all(f.ok and f.images for f in followers), [f.summary() for f in followers if not f.ok]
    asked_early = [f for f in followers if min(_polls_of(sb, f)) < _success_time(f)]
    assert asked_early, "no sibling took over from the scouts"


def _success_time(handle) -> float:
    return min(_parse(h["date"]) for h in handle.status_history if h["status"] == "success")


def test_a_job_seen_finalizing_is_asked_when_finalizing_usually_ends(made):
    """How long this model's jobs take to finalize is learned from their status history: a job seen
    finalizing (or about to) is asked once it should be done, not again and again at the floor."""
    sb, client, model, clock = on_one_clock(made, job_seconds=3.0, job_jitter=0.0)
    client.set_polling(floor=0.1)
    teach, = finish(clock, client.generate(model, "teach: 3 s, 0.3 s of it finalizing"))
    assert teach.ok
    sb.state.options["job_seconds"] = 4.0  # slower than learned: seen in progress, then finalizing
    gen, = finish(clock, client.generate(model, "slower than the last"))
    assert gen.ok and gen.images
    dates = {h["status"]: _parse(h["date"]) for h in gen.status_history}
    finalizing = [t for t in _polls_of(sb, gen) if dates["finalizing"] <= t < dates["success"]]
    assert len(finalizing) <= 1, f"asked {len(finalizing)} times while it finalized"


def test_a_cold_cohort_is_asked_after_each_job_ends_not_before(made):
    """A follower is woken by its scouts' success when, by their duration, it ends: counted from when the
    server created it (its creation answer's arrival), not from when it was sent. Counted from the sending,
    a request that waited at the server before its job was created is asked before its end, then a floor
    later: in a large batch, the last ones seen that late."""
    sb, client, model = made(job_seconds=2.0, job_jitter=0.0)
    sb.inject("slow", count=8, method="POST", seconds=0.5, after_create=False)  # created 0.5 s after sending
    handles = client.generate_many(model, [f"created late {i}" for i in range(8)])
    wait_all(handles, timeout=60)
    assert all(h.ok and h.images for h in handles), [h.summary() for h in handles if not h.ok]
    asked_early = [h for h in handles if min(_polls_of(sb, h)) < _success_time(h)]
    assert len(asked_early) <= 2, f"{len(asked_early)} asked before their end (2 scouts probe by design)"


def test_a_cold_cohorts_scouts_take_turns_while_their_jobs_finalize(made):
    """While a cold cohort's scouts finalize for a time nobody knows yet, they ask in turn, half a floor apart,
    not each at its own floor in whatever step they fell into: the first success is seen at most half a
    floor after it comes (the other half of a floor, in the benchmark's cold row, was 0.13-0.25 s late)."""
    sb, client, model, clock = on_one_clock(made, job_seconds=8.0, job_jitter=0.0)  # 0.8 s of finalizing
    floor = client.polling["floor"]
    first = client.generate(model, "scout 1")
    clock.run_for(floor / 2)  # scouts start half a floor out of step: sent half a floor later, back in step
    second = client.generate(model, "scout 2")
    finish(clock, first, second)
    assert first.ok and second.ok, [first.summary(), second.summary()]
    asks = {h: _polls_of(sb, h) for h in (first, second)}
    both = max(min(t for t in asks[h] if t >= _phase_time(h, "finalizing")) for h in asks)  # each saw it
    seen = min(t for h in asks for t in asks[h] if t >= _success_time(h))
    turns = sorted(t for h in asks for t in asks[h] if both <= t < seen)
    gaps = [round(b - a, 3) for a, b in zip(turns, turns[1:], strict=False)]
    assert len(turns) >= 2 and min(gaps) >= 0.35 * floor, f"asks {gaps} s apart while the scouts finalized"


def _phase_time(handle, status: str) -> float:
    return min(_parse(h["date"]) for h in handle.status_history if h["status"] == status)


def test_one_job_ending_early_does_not_make_its_siblings_ask_early(made):
    """Once a model's duration is known, a job that ended early (jitter) is no reason to ask every sibling
    at once: each is asked when its own prediction says, so a warm batch (16 running at a time, as in a
    capped account) costs few polls per job. Asking every sibling at the early one's end made ~1.8 a job."""
    sb, client, model = made(job_seconds=2.0, job_jitter=0.6, seed=11, max_parallel_jobs=16)
    for i in range(4):  # learn the model's duration
        assert client.generate(model, f"teach {i}").wait(timeout=30).ok
    handles = client.generate_many(model, [f"sibling {i}" for i in range(64)])
    wait_all(handles, timeout=60)
    assert all(h.ok for h in handles)
    polls = sum(len(_polls_of(sb, h)) for h in handles)
    assert polls <= 1.6 * len(handles), f"{polls / len(handles):.2f} polls per job"
