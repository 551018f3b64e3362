"""Tests written to kill mutants that mutmut planted in `scenario_nb/_engine/_workbench.py` and that
tests/test_workbench.py let live (the run, the figures and the mutants that cannot be killed:
tests/mutants-equivalent.md).

In-process and fast: a `Workbench` with a real ledger and history, a fake transport that logs the requests it
gets, and a stand-in captioner; checked by effect: the requests sent, the rows the history holds, the table made.
"""

from __future__ import annotations

import io
import os
import socket
import sqlite3
import time

import pytest
from PIL import Image

from scenario_nb._engine._ledger import Ledger
from scenario_nb._engine._live import LiveRequests
from scenario_nb._engine._workbench import Workbench
from scenario_nb._errors import (APIConnectionError, BadRequestError, InputError, RateLimitError, ServerError,
                                StorageError)
from scenario_nb._history import TrainingRecord
from scenario_nb._local_images import LocalImage
from scenario_nb._training import Training, TrainingImage, TrainingPlan

from ledger_parts import BACKEND, URL

class Backoff:
    def __init__(self, events: list) -> None:
        self.asked: list = []
        self.retry_afters: list = []
        self.events = events

    def delay(self, attempt, retry_after=None) -> float:
        self.asked.append(attempt)
        self.retry_afters.append(retry_after)
        self.events.append(f"wait {attempt}")
        return 0.0


class FakeHttp:
    """Answers each request with the next scripted outcome (an exception is raised); logs (method, path)."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.params: list = []
        self.sent: list = []
        self.bodies: list = []
        self.events: list = []
        self.backoff = Backoff(self.events)

    def request(self, method, path, params=None, json_body=None):
        self.sent.append((method, path))
        self.params.append(params)
        self.bodies.append(json_body)
        self.events.append(method)
        outcome = self.outcomes.pop(0) if self.outcomes else {}
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def get(self, path, params=None, **query):
        return self.request("GET", path, params=params or query or None)


class FakeCaptioner:
    def __init__(self, price: float, texts: list, lost: list) -> None:
        self._price, self.texts, self.lost = price, texts, lost
        self.priced: list = []
        self.captioned: list = []

    def price(self, images, details_level):
        self.priced.append((list(images), details_level))
        return self._price

    def caption_all(self, images, details_level):
        self.captioned.append((list(images), details_level))
        return self.texts, self.lost


def a_workbench(http, ledger) -> Workbench:
    return Workbench(None, http, ledger, None, store=lambda: None)


def an_image(name: str) -> LocalImage:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return LocalImage(name, buf.getvalue(), "image/png", 8, 8)


# -- caption_images ---------------------------------------------------------------------------------------------

def test_captions_over_max_cost_are_refused_before_any_is_asked(ledger):
    wb = a_workbench(FakeHttp(), ledger)
    images = [an_image("a.png"), an_image("b.png")]
    wb._captioner = captioner = FakeCaptioner(2.0, ["x", "y"], [])
    with pytest.raises(InputError) as refused:
        wb.caption_images(images, "action", max_cost=1.5)
    assert str(refused.value) == ("refused: captioning 2 images is estimated at 2 CU, over max_cost 1.5; nothing "
                                  "was spent")
    assert captioner.priced == [(images, "action")] and captioner.captioned == []


def test_captions_at_exactly_max_cost_are_made(ledger):
    wb = a_workbench(FakeHttp(), ledger)
    images = [an_image("a.png")]
    wb._captioner = captioner = FakeCaptioner(2.0, ["x"], [])
    assert wb.caption_images(images, "detailed", max_cost=2.0) == {"a.png": "x"}
    assert captioner.priced == [(images, "detailed")] and captioner.captioned == [(images, "detailed")]


def test_captions_are_a_table_with_thumbnails_and_the_lost_ones(ledger):
    wb = a_workbench(FakeHttp(), ledger)
    images = [an_image("a.png"), an_image("b.png")]
    wb._captioner = captioner = FakeCaptioner(9.0, ["a cat", ""], ["b.png"])
    table = wb.caption_images(images, "action", max_cost=None)
    assert captioner.priced == []  # no limit: no price asked
    assert dict(table) == {"a.png": "a cat", "b.png": ""} and table.lost == ["b.png"]
    assert set(table._thumbnails) == {"a.png", "b.png"}
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in table._thumbnails.values())


def test_captions_missing_for_an_image_are_an_error_not_a_shorter_table(ledger):
    wb = a_workbench(FakeHttp(), ledger)
    wb._captioner = FakeCaptioner(0.0, ["only one"], [])
    with pytest.raises(ValueError):
        wb.caption_images([an_image("a.png"), an_image("b.png")], "action", max_cost=None)


# -- _abandon ---------------------------------------------------------------------------------------------------

def a_handle() -> Training:
    return Training(None, model_id="model_1", name="Cats", type="flux.1-lora", status="preparing")


@pytest.mark.parametrize("recorded", [False, True])
def test_an_abandoned_model_made_here_is_deleted_once(ledger, history, recorded):
    http = FakeHttp({})
    wb = a_workbench(http, ledger)
    handle = a_handle()
    handle._set(stage="uploading")
    assert wb._abandon(handle, InputError("refused"), recorded=recorded) is recorded
    assert http.sent == [("DELETE", "/models/model_1")] and http.backoff.asked == []
    row = history.training("model_1")
    if recorded:
        assert (row.status, row.stage, row.error) == ("not-started", "", "refused")
        assert (handle.status, handle.stage) == ("not-started", "") and handle.done
    else:
        assert row is None


def test_a_model_that_cannot_be_deleted_is_tried_twice_and_kept_as_a_draft_row(ledger, history):
    refused = ServerError("busy")
    http = FakeHttp(refused, refused)
    wb = a_workbench(http, ledger)
    handle = a_handle()
    assert wb._abandon(handle, KeyboardInterrupt(), recorded=False) is True
    assert http.sent == [("DELETE", "/models/model_1")] * 2
    assert http.events == ["DELETE", "wait 0", "DELETE"]  # waited once, between the two tries
    assert handle.note == (f"could not remove the untrained model model_1: {refused}; it is kept as a draft "
                           f"(%scenario models --drafts)")
    row = history.training("model_1")
    assert (row.status, row.error) == ("not-started", "interrupted")


def test_a_model_not_made_here_is_not_deleted(ledger, history):
    http = FakeHttp()
    wb = a_workbench(http, ledger)
    assert wb._abandon(a_handle(), ValueError("odd"), recorded=True, remove=False) is True
    assert http.sent == []
    assert history.training("model_1").error == "ValueError: odd"


# -- _upload, _uploaded -------------------------------------------------------------------------------------------

POST = ("POST", "/models/model_1/training-images")
GET = ("GET", "/models/model_1")


def upload_rows(history) -> list:
    return [r for r in history.workbench(BACKEND, "Cats") if r.kind == "upload"]


def on_model(*images) -> dict:
    return {"model": {"trainingImages": list(images)}}


@pytest.mark.parametrize("answer, asset_id", [
    ({"trainingImage": {"id": "asset_1"}, "creativeUnitsCost": 2}, "asset_1"),
    ({"trainingImage": [{"id": "asset_2"}], "creativeUnitsCost": 2}, "asset_2"),
    ({"trainingImage": [], "creativeUnitsCost": 2}, None),
])
def test_an_upload_is_a_row_written_ahead_and_settled_with_its_asset(ledger, history, answer, asset_id):
    http = FakeHttp(answer)
    image = an_image("a.png")
    assert a_workbench(http, ledger)._upload(a_handle(), image) == asset_id
    assert http.sent == [POST] and http.bodies == [{"name": "a.png", "data": image.data_url()}]
    [row] = upload_rows(history)
    assert (row.model_id, row.prompt, row.status, row.cost) == ("model_1", "training image a.png", "success", 2.0)
    assert row.asset_ids == ([asset_id] if asset_id else [])


def test_an_upload_refused_for_a_rate_waits_and_is_sent_again(ledger, history):
    http = FakeHttp(RateLimitError("slow down", retry_after=3.0), {"trainingImage": {"id": "asset_1"}})
    assert a_workbench(http, ledger)._upload(a_handle(), an_image("a.png")) == "asset_1"
    assert http.events == ["POST", "wait 0", "POST"] and http.backoff.retry_afters == [3.0]
    assert upload_rows(history)[0].status == "success"


def test_an_upload_refused_four_times_is_not_sent(ledger, history):
    refused = RateLimitError("slow down", retry_after=1.0)
    http = FakeHttp(*[refused] * 5)
    with pytest.raises(RateLimitError):
        a_workbench(http, ledger)._upload(a_handle(), an_image("a.png"))
    assert http.sent == [POST] * 4 and http.backoff.asked == [0, 1, 2]
    [row] = upload_rows(history)
    assert (row.status, row.error) == ("not-sent", "refused: slow down")


def test_a_lost_upload_found_on_the_model_is_not_sent_again(ledger, history):
    http = FakeHttp(ServerError("lost"), on_model({"name": "b.png", "id": "asset_8"}, "odd", {"name": "a.png"},
                                                   {"name": "a.png", "id": "asset_9"}))
    assert a_workbench(http, ledger)._upload(a_handle(), an_image("a.png")) == "asset_9"
    assert http.sent == [POST, GET]
    [row] = upload_rows(history)
    assert (row.status, row.asset_ids) == ("success", ["asset_9"])


def test_a_lost_upload_not_on_the_model_is_sent_again(ledger, history):
    http = FakeHttp(APIConnectionError("reset"), on_model({"name": "b.png", "id": "asset_8"}),
                    {"trainingImage": {"id": "asset_1"}})
    assert a_workbench(http, ledger)._upload(a_handle(), an_image("a.png")) == "asset_1"
    assert http.events == ["POST", "GET", "wait 0", "POST"] and http.backoff.retry_afters == [None]
    assert upload_rows(history)[0].asset_ids == ["asset_1"]


@pytest.mark.parametrize("readable, status", [(True, "not-sent"), (False, "unknown")])
def test_an_upload_lost_four_times_is_settled_by_what_the_model_shows(ledger, history, readable, status):
    lost = ServerError("lost")
    model = on_model() if readable else ServerError("model unreadable")
    http = FakeHttp(*[lost, model] * 4)
    with pytest.raises(ServerError):
        a_workbench(http, ledger)._upload(a_handle(), an_image("a.png"))
    assert http.sent == [POST, GET] * 4 and http.backoff.asked == [0, 1, 2]
    [row] = upload_rows(history)
    assert (row.status, row.error) == (status, str(lost))


def test_a_refused_upload_is_not_sent_and_not_tried_again(ledger, history):
    http = FakeHttp(BadRequestError("not an image"))
    with pytest.raises(BadRequestError):
        a_workbench(http, ledger)._upload(a_handle(), an_image("a.png"))
    assert http.sent == [POST]
    [row] = upload_rows(history)
    assert (row.status, row.error) == ("not-sent", "not an image")


def test_an_upload_interrupted_is_unknown(ledger, history):
    http = FakeHttp(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        a_workbench(http, ledger)._upload(a_handle(), an_image("a.png"))
    [row] = upload_rows(history)
    assert (row.status, row.error) == ("unknown", "interrupted while waiting for the answer")


# -- _settle_uploads, _keep_copy ------------------------------------------------------------------------------

def test_lost_uploads_of_a_reused_model_are_settled_by_its_training_images(ledger, history):
    def upload(name, model_id="model_1", status="unknown", kind="upload"):
        row = ledger.intent(kind, name="Cats", model_id=model_id, what=f"training image {name}")
        ledger.settle(row, status, error="lost")
        return row.request_id
    found, missing, sending = upload("a.png"), upload("b.png"), upload("c.png", status="sending")
    others = [upload("a.png", model_id="model_2"), upload("a.png", status="success"),
              upload("a.png", kind="model"), upload("a.png", status="not-sent")]
    images = [{"name": "a.png", "id": "asset_1"}, {"name": "c.png", "id": "asset_3"}, {"name": "b.png"}, "odd"]
    a_workbench(FakeHttp(), ledger)._settle_uploads(a_handle(), images)
    rows = {r.request_id: r for r in history.workbench(BACKEND, "Cats")}
    assert (rows[found].status, rows[found].asset_ids, rows[found].error) == ("success", ["asset_1"], None)
    assert (rows[sending].status, rows[sending].asset_ids) == ("success", ["asset_3"])
    assert (rows[missing].status, rows[missing].asset_ids, rows[missing].error) == ("not-sent", [], None)
    assert [rows[r].error for r in others] == ["lost"] * 4
    assert [rows[r].status for r in others] == ["unknown", "success", "unknown", "not-sent"]


def test_lost_uploads_of_a_draft_reused_under_another_letter_case_are_settled(ledger, history):
    """A draft made as "Cats" is reused by `train("cats")`: its lost upload is settled all the same."""
    row = ledger.intent("upload", name="Cats", model_id="model_1", what="training image a.png")
    ledger.settle(row, "unknown", error="lost")
    handle = a_handle()
    handle.name = "cats"
    a_workbench(FakeHttp(), ledger)._settle_uploads(handle, [{"name": "a.png", "id": "asset_1"}])
    [settled] = history.workbench(BACKEND, "Cats")
    assert (settled.status, settled.asset_ids) == ("success", ["asset_1"])


class UnreadableHistory:
    def workbench(self, *args, **kwargs):
        raise StorageError("locked")


def test_lost_uploads_are_left_alone_when_the_history_cannot_be_read():
    ledger = Ledger(lambda: UnreadableHistory(), LiveRequests(), backend_id=BACKEND, base_url=URL)
    a_workbench(FakeHttp(), ledger)._settle_uploads(a_handle(), [{"name": "a.png", "id": "asset_1"}])


class Store:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.put_calls: list = []

    def put(self, asset_id, data, mime):
        self.put_calls.append((asset_id, data, mime))
        if self.fail:
            raise StorageError("disk full")
        return f"/store/{asset_id}"


@pytest.mark.parametrize("fail", [False, True])
def test_an_uploaded_image_is_kept_in_the_store_or_noted(ledger, fail):
    store = Store(fail)
    wb = Workbench(None, FakeHttp(), ledger, None, store=lambda: store)
    handle, local = a_handle(), an_image("a.png")
    image = TrainingImage("a.png", width=8, height=8, data=local.data)
    image.asset_id = "asset_1"
    wb._keep_copy(handle, image, local)
    assert store.put_calls == [("asset_1", local.data, "image/png")]
    if fail:
        assert image.path is None and handle.note == "no local copy of a.png: disk full"
    else:
        assert image.path == "/store/asset_1" and handle.note == ""


def test_an_image_not_uploaded_is_not_kept(ledger):
    store = Store()
    wb = Workbench(None, FakeHttp(), ledger, None, store=lambda: store)
    local = an_image("a.png")
    wb._keep_copy(a_handle(), TrainingImage("a.png", width=8, height=8, data=local.data), local)
    assert store.put_calls == []


# -- _price ---------------------------------------------------------------------------------------------------

def a_plan(captions="auto") -> TrainingPlan:
    return TrainingPlan("Cats", "flux.1-lora", [an_image("a.png"), an_image("b.png")], captions,
                        parameters={"steps": 10})


@pytest.mark.parametrize("captions", ["auto", None])
def test_a_training_is_priced_by_the_servers_dry_run_with_its_captions(ledger, captions):
    http = FakeHttp({"creativeUnitsCost": 20, "creativeUnitsDiscount": 1, "costDetails": {"train": 20}})
    wb = a_workbench(http, ledger)
    wb._captioner = captioner = FakeCaptioner(3.0, [], [])
    plan = a_plan(captions)
    estimate = wb._price(a_handle(), plan)
    assert http.sent == [("PUT", "/models/model_1/train")]
    assert http.params == [{"dryRun": "true", "trainingImagesCount": 2}]
    assert http.bodies == [{"parameters": {"steps": 10}}]
    assert (estimate.model_id, estimate.inputs, estimate.discount) == (
        "model_1", {"parameters": {"steps": 10}, "images": 2}, 1.0)
    if captions == "auto":
        assert captioner.priced == [(plan.images, "action")]
        assert (estimate.creative_units, estimate.details) == (23.0, {"train": 20, "caption": 3.0})
    else:
        assert captioner.priced == []
        assert (estimate.creative_units, estimate.details) == (20.0, {"train": 20})


def test_a_training_refused_by_the_dry_run_is_an_input_error(ledger):
    wb = a_workbench(FakeHttp(BadRequestError("steps too high")), ledger)
    with pytest.raises(InputError) as refused:
        wb._price(a_handle(), a_plan())
    assert str(refused.value) == "Scenario refused this training: steps too high; nothing was created or charged"


# -- _earlier, drafts, delete_draft -----------------------------------------------------------------------------

class Follower:
    def __init__(self) -> None:
        self.reattached: list = []

    def reattach_training(self, model_id):
        self.reattached.append(model_id)
        return f"handle of {model_id}"


class Models:
    """A stand-in for OwnModels: the models of a name, and what was asked of it."""

    def __init__(self, *same) -> None:
        self.same = list(same)
        self.asked: list = []

    def named(self, name):
        self.asked.append(("named", name))
        return self.same

    def settle_unknown(self, name, model):
        self.asked.append(("settle_unknown", name, model["id"]))

    def drafts(self):
        self.asked.append(("drafts",))
        return [{"id": "model_d"}]

    def delete_draft(self, name_or_id):
        self.asked.append(("delete_draft", name_or_id))
        return {"id": name_or_id}


def an_earlier_rig(ledger, *same):
    follower, models = Follower(), Models(*same)
    wb = Workbench(None, FakeHttp(), ledger, follower, store=lambda: None)
    wb._models = models
    return wb, follower, models


def a_training_row(history, model_id, status, name=" cats ", backend=BACKEND):
    history.record_training(TrainingRecord(model_id, backend_id=backend, name=name, status=status, created_at=1.0))


@pytest.mark.parametrize("status", ["unknown", "training", "waiting"])
def test_a_training_in_flight_here_is_attached_to(ledger, history, status):
    a_training_row(history, "model_x", "training", backend="elsewhere")
    a_training_row(history, "model_p", "preparing")
    a_training_row(history, "model_a", status)
    wb, follower, models = an_earlier_rig(ledger, {"id": "model_a", "status": "training"})
    assert wb._earlier("Cats", attach=True) == ("handle of model_a", None)
    assert follower.reattached == ["model_a"] and models.asked == []


def test_without_attaching_a_training_in_flight_is_not_followed_but_its_draft_is_reused(ledger, history):
    a_training_row(history, "model_a", "training")
    draft = {"id": "model_n", "status": "new"}
    wb, follower, models = an_earlier_rig(ledger, {"id": "model_a", "status": "training"}, draft,
                                          {"id": "model_m", "status": "new"})
    assert wb._earlier("Cats", attach=False) == (None, draft)
    assert follower.reattached == [] and models.asked == [("named", "Cats"), ("settle_unknown", "Cats", "model_n")]


def test_a_model_training_on_the_server_or_trained_by_this_project_is_attached_to(ledger, history):
    wb, follower, _ = an_earlier_rig(ledger, {"id": 7, "status": "training"})
    assert wb._earlier("Cats", attach=True) == ("handle of 7", None) and follower.reattached == ["7"]
    a_training_row(history, "model_t", "trained")
    wb, follower, _ = an_earlier_rig(ledger, {"id": "model_t", "status": "trained"})
    assert wb._earlier("Cats", attach=True) == ("handle of model_t", None)


def test_a_model_of_the_name_made_elsewhere_refuses(ledger, history):
    a_training_row(history, "model_t", "trained", name="dogs")
    wb, follower, _ = an_earlier_rig(ledger, {"id": "model_t", "status": "trained"},
                                     {"id": "model_f", "status": "failed"})
    with pytest.raises(InputError) as refused:
        wb._earlier("Cats", attach=True)
    assert str(refused.value) == ("you already have a model named 'Cats' (model_t, trained); pick another name, "
                                  "or force=True to train a second one")
    assert follower.reattached == []
    assert wb._earlier("Cats", attach=False) == (None, None)


def test_no_earlier_model_is_neither(ledger, history):
    wb, follower, models = an_earlier_rig(ledger)
    assert wb._earlier("Cats", attach=True) == (None, None)


class NoTrainingsHistory:
    def trainings(self, *args, **kwargs):
        raise StorageError("locked")


def test_an_unreadable_history_still_finds_the_servers_models():
    ledger = Ledger(lambda: NoTrainingsHistory(), LiveRequests(), backend_id=BACKEND, base_url=URL)
    wb, follower, _ = an_earlier_rig(ledger, {"id": "model_a", "status": "training"})
    assert wb._earlier("Cats", attach=True) == ("handle of model_a", None)


def test_many_trainings_are_looked_through(ledger, history):
    """The name's row is found among the 10,000 newest trainings, not only the first page of 100."""
    for i in range(150):
        history.record_training(TrainingRecord(f"model_{i}", backend_id=BACKEND, name="other", status="trained",
                                               created_at=1000.0 + i))
    a_training_row(history, "model_a", "training")
    wb, follower, _ = an_earlier_rig(ledger)
    assert wb._earlier("Cats", attach=True) == ("handle of model_a", None)


def test_drafts_and_their_deletion_are_the_models_own(ledger):
    wb, _, models = an_earlier_rig(ledger)
    assert wb.drafts() == [{"id": "model_d"}] and wb.delete_draft("Cats") == {"id": "Cats"}
    assert models.asked == [("drafts",), ("delete_draft", "Cats")]


def test_only_the_newest_10000_trainings_are_looked_through(ledger, history, tmp_path):
    a_training_row(history, "model_a", "training")  # the oldest
    conn = sqlite3.connect(tmp_path / "h.sqlite")
    with conn:
        conn.executemany("INSERT INTO trainings (model_id, backend_id, name, status, created_at) "
                         "VALUES (?, ?, ?, ?, ?)",
                         [(f"model_{i}", BACKEND, "other", "trained", 1000.0 + i) for i in range(10_000)])
    conn.close()
    wb, follower, _ = an_earlier_rig(ledger)
    assert wb._earlier("Cats", attach=True) == (None, None) and follower.reattached == []


# -- train ----------------------------------------------------------------------------------------------------

class TrainStep:
    """Stands in for `Workbench._train`: notes its arguments and what the history held when it was called."""

    def __init__(self, history, fail: bool = False) -> None:
        self.history, self.fail = history, fail
        self.calls: list = []

    def __call__(self, plan, claim, *, dry_run, max_cost, confirm):
        rows = [(r.name, r.type, r.status) for r in self.history.trainings(BACKEND)]
        self.calls.append((plan, claim, dry_run, max_cost, confirm, rows))
        if self.fail:
            raise InputError("refused")
        return "trained"


@pytest.mark.parametrize("fail", [False, True])
def test_a_training_claims_its_name_first_and_lets_the_claim_go_after(ledger, history, fail):
    wb, _, _ = an_earlier_rig(ledger)
    wb._train = step = TrainStep(history, fail)
    plan, confirm = a_plan(), object()
    try:
        result = wb.train(plan, max_cost=5.0, confirm=confirm)
    except InputError:
        result = "refused"
    assert result == ("refused" if fail else "trained")
    [(given, claim, dry_run, max_cost, confirmed, rows)] = step.calls
    assert (given, dry_run, max_cost, confirmed) == (plan, False, 5.0, confirm)
    assert rows == [("Cats", "flux.1-lora", "preparing")]  # claimed before anything else
    assert claim.row_id == history.trainings(BACKEND)[0].model_id
    claim._beat.join(1)
    assert not claim._beat.is_alive()  # stopped whatever happened


def test_a_dry_run_claims_nothing(ledger, history):
    wb, _, _ = an_earlier_rig(ledger)
    wb._train = step = TrainStep(history)
    assert wb.train(a_plan(), dry_run=True) == "trained"
    [(_, claim, dry_run, max_cost, confirm, rows)] = step.calls
    assert (claim, dry_run, max_cost, confirm, rows) == (None, True, None, None, [])


def test_a_forced_training_claims_without_waiting(ledger, history):
    history.record_training(TrainingRecord("claim_other", backend_id=BACKEND, name="Cats", status="preparing",
                                           updated_at=time.time(),
                                           owner=f"{socket.gethostname()}:{os.getpid()}"))
    wb, _, _ = an_earlier_rig(ledger)
    wb._train = step = TrainStep(history)
    plan = a_plan()
    plan.force = True
    assert wb.train(plan) == "trained"
    assert len(step.calls) == 1


# -- __init__: the parts a Workbench builds -------------------------------------------------------------------

def test_the_workbench_captions_through_its_own_captioner(ledger):
    http = FakeHttp({"creativeUnitsCost": 1}, {"captions": ["a cat"], "creativeUnitsCost": 1})
    table = a_workbench(http, ledger).caption_images([an_image("a.png")], "action", max_cost=5.0)
    assert dict(table) == {"a.png": "a cat"}
    assert http.sent == [("POST", "/generate/caption")] * 2 and http.params[0] == {"dryRun": "true"}


def test_the_workbench_lists_drafts_through_its_own_models(ledger, history):
    http = FakeHttp()
    assert a_workbench(http, ledger).drafts() == []
    assert http.sent and all(method == "GET" for method, _ in http.sent)
