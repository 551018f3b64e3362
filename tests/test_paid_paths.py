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

from conftest import SUITE_KEY, SUITE_SECRET, reset_session


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


def job_polls(sb, job_id: str) -> list:
    return [r["time"] for r in sb.requests if r["method"] == "GET" and r["path"] == f"/v1/jobs/{job_id}"]


def wait_until(condition, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout:g} s")


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
    wait_until(lambda: first.done, what="the lost request ending unknown")
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
    assert later.ok and later.job_id == next(iter(env.jobs))
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
    sent = received(tsb, method, fragment, dry_run=False)
    expected = {"model": 1, "caption": 5, "upload": 5}[step]
    if step == "model":  # the listing of models also matches the fragment as a GET; only POSTs count here
        sent = [r for r in sent if r["path"] == "/v1/models"]
    assert len(sent) - before == expected, f"a {step} request was sent again"
    assert isinstance(failed, (APIConnectionError, ServerError)), failed
    assert tsb.stats()["trainings_started"] == 0 and not received(tsb, "PUT", "/train", dry_run=False)
    for row in tclient.history.trainings():
        assert row.status == "not-started" and row.error
    if step != "model":
        model_id = tclient.history.trainings()[0].model_id
        assert received(tsb, "DELETE", f"/v1/models/{model_id}")
