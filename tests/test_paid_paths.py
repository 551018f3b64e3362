"""The paid paths, each guarded against one slip that no other test catches: a lost answer paid for again, a POST
or PUT re-sent, a training started twice, a batch's followers left asleep, an older history unread, a job adopted by
the wrong request, a secret in a repr, a Retry-After not waited out, and the answers lost on the way to a training.

Every check is by effect: the requests the sandbox received and the jobs and trainings it made, the rows in the
history, the files written. Sandboxes here are fast (short jobs and trainings), and no test leans on another.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests
from IPython.utils.capture import capture_output
from PIL import Image

import scenario_nb
from scenario_nb import (APIConnectionError, ScenarioClient, ScenarioError, ServerError, Training,
                         TrainingFailedError)
from scenario_nb import sandbox as sandbox_mod
from scenario_nb._history import History
from scenario_nb._http import Credentials

from conftest import SUITE_KEY, SUITE_SECRET, reset_session, secrets_in, until


# -- Helpers ---------------------------------------------------------------------------------------------------

def start_sandbox(**options):
    options = {"job_seconds": 0.3, "seed": 3, "api_key": SUITE_KEY, "api_secret": SUITE_SECRET, **options}
    return sandbox_mod.start(**options)


def new_client(sb, home) -> ScenarioClient:
    return ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=home)


def received(sb, method: str, fragment: str, *, dry_run=None) -> list:
    """The requests the sandbox received with this method and path fragment (only real ones, or only dry runs)."""
    return [r for r in sb.requests if r["method"] == method and fragment in r["path"] and
            (dry_run is None or (r["query"].get("dryRun") == "true") == dry_run)]


def generation_jobs(sb) -> list:
    """The sandbox's generation jobs in the order they were made (its demo training has a job too)."""
    return [job_id for job_id, job in sb.jobs.items() if not job.get("training")]


def job_polls(sb, job_id: str) -> list:
    return [r["time"] for r in sb.requests if r["method"] == "GET" and r["path"] == f"/v1/jobs/{job_id}"]


def runnable_model(client, with_input: str = "numOutputs"):
    for m in client.models(public=True):
        full = client.model(m.id)
        if full.runnable and full.input(with_input) is not None:
            return full
    raise AssertionError(f"no sandbox model with {with_input}")


def image_folder(folder, count: int = 5):
    """Five distinct PNGs, as small as a training takes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (1024, 1024), (40 * i, 120, 200 - 30 * i)).save(folder / f"img-{i}.png")
    return folder


def outcome(call):
    """What the call raised (a ScenarioError), else its result."""
    try:
        return call()
    except ScenarioError as exc:
        return exc


def run_cell(ip, cell: str):
    with capture_output() as out:
        ip.run_cell(cell)
    return out


# -- a. A re-run of a request whose outcome is unknown pays nothing -------------------------------------------------

def test_rerunning_a_cell_whose_answer_was_lost_pays_nothing_in_this_kernel_or_the_next(ip, env):
    """The POST was sent and its answer lost, and the job does not show up in `GET /jobs` before the search gives
    up: the request ends 'unknown' (maybe paid). Re-running the cell in the same kernel, and in a new session on
    the same home, sends no second POST; once the server lists the job, the new session adopts it."""
    env.state.options["list_lag"] = 120.0  # the job stays out of GET /jobs: its outcome stays unknown
    scenario_nb.client().set_polling(search_seconds=0.5)
    env.inject("drop", after_create=True, path="/generate/custom")
    run_cell(ip, "%%scenario Gemini --no-wait -o first\na lantern whose answer was lost")
    first = ip.user_ns["first"]
    until(lambda: first.done, what="the lost request ending unknown")
    row = scenario_nb.client().history.get_request(first.request_id)
    assert row.status == "unknown" and row.job_id is None
    assert env.stats()["jobs_created"] == 1 and env.generate_posts == 1

    run_cell(ip, "%%scenario Gemini --no-wait -o again\na lantern whose answer was lost")
    assert env.generate_posts == 1 and env.stats()["jobs_created"] == 1, "the re-run paid again"

    reset_session()  # a new kernel on the same home
    run_cell(ip, "%%scenario Gemini --no-wait -o later\na lantern whose answer was lost")
    assert env.generate_posts == 1 and env.stats()["jobs_created"] == 1, "the next kernel's re-run paid again"
    env.state.options["list_lag"] = 0.0  # the server lists the job at last: it is adopted, not paid again
    later = ip.user_ns["later"].wait(timeout=60)
    assert later.ok and later.job_id == generation_jobs(env)[0]
    assert scenario_nb.client().history.get(later.job_id).status == "success"
    assert env.generate_posts == 1 and env.stats()["jobs_created"] == 1


# -- b. A POST or PUT is never re-sent once it may have reached the server ------------------------------------------

def test_a_post_or_put_whose_connection_dropped_is_sent_once(sb, client):
    """A dropped connection after the request left: the transport raises, it never sends the request again (an
    upload, an edit, a generation, a workflow run: each arrives once)."""
    sb.inject("drop", method="POST", path="/assets")
    failed = outcome(lambda: client.upload_image(Image.new("RGB", (64, 64), (9, 99, 199)), name="dropped.png"))
    assert len(received(sb, "POST", "/v1/assets")) == 1, "the upload was sent again"
    assert isinstance(failed, APIConnectionError)

    asset_id = client.upload_image(Image.new("RGB", (64, 64), (1, 2, 3)), name="kept.png")
    sb.inject("drop", method="PUT", path="/assets")
    failed = outcome(lambda: client._http.request("PUT", f"/assets/{asset_id}", json_body={"description": "x"}))
    assert len(received(sb, "PUT", f"/v1/assets/{asset_id}")) == 1, "the edit was sent again"
    assert isinstance(failed, APIConnectionError)

    client.set_polling(search_seconds=0.3)
    for after_create in (False, True):
        sb.inject("drop", after_create=after_create, path="/generate/custom")
        before = sb.generate_posts
        client.generate(runnable_model(client), f"dropped, after create: {after_create}")
        assert sb.generate_posts == before + 1, "a generation POST was sent again"

    ready = next(w for w in client.workflows() if w.get("status") == "ready")
    inputs = {i.name: "a knight" for i in client.workflow(ready["id"]).inputs if i.always_required and
              i.type == "string"}
    sb.inject("drop", after_create=True, method="PUT", path="/run")
    client.run_workflow(ready["id"], **inputs)
    assert len(received(sb, "PUT", "/run", dry_run=False)) == 1, "a workflow run was sent again"


# -- c, i. Starting a training, and the requests before it, when the answer is lost -----------------------------------

TRAIN_SECONDS = 1.5


@pytest.fixture
def tsb():
    with start_sandbox(train_seconds=TRAIN_SECONDS, max_parallel_trainings=2) as server:
        yield server


@pytest.fixture
def tclient(tsb, tmp_path):
    c = new_client(tsb, tmp_path / "home")
    c.set_polling(floor=0.1)
    yield c
    c.close()


@pytest.mark.parametrize("kind", ["drop", "error_5xx", "malformed"])
def test_a_training_whose_start_answer_was_lost_is_followed_and_started_once(tsb, tclient, tmp_path, kind):
    """`PUT /models/{id}/train` started the training, then its answer was lost (cut, 502, or not JSON): it is never
    sent again, the training is followed to its end from the model's status, and the history has it."""
    tsb.inject(kind, after_create=True, method="PUT", path="/train", dry_run=False)
    training = outcome(lambda: tclient.train("Lost Start", image_folder(tmp_path / "set"), captions=None))
    assert len(received(tsb, "PUT", "/train", dry_run=False)) == 1, "the training was started again"
    assert isinstance(training, Training), training
    training.wait(60)
    assert training.ok and training.status == "trained"
    assert tsb.stats()["trainings_started"] == 1 and len(received(tsb, "PUT", "/train", dry_run=False)) == 1
    assert tclient.history.training(training.model_id).status == "trained"


def test_a_training_whose_start_never_arrived_is_followed_and_called_not_started(tsb, tclient, tmp_path):
    """The connection dropped before the server acted: not sent again; the model's status proves nothing started."""
    tsb.inject("drop", method="PUT", path="/train", dry_run=False)
    training = tclient.train("Never Started", image_folder(tmp_path / "set"), captions=None)
    assert len(received(tsb, "PUT", "/train", dry_run=False)) == 1, "the training start was sent again"
    with pytest.raises(TrainingFailedError, match="never started"):
        training.wait(30)
    assert training.status == "not-started" and tsb.stats()["trainings_started"] == 0
    assert tclient.history.training(training.model_id).status == "not-started"


@pytest.mark.parametrize("kind", ["drop", "malformed"])
@pytest.mark.parametrize("step, method, fragment", [
    ("model", "POST", "/v1/models"),
    ("caption", "POST", "/generate/caption"),
    ("upload", "POST", "/training-images"),
])
def test_an_answer_lost_before_the_training_starts_is_sent_once_and_starts_nothing(tsb, tclient, tmp_path, kind,
                                                                                    step, method, fragment):
    """The model's creation, a caption (paid) or an upload did its work and then its answer was lost: that request
    is not sent again, the training is never started, and whatever the history holds of it says it never started
    (the model itself, when the client knew it, removed)."""
    folder = image_folder(tmp_path / "set")
    tsb.inject(kind, after_create=True, method=method, path=fragment, dry_run=False)
    before = len(received(tsb, method, fragment, dry_run=False))
    failed = outcome(lambda: tclient.train(f"Lost {step} {kind}", folder, captions="auto"))
    sent = received(tsb, method, fragment, dry_run=False)[before:]
    if step == "model":  # the listing of models also matches the fragment as a GET; only POSTs count here
        sent = [r for r in sent if r["path"] == "/v1/models"]
    bodies = [r["body_sha256"] for r in sent]
    # One request per image at most (the failure may stop those not yet sent), and none of them twice.
    assert 1 <= len(sent) <= {"model": 1, "caption": 5, "upload": 5}[step], f"{len(sent)} {step} requests"
    assert len(set(bodies)) == len(bodies), f"a {step} request was sent again"
    assert isinstance(failed, (APIConnectionError, ServerError)), failed
    assert tsb.stats()["trainings_started"] == 0 and not received(tsb, "PUT", "/train", dry_run=False)
    for row in tclient.history.trainings():
        assert row.status == "not-started" and row.error
    if step != "model":
        model_id = tclient.history.trainings()[0].model_id
        assert received(tsb, "DELETE", f"/v1/models/{model_id}")


@pytest.mark.xfail(strict=True, reason="captions are paid but not in the ledger: a re-run of train() captions again")
def test_rerunning_a_training_whose_caption_answer_was_lost_pays_no_caption_twice(tsb, tclient, tmp_path):
    """The captions were made and charged, one answer was lost, and the training never started. Running the same
    training again must not pay for the same captions again (they are neither recorded nor looked for today)."""
    folder = image_folder(tmp_path / "set")
    tsb.inject("drop", after_create=True, method="POST", path="/generate/caption", dry_run=False)
    outcome(lambda: tclient.train("Captioned Twice", folder, captions="auto"))
    assert len(received(tsb, "POST", "/generate/caption", dry_run=False)) == 5
    tclient.train("Captioned Twice", folder, captions="auto").wait(60)
    assert len(received(tsb, "POST", "/generate/caption", dry_run=False)) == 5, "the captions were paid twice"


# -- d. A batch's followers are woken by the first success ----------------------------------------------------------

def test_a_cold_batchs_followers_are_asked_as_soon_as_a_scout_sees_success(tmp_path):
    """Six jobs of a model whose duration is unknown: two scouts probe, the four followers wait for them. The jobs
    end before anyone asks (the first ask is a floor of 2 s away), so the scouts' first answer is a success, and
    that success must wake the followers at once, not leave them to their own check at the ceiling (5 s later)."""
    with start_sandbox(job_seconds=1.0) as sb:
        client = new_client(sb, tmp_path / "home")
        client.set_polling(floor=2.0)
        model = runnable_model(client)
        handles = client.generate_many(model, [f"a cold batch, tile {i}" for i in range(6)])
        for handle in handles:
            handle.wait(timeout=60)
        client.close()
    first_asks = sorted(job_polls(sb, h.job_id)[0] for h in handles)
    assert all(h.ok for h in handles) and sb.stats()["jobs_created"] == 6
    # Woken: every job is first asked within moments of the first (about 0.1 s); asleep: the followers ~3 s later.
    assert first_asks[-1] - first_asks[0] < 1.5, [round(t - first_asks[0], 2) for t in first_asks]


# -- e. A history written by schema 1 is read -------------------------------------------------------------------------

SCHEMA_1 = ("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, backend_url TEXT, model_id TEXT, base_model_id TEXT, "
            "prompt TEXT, inputs TEXT, request_key TEXT, cost REAL, status TEXT, progress REAL, asset_ids TEXT, "
            "files TEXT, error TEXT, hint TEXT, source TEXT, kind TEXT, created_at REAL, updated_at REAL, "
            "finished_at REAL)")


def test_a_schema_1_history_is_read_its_stored_outputs_shown_and_its_running_job_followed(sb, tmp_path):
    """A history as the first version wrote it (rows keyed by job id, no MIME types, user_version 1): its rows are
    listed, a finished job is shown from the stored PNG with no request, and a job still running is followed to
    its end and its outputs written."""
    home = tmp_path / "home"
    home.mkdir()
    model = runnable_model(new_client(sb, tmp_path / "other"))
    running = requests.post(f"{sb.url}/generate/custom/{model.id}", json={"prompt": "an old kernel's job"},
                            auth=(SUITE_KEY, SUITE_SECRET), timeout=10).json()["job"]["jobId"]
    now = time.time()
    conn = sqlite3.connect(home / "history.sqlite")
    conn.execute(SCHEMA_1)
    conn.execute("INSERT INTO jobs (job_id, backend_url, model_id, prompt, status, asset_ids, created_at, updated_at, "
                 "finished_at) VALUES ('job_old', ?, ?, 'an old success', 'success', '[\"asset_old\"]', ?, ?, ?)",
                 (sb.url, model.id, now - 60, now - 50, now - 50))
    conn.execute("INSERT INTO jobs (job_id, backend_url, model_id, prompt, status, asset_ids, created_at, "
                 "updated_at) VALUES (?, ?, ?, 'an old kernel''s job', 'queued', '[]', ?, ?)",
                 (running, sb.url, model.id, now, now))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    client = new_client(sb, home)
    stored = client.store.path_for("asset_old")
    stored.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(stored)

    assert {r.job_id for r in client.history.recent()} == {"job_old", running}
    asked = len(sb.requests)
    old = client.job("job_old")
    assert old.ok and [o.path for o in old.outputs] == [stored] and len(sb.requests) == asked

    followed = client.job(running).wait(timeout=30)
    assert followed.ok and followed.outputs and all(o.path.is_file() for o in followed.outputs)
    assert client.history.get(running).status == "success" and client.history.get(running).request_id == running
    client.close()


# -- f. A job already known is never adopted by another request ------------------------------------------------------

@pytest.mark.parametrize("case", ["same-client", "new-client", "history-deleted"])
def test_a_lost_answer_adopts_its_own_job_not_an_identical_one_already_known(tmp_path, case):
    """The same request sent twice on purpose (a plain `generate`, no re-use): the first job is known, the second's
    answer is lost. The search finds the first job in `GET /jobs` at once (the second shows up later) and must pass
    it over: the lost request adopts its own job, and both paid jobs stay in the history. Known to the client that
    followed it, or only to the history (a new client), or only to the client (its history deleted meanwhile)."""
    home = tmp_path / "home"
    with start_sandbox(job_seconds=0.3, list_lag=2.0) as sb:
        client = new_client(sb, home)
        model = runnable_model(client)
        first = client.generate(model, "twice on purpose", seed=7).wait(timeout=30)
        time.sleep(2.2)  # the first job is listed by now
        if case == "new-client":
            client.close()
            client = new_client(sb, home)
        elif case == "history-deleted":
            client.history.close()
            for name in ("history.sqlite", "history.sqlite-wal", "history.sqlite-shm"):
                (home / name).unlink(missing_ok=True)
        client.set_polling(search_seconds=15)  # a search that skips its own job too gives up in time
        sb.inject("drop", after_create=True, path="/generate/custom")
        second = client.generate(model, "twice on purpose", seed=7)
        outcome(lambda: second.wait(timeout=60))
        client.close()
        created = generation_jobs(sb)
    assert len(created) == 2 and sb.generate_posts == 2
    assert first.job_id == created[0] and second.job_id == created[1], "the lost answer adopted the wrong job"
    assert second.ok
    rows = {r.job_id: r.request_id for r in History(home / "history.sqlite").recent()}
    assert rows[second.job_id] == second.request_id
    if case != "history-deleted":
        assert rows.keys() == set(created) and rows[first.job_id] == first.request_id


# -- g. Credentials never show the secret -----------------------------------------------------------------------------

def test_credentials_repr_and_str_show_neither_the_key_nor_the_secret():
    """A notebook echoes whatever it is handed: the credentials show the key masked and the secret not at all."""
    credentials = Credentials(SUITE_KEY, SUITE_SECRET, "https://api.cloud.scenario.com/v1")
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        shown = secrets_in(text)  # the first characters of each secret shown: a failure never prints one whole
        masked = SUITE_SECRET[:6] not in text and SUITE_KEY[-2:] in text  # the key masked, the secret absent
        assert not shown and masked, f"the credentials show {shown}…"


# -- h. A 429's Retry-After is waited out before the request is sent again --------------------------------------------

def test_a_generation_refused_with_retry_after_is_not_sent_again_before_it(sb, client):
    """A 429 that asks for 2.5 s (longer than the client's own first backoff, about 1 s): the request waits here
    and is sent again no sooner than that, by the sandbox's own clock; then it is paid for once."""
    sb.inject("rate_limit", retry_after=2.5, path="/generate/custom")
    generation = client.generate(runnable_model(client), "a patient request").wait(timeout=30)
    refused = sb.stats()["rate_limited"]
    posts = [r["time"] for r in received(sb, "POST", "/generate/custom/")]
    assert len(refused) == 1 and refused[0]["retry_after"] == 2.5 and len(posts) == 2
    assert posts[1] - refused[0]["time"] >= 2.5 - 0.05, f"sent again after {posts[1] - refused[0]['time']:.2f} s"
    assert generation.ok and sb.stats()["jobs_created"] == 1


# -- Two backends in one home ------------------------------------------------------------------------------------

def test_two_backends_in_one_home_with_jobs_in_flight_keep_their_jobs_apart(tmp_path):
    """One history, two backends (a project and the sandbox, say), the same request in flight on both: each
    backend gets and charges its own job, nothing is reused across them, and a new client on one backend
    follows only that backend's unfinished job (the other's id means nothing there)."""
    home = tmp_path / "home"
    with start_sandbox(job_seconds=1.5, seed=31) as first, start_sandbox(job_seconds=1.5, seed=32) as second:
        a, b = new_client(first, home), new_client(second, home)
        model = runnable_model(a)
        on_a = a.generate(model, "the same crate, two backends", seed=5)
        on_b = b.generate(model, "the same crate, two backends", seed=5)  # identical, but another backend
        assert on_b.job_id and on_b.job_id != on_a.job_id
        assert first.stats()["jobs_created"] == second.stats()["jobs_created"] == 1
        a.close()  # kernel gone with the first backend's job in flight
        later = new_client(first, home)
        followed = later.recover()
        assert [h.job_id for h in followed] == [on_a.job_id]
        assert followed[0].wait(timeout=30).ok and on_b.wait(timeout=30).ok
        assert not [r for r in first.requests if on_b.job_id in r["path"]], "asked backend A for B's job"
        # Re-run safety asks each backend for its own earlier request: never the other backend's job.
        assert later.previous(model, on_a.inputs).job_id == on_a.job_id
        assert b.previous(model, on_b.inputs).job_id == on_b.job_id
        assert first.stats()["jobs_created"] == second.stats()["jobs_created"] == 1
        history = History(home / "history.sqlite")
        try:
            rows = {history.get(h.job_id).backend_id for h in (on_a, on_b)}
            assert len(rows) == 2 and all(history.get(h.job_id).status == "success" for h in (on_a, on_b))
        finally:
            history.close()
        for client in (later, b):
            client.close()
