"""The workbench's paid requests (the model, captions, uploads, the start of a training), each checked by effect:
the sandbox's counts of models made, trainings started and captions asked for, and the history's rows.
"""

from __future__ import annotations

import time

import pytest
from PIL import Image

from scenario_nb import ScenarioClient, ScenarioError, Training
from scenario_nb import sandbox as sandbox_mod

from conftest import SUITE_KEY, SUITE_SECRET, Clock

TRAIN_SECONDS = 2.0


def start_sandbox(**options):
    options = {"job_seconds": 0.3, "seed": 7, "api_key": SUITE_KEY, "api_secret": SUITE_SECRET,
               "train_seconds": TRAIN_SECONDS, "max_parallel_trainings": 2, **options}
    return sandbox_mod.start(**options)


def new_client(sb, home, **kwargs) -> ScenarioClient:
    client = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=home, **kwargs)
    client.set_polling(floor=0.1)
    return client


def image_folder(folder, count: int = 5, hue: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (1024, 1024), ((40 * i + hue) % 255, 120, 200 - 30 * i)).save(folder / f"img-{i}.png")
    return folder


def received(sb, method: str, fragment: str, *, dry_run=None) -> list:
    return [r for r in sb.requests if r["method"] == method and fragment in r["path"] and
            (dry_run is None or (r["query"].get("dryRun") == "true") == dry_run)]


def models_made(sb) -> int:
    return len([r for r in sb.requests if r["method"] == "POST" and r["path"] == "/v1/models"])


def outcome(call):
    try:
        return call()
    except ScenarioError as exc:
        return exc


# -- Item 1: a start that may have reached the server is never "not started" --------------------------------------

def test_a_start_answered_after_the_timeout_is_followed_to_its_end(tmp_path):
    """The server takes longer than the client's read timeout to answer `PUT /train` (it starts the training only
    after 2.5 s): the answer is lost, the row is `unknown`, the start is not sent again, and the model's status,
    once it shows the training, is followed to `trained`. Never "not started", and the model is kept."""
    with start_sandbox(new_after_start=0.5) as sb:
        client = new_client(sb, tmp_path / "home", timeout=(5.0, 1.0))
        sb.inject("slow", seconds=2.5, method="PUT", path="/train", dry_run=False)
        training = outcome(lambda: client.train("Slow Start", image_folder(tmp_path / "set"), captions=None))
        assert isinstance(training, Training), training
        assert training.status == "unknown"
        assert client.history.training(training.model_id).status == "unknown"
        training.wait(60)
        assert training.status == "trained"
        assert len(received(sb, "PUT", "/train", dry_run=False)) == 1, "the start was sent again"
        assert sb.stats()["trainings_started"] == 1 and models_made(sb) == 1
        assert client.history.training(training.model_id).status == "trained"
        assert not received(sb, "DELETE", "/v1/models/")
        client.close()


def test_a_model_still_new_right_after_its_start_is_training(tmp_path):
    """The start was answered (a job, a cost), but the model reads `new` for a moment after: the training is
    followed as started, to `trained`, never called "not started"."""
    with start_sandbox(new_after_start=1.0) as sb:
        client = new_client(sb, tmp_path / "home")
        training = client.train("Shy Start", image_folder(tmp_path / "set"), captions=None)
        assert training.status == "training" and training.job_id
        training.wait(60)
        assert training.ok and sb.stats()["trainings_started"] == 1
        assert client.history.training(training.model_id).status == "trained"
        client.close()


def test_a_start_lost_before_the_server_acted_is_not_started_only_after_the_grace(tmp_path):
    """The start never reached the server: the model stays `new` with no job. Only after the grace is that
    proof; before it the row says `unknown`; and the model is kept (nothing is deleted once a start was sent)."""
    with start_sandbox() as sb:
        client = new_client(sb, tmp_path / "home")
        client.set_polling(start_grace=3.0)
        sb.inject("drop", method="PUT", path="/train", dry_run=False)
        training = client.train("Lost Start", image_folder(tmp_path / "set"), captions=None)
        assert training.status == "unknown"
        with pytest.raises(ScenarioError, match="never started"):
            training.wait(30)
        assert training.finished_at - training.start_sent_at >= 3.0
        assert client.history.training(training.model_id).status == "not-started"
        assert sb.stats()["trainings_started"] == 0 and not received(sb, "DELETE", "/v1/models/")
        client.close()


# -- Item 4: a 429 at the start keeps the model and its captioned images; uploads retry ---------------------------

def test_a_start_refused_for_a_slot_waits_and_starts_when_one_frees_without_captioning_again(tmp_path):
    """One training slot, taken: the second training's start is refused with 429. Its model and its captioned,
    uploaded images stay; it shows as waiting (and is recorded so); when the first training ends it is started
    by the engine, once, and nothing is captioned or uploaded again."""
    clock = Clock(frozen=True)
    with start_sandbox(max_parallel_trainings=1, clock=clock) as sb:
        client = new_client(sb, tmp_path / "home")
        busy = client.train("Busy", image_folder(tmp_path / "busy", hue=90), captions=None)
        waits = outcome(lambda: client.train("Waits", image_folder(tmp_path / "set"), captions="auto"))
        assert isinstance(waits, Training), waits
        assert waits.status == "waiting" and "slot" in waits.stage_words()
        assert client.history.training(waits.model_id).status == "waiting"
        captions = len(received(sb, "POST", "/generate/caption", dry_run=False))
        uploads = len(received(sb, "POST", "/training-images"))
        assert captions == 5 and uploads == 10 and models_made(sb) == 2 and sb.stats()["trainings_started"] == 1
        assert not received(sb, "DELETE", "/v1/models/")
        clock.now += TRAIN_SECONDS + 1  # the first one ends: its slot frees
        assert busy.wait(30).ok
        deadline = time.time() + 30
        while sb.stats()["trainings_started"] < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert sb.stats()["trainings_started"] == 2
        clock.now += TRAIN_SECONDS + 1
        assert waits.wait(30).ok
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == captions
        assert len(received(sb, "POST", "/training-images")) == uploads and models_made(sb) == 2
        assert client.history.training(waits.model_id).status == "trained"
        client.close()


def test_uploads_wait_out_429s_and_a_lost_answer_is_found_on_the_model(tmp_path):
    """Two uploads answered 429 are sent again after the wait; one whose answer was lost after the server stored
    the image (a 502) is found on the model and not sent again. The training starts, with five images."""
    with start_sandbox() as sb:
        client = new_client(sb, tmp_path / "home")
        sb.inject("rate_limit", count=2, method="POST", path="/training-images", retry_after=0.2)
        sb.inject("error_5xx", count=1, method="POST", path="/training-images", after_create=True)
        training = client.train("Patient Uploads", image_folder(tmp_path / "set"), captions=None)
        assert isinstance(training, Training) and training.wait(60).ok
        bodies = [r["body_sha256"] for r in received(sb, "POST", "/training-images")]
        assert len(bodies) == 7 and len(set(bodies)) == 5  # 5 images; the two refused ones sent again
        model = sb.state.models[training.model_id]
        assert len(model["trainingImages"]) == 5 and sb.stats()["trainings_started"] == 1
        client.close()


# -- Item 3: captions are recorded and reused -------------------------------------------------------------------------

def test_captioning_the_same_images_twice_pays_once_and_a_training_reuses_them(tmp_path):
    """`caption_images` twice on the same five images, then a training of them with captions="auto": five caption
    requests in all; the history holds each image's caption and cost; other settings (details) are paid anew."""
    with start_sandbox() as sb:
        client = new_client(sb, tmp_path / "home")
        folder = image_folder(tmp_path / "set")
        first = client.caption_images(folder)
        second = client.caption_images(folder)
        assert dict(first) == dict(second) and all(first.values())
        training = client.train("Reused Captions", folder, captions="auto")
        assert training.wait(60).ok and [i.caption for i in training.images] == list(first.values())
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 5
        rows = client.history.captions(client.backend_id)
        assert len(rows) == 5 and all(r.status == "done" and r.cost for r in rows)
        client.caption_images(folder, details_level="action+style")
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 10
        client.close()


def test_a_training_after_an_upload_failure_reuses_the_paid_captions(tmp_path):
    """Uploads that keep failing (500 on every try) stop the first attempt after the captions were paid; the
    second attempt captions nothing again."""
    with start_sandbox() as sb:
        client = new_client(sb, tmp_path / "home")
        folder = image_folder(tmp_path / "set")
        sb.inject("error_5xx", count=40, method="POST", path="/training-images")
        failed = outcome(lambda: client.train("Upload Trouble", folder, captions="auto"))
        assert isinstance(failed, ScenarioError), failed
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 5
        sb.state.injected.clear()
        training = client.train("Upload Trouble", folder, captions="auto")
        assert training.wait(60).ok
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 5
        client.close()


# -- Item 9: progress on either scale ------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1, 100])
def test_training_progress_reads_both_scales(tmp_path, scale):
    """The server reports 1 % of the training as 0.01 or as 1 (a 0..100 scale): either way the handle says 1 %, not
    done; 42 % reads 0.42 either way."""
    clock = Clock(frozen=True)
    with start_sandbox(train_seconds=100.0, progress_scale=scale, clock=clock) as sb:
        client = new_client(sb, tmp_path / "home")
        training = client.train("Scaled", image_folder(tmp_path / "set"), captions=None)
        clock.now += 45 + 0.55  # running-train from 45 s to 100 s: 1 % of it
        deadline = time.time() + 20
        while training.stage != "running-train" and time.time() < deadline:
            time.sleep(0.05)
        assert training.stage == "running-train" and not training.done
        assert training.progress == pytest.approx(0.01, abs=0.002), training.progress
        assert sb.state.models[training.model_id]["trainingProgress"]["progress"] == pytest.approx(0.01 * scale)
        clock.now += 0.41 * 55
        client.training(training.model_id)  # a fresh look
        deadline = time.time() + 20
        while training.progress < 0.3 and time.time() < deadline:
            time.sleep(0.05)
        assert training.progress == pytest.approx(0.42, abs=0.01) and not training.done
        client.close()


# -- Item 2: training is idempotent per backend and name ------------------------------------------------------------

def test_a_second_client_training_the_same_name_attaches_and_force_makes_a_second_model(tmp_path):
    """A second client on the same history (another kernel), then one with a history of its own (another
    machine), train the same name: both follow the first training; one model, one start, five captions. With
    force=True a second model is made on purpose."""
    clock = Clock(frozen=True)  # the first training runs until the clock is moved: the others find it in flight
    with start_sandbox(max_parallel_trainings=3, clock=clock) as sb:
        folder = image_folder(tmp_path / "set")
        first = new_client(sb, tmp_path / "home")
        training = first.train("Only Once", folder, captions="auto")
        second = new_client(sb, tmp_path / "home")
        again = second.train("Only Once", folder, captions="auto")
        elsewhere = new_client(sb, tmp_path / "other-home")
        there = elsewhere.train("Only Once", folder, captions="auto")
        assert again.model_id == there.model_id == training.model_id
        assert models_made(sb) == 1 and sb.stats()["trainings_started"] == 1
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 5
        clock.now += TRAIN_SECONDS + 1
        assert again.wait(60).ok and training.wait(60).ok
        rerun = first.train("Only Once", folder, captions="auto")  # a re-run after it ended: its result
        assert rerun.model_id == training.model_id and rerun.ok and models_made(sb) == 1
        forced = first.train("Only Once", folder, captions="auto", force=True)
        clock.now += TRAIN_SECONDS + 1
        assert forced.model_id != training.model_id and forced.wait(60).ok
        assert models_made(sb) == 2 and sb.stats()["trainings_started"] == 2
        for client in (first, second, elsewhere):
            client.close()


# -- Item 5: drafts ------------------------------------------------------------------------------------------------

def test_a_draft_is_listed_reused_by_train_and_removed_by_name(tmp_path):
    """A start answered 500 that proves, after the grace, never to have started leaves its model (a draft, never
    removed once a start may have been sent): `drafts()` lists it, a dry run reuses it and leaves nothing new,
    `train` reuses it with its uploaded images (none sent again), and `delete_draft` removes another by name."""
    with start_sandbox() as sb:
        client = new_client(sb, tmp_path / "home")
        folder = image_folder(tmp_path / "set")
        sb.inject("error_5xx", count=1, method="PUT", path="/train", dry_run=False)  # before the server acted
        stopped = outcome(lambda: client.train("Drafty", folder, captions=None))
        assert isinstance(stopped, Training) and stopped.status == "unknown"  # a 500: the start may have arrived
        client.set_polling(start_grace=0.5)
        with pytest.raises(ScenarioError, match="never started"):
            stopped.wait(30)
        drafts = client.drafts()
        assert [d.name for d in drafts] == ["Drafty"] and drafts[0].id == stopped.model_id
        estimate = client.train("Drafty", folder, captions=None, dry_run=True)
        assert estimate.creative_units > 0 and models_made(sb) == 1 and [d.id for d in client.drafts()] == [
            stopped.model_id]
        uploads = len(received(sb, "POST", "/training-images"))
        training = client.train("Drafty", folder, captions=None)
        assert training.model_id == stopped.model_id and training.wait(60).ok
        assert models_made(sb) == 1 and len(received(sb, "POST", "/training-images")) == uploads == 5
        assert client.drafts() == []
        sb.inject("drop", method="PUT", path="/train", dry_run=False)  # a second draft, removed by name
        other = client.train("Second Draft", image_folder(tmp_path / "other", hue=60), captions=None)
        with pytest.raises(ScenarioError):
            other.wait(30)
        removed = client.delete_draft("second draft")
        assert removed.id == other.model_id and other.model_id not in sb.state.models
        with pytest.raises(ScenarioError, match="no draft"):
            client.delete_draft("Drafty")  # trained: not a draft, never removed here
        client.close()


# -- Model creations and uploads have ledger rows of their own ------------------------------------------------------

def test_model_creations_and_uploads_are_ledger_rows_written_ahead_and_settled(tmp_path):
    """Ctrl-C while `POST /models` waits (the server made the model): its row is `unknown`, and the next training of
    the name finds the model (a draft), settles the row with its id and makes none again. An upload answered 502
    after the server stored it is found on the model: its row has the asset id. Every row was written before its
    request left (the history already held it when the sandbox saw the request)."""
    from conftest import ctrl_c_at
    with start_sandbox() as sb:
        client = new_client(sb, tmp_path / "home")
        folder = image_folder(tmp_path / "set")
        sb.inject("hold", method="POST", path="/v1/models", seconds=30)
        with pytest.raises(KeyboardInterrupt), ctrl_c_at(lambda: sb.wait_held("POST", "/v1/models")):
            client.train("Ledgered", folder, captions=None)
        seen = client.history.workbench(client.backend_id)
        assert [(r.kind, r.status, r.model_name) for r in seen] == [("model", "unknown", "Ledgered")]
        sb.release()
        sb.inject("error_5xx", count=1, method="POST", path="/training-images", after_create=True)
        training = client.train("Ledgered", folder, captions=None)
        assert models_made(sb) == 1 and training.wait(60).ok
        rows = client.history.workbench(client.backend_id)
        made = [r for r in rows if r.kind == "model"]
        assert [(r.status, r.model_id) for r in made] == [("success", training.model_id)]
        uploads = [r for r in rows if r.kind == "upload"]
        assert len(uploads) == 5 and all(r.status == "success" and r.model_id == training.model_id for r in uploads)
        assert sorted(a for r in uploads for a in r.asset_ids) == sorted(i.asset_id for i in training.images)
        assert len(received(sb, "POST", "/training-images")) == 5  # the 502'd one was found, not sent again
        assert all(r.sent_at <= min(q["time"] for q in received(sb, "POST", "/training-images")) + 1 for r in uploads)
        assert not client.history.unfinished(client.backend_id)  # never followed as jobs
        client.close()


def test_a_live_claim_on_a_name_holds_a_train_back_but_not_a_forced_one(tmp_path):
    """Another live process's `preparing` row for a name (its claim): `train` of that name waits behind it and sends
    nothing; `force=True` does not wait (a second model on purpose). Once the claim is gone the waiting train
    attaches to the training under way: two models in all, two starts, none more."""
    import os
    import socket
    import threading

    from scenario_nb._history import TrainingRecord
    with start_sandbox(max_parallel_trainings=3) as sb:
        client = new_client(sb, tmp_path / "home")
        folder = image_folder(tmp_path / "set")
        first = client.train("Held Name", folder, captions=None)
        now = time.time()
        other = TrainingRecord(model_id="claim_other", backend_id=client.backend_id, name="Held Name",
                               status="preparing", created_at=now, updated_at=now,
                               owner=f"{socket.gethostname()}:{os.getppid()}")  # alive: the test's parent
        assert client.history.claim_training(other) is None
        waited: list = []
        waiting = threading.Thread(target=lambda: waited.append(client.train("Held Name", folder, captions=None)))
        waiting.start()
        time.sleep(1.0)
        assert waiting.is_alive() and models_made(sb) == 1, "a train went ahead of another process's claim"
        made: list = []
        forcing = threading.Thread(target=lambda: made.append(client.train("Held Name", folder, captions=None,
                                                                            force=True)))
        forcing.start()
        forcing.join(30)
        client.history.forget_training("claim_other")  # (a forced train that waited is freed here)
        assert made and not forcing.is_alive(), "a forced train waited behind another process's claim"
        forced = made[0]
        assert forced.model_id != first.model_id and models_made(sb) == 2
        waiting.join(30)
        assert waited and waited[0].model_id in (first.model_id, forced.model_id)
        assert models_made(sb) == 2 and sb.stats()["trainings_started"] == 2
        client.close()
