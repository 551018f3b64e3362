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
                                StorageError, SubmitFailedError)
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


@pytest.mark.parametrize("model, status, asset_ids", [
    (on_model({"name": "a.png", "id": "asset_9"}), "success", ["asset_9"]),
    (on_model(), "not-sent", []),
    (ServerError("model unreadable"), "unknown", []),
])
def test_a_send_refused_after_a_lost_answer_is_settled_by_the_model(ledger, history, model, status, asset_ids):
    """The first send's answer was lost while the server still stored the image (a slow server), the model did not
    show it yet, so it was sent again and refused as "already a training image": the first send is looked for
    again, and found it is the image's upload (it was paid), never "not sent"."""
    already = BadRequestError("The provided image is already a training image of this model")
    http = FakeHttp(ServerError("lost"), on_model(), already, model)
    wb = a_workbench(http, ledger)
    if status == "success":
        assert wb._upload(a_handle(), an_image("a.png")) == "asset_9"
    else:
        with pytest.raises(BadRequestError):
            wb._upload(a_handle(), an_image("a.png"))
    assert http.sent == [POST, GET, POST, GET]
    [row] = upload_rows(history)
    assert (row.status, row.asset_ids) == (status, asset_ids)


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


# -- _train: the order of the paid steps, and what is left when one fails ------------------------------------------

class ClaimStub:
    def __init__(self, events: list) -> None:
        self.events = events

    def moved(self, model_id):
        self.events.append(("moved", model_id))

    def drop(self):
        self.events.append(("drop",))


class TrainRig:
    """A Workbench whose steps around `_train` are stand-ins that log, in order, into `events`; the ledger,
    history and `_abandon` are real (its DELETE goes to the fake transport)."""

    def __init__(self, ledger, history, earlier=(None, None), price=10.0) -> None:
        self.events: list = []
        self.http = FakeHttp()
        self.history = history
        self.wb = wb = Workbench("the owner", self.http, ledger, self, store=lambda: None)
        self.earlier, self.price = earlier, price
        self.start_outcome = None
        self.prepare_fails = None
        wb._earlier = self._earlier
        wb._price = self._price
        wb._prepare = self._prepare
        wb._models = self
        self.claim = ClaimStub(self.events)

    # stand-ins
    def _earlier(self, name, *, attach):
        self.events.append(("earlier", name, attach))
        if isinstance(self.earlier, BaseException):
            raise self.earlier
        return self.earlier

    def create(self, name, model_type):
        self.events.append(("create", name, model_type))
        return "model_new"

    def _price(self, handle, plan):
        row = self.history.training(handle.model_id)
        self.priced_plans = getattr(self, "priced_plans", []) + [plan]
        self.events.append(("price", handle.model_id, row and row.status))
        from scenario_nb._estimate import CostEstimate
        return CostEstimate(self.price, model_id=handle.model_id)

    def _prepare(self, handle, loaded, captions, *, reuse):
        row = self.history.training(handle.model_id)
        self.events.append(("prepare", [i.name for i in loaded], captions, reuse, row and row.status))
        if self.prepare_fails is not None:
            raise self.prepare_fails

    def start_training(self, handle, params):
        self.events.append(("start", handle.model_id, params))
        if self.start_outcome is not None:
            raise self.start_outcome
        handle._set(status="training")

    def wait_for_slot(self, handle, exc):
        self.events.append(("wait_for_slot", handle.model_id, exc))

    def follow_training(self, handle):
        self.events.append(("follow", handle.model_id))

    def train(self, plan=None, claim="claim", **kw):
        kw = {"dry_run": False, "max_cost": None, "confirm": None, **kw}
        return self.wb._train(plan or a_plan(), self.claim if claim == "claim" else claim, **kw)


def test_a_training_is_made_priced_written_prepared_and_started_in_that_order(ledger, history):
    rig = TrainRig(ledger, history)
    confirmed = []
    plan = a_plan({"a.png": "red"})
    handle = rig.train(plan, confirm=lambda e: confirmed.append((e.creative_units, rig.events[-1][0])))
    assert rig.events == [("earlier", "Cats", True), ("create", "Cats", "flux.1-lora"), ("moved", "model_new"),
                          ("price", "model_new", None),
                          ("prepare", ["a.png", "b.png"], {"a.png": "red"}, None, "preparing"),
                          ("start", "model_new", {"steps": 10})]
    assert confirmed == [(10.0, "price")] and rig.priced_plans == [plan]
    assert isinstance(handle, Training) and handle.status == "training" and handle._owner == "the owner"
    assert (handle.model_id, handle.name, handle.type, handle.parameters) == (
        "model_new", "Cats", "flux.1-lora", {"steps": 10})
    assert [(i.name, i.width, i.height, i.data) for i in handle.images] == [
        (i.name, 8, 8, i.data) for i in plan.images]
    assert http_sent(rig) == []


def http_sent(rig):
    return rig.http.sent


def test_a_draft_is_reused_by_its_id_and_handed_to_prepare(ledger, history):
    draft = {"id": 77, "status": "new"}
    rig = TrainRig(ledger, history, earlier=(None, draft))
    handle = rig.train()
    assert ("create", "Cats", "flux.1-lora") not in rig.events and handle.model_id == "77"
    assert ("moved", "77") in rig.events and rig.events[3][3] == draft


def test_a_training_already_under_way_is_followed_and_the_claim_dropped(ledger, history):
    earlier = Training(None, model_id="model_e", name="Cats", type="x", status="training")
    rig = TrainRig(ledger, history, earlier=(earlier, None))
    assert rig.train() is earlier
    assert rig.events == [("earlier", "Cats", True), ("drop",)]
    assert earlier.note == ("Cats was already being trained here: followed, nothing paid again (force=True trains "
                            "a second model)")
    rig2 = TrainRig(ledger, history, earlier=(earlier, None))
    assert rig2.train(claim=None) is earlier


def test_a_forced_training_looks_for_no_earlier_one(ledger, history):
    rig = TrainRig(ledger, history, earlier=(Training(None, model_id="e", name="Cats", type="x"), None))
    plan = a_plan()
    plan.force = True
    assert rig.train(plan).model_id == "model_new"
    assert rig.events[0] == ("create", "Cats", "flux.1-lora")


def test_a_dry_run_looks_without_attaching_prices_and_removes_the_model_it_made(ledger, history):
    rig = TrainRig(ledger, history)
    estimate = rig.train(claim=None, dry_run=True)
    assert estimate.creative_units == 10.0
    assert rig.events[0] == ("earlier", "Cats", False)
    assert rig.http.sent == [("DELETE", "/models/model_new")] and history.training("model_new") is None
    assert not any(e[0] in ("prepare", "start") for e in rig.events)


def test_a_dry_run_on_a_draft_keeps_it(ledger, history):
    rig = TrainRig(ledger, history, earlier=(None, {"id": "model_d"}))
    rig.train(claim=None, dry_run=True)
    assert rig.http.sent == []


def test_a_training_over_max_cost_is_refused_and_its_model_removed_and_claim_dropped(ledger, history):
    rig = TrainRig(ledger, history)
    with pytest.raises(InputError) as refused:
        rig.train(max_cost=9.5, confirm=lambda e: rig.events.append(("confirm",)))
    assert str(refused.value) == "refused: this training is estimated at 10 CU, over max_cost 9.5; nothing was spent"
    assert rig.http.sent == [("DELETE", "/models/model_new")] and history.training("model_new") is None
    assert ("confirm",) not in rig.events and rig.events[-1] == ("drop",)


def test_a_training_at_exactly_max_cost_goes_on(ledger, history):
    rig = TrainRig(ledger, history)
    assert rig.train(max_cost=10.0).status == "training"


def test_a_price_refused_by_the_user_removes_the_model(ledger, history):
    rig = TrainRig(ledger, history)

    def refuse(estimate):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        rig.train(confirm=refuse)
    assert rig.http.sent == [("DELETE", "/models/model_new")] and history.training("model_new") is None
    assert rig.events[-1] == ("drop",)


def test_a_failure_while_preparing_leaves_a_recorded_row_and_keeps_the_claim(ledger, history):
    rig = TrainRig(ledger, history)
    rig.prepare_fails = ServerError("upload lost")
    with pytest.raises(ServerError):
        rig.train()
    assert rig.http.sent == [("DELETE", "/models/model_new")]
    row = history.training("model_new")
    assert (row.status, row.error) == ("not-started", str(rig.prepare_fails))
    assert ("drop",) not in rig.events  # the row says what happened: the claim moved to it stays


def test_a_failure_while_preparing_a_draft_keeps_the_model(ledger, history):
    rig = TrainRig(ledger, history, earlier=(None, {"id": "model_d"}))
    rig.prepare_fails = ServerError("upload lost")
    with pytest.raises(ServerError):
        rig.train()
    assert rig.http.sent == [] and history.training("model_d").status == "not-started"


def test_a_start_refused_for_a_slot_waits_for_one(ledger, history):
    rig = TrainRig(ledger, history)
    refusal = RateLimitError("too many")
    rig.start_outcome = refusal
    handle = rig.train()
    assert rig.events[-1] == ("wait_for_slot", "model_new", refusal) and handle.model_id == "model_new"
    assert rig.http.sent == []


@pytest.mark.parametrize("draft, tail", [(None, " and the model was removed"), ({"id": "model_d"}, "")])
def test_a_refused_start_removes_the_model_made_here_and_says_so(ledger, history, draft, tail):
    rig = TrainRig(ledger, history, earlier=(None, draft))
    rig.start_outcome = BadRequestError("steps too high")
    with pytest.raises(SubmitFailedError) as refused:
        rig.train()
    model_id = "model_new" if draft is None else "model_d"
    assert str(refused.value) == (f"Scenario refused to start the training of Cats: steps too high; nothing was "
                                  f"charged for it{tail}")
    assert rig.http.sent == ([("DELETE", "/models/model_new")] if draft is None else [])
    assert history.training(model_id).status == "not-started"
    assert ("follow", model_id) not in rig.events


def test_a_start_refused_otherwise_by_the_api_is_refused_too(ledger, history):
    rig = TrainRig(ledger, history)
    from scenario_nb._errors import PermissionDeniedError
    rig.start_outcome = PermissionDeniedError("no")
    with pytest.raises(SubmitFailedError):
        rig.train()


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ValueError("odd")])
def test_a_start_interrupted_is_followed_not_removed(ledger, history, exc):
    rig = TrainRig(ledger, history)
    rig.start_outcome = exc
    with pytest.raises(type(exc)):
        rig.train()
    assert rig.events[-1] == ("follow", "model_new") and rig.http.sent == []
    assert history.training("model_new").status == "preparing"


def test_a_start_that_cannot_be_recorded_removes_the_model(ledger, history):
    rig = TrainRig(ledger, history)
    rig.start_outcome = StorageError("disk full")
    with pytest.raises(StorageError):
        rig.train()
    assert rig.http.sent == [("DELETE", "/models/model_new")] and ("follow", "model_new") not in rig.events


@pytest.mark.parametrize("exc", [InputError("name taken"), KeyboardInterrupt()])
def test_a_failure_before_the_model_exists_drops_the_claim(ledger, history, exc):
    rig = TrainRig(ledger, history, earlier=exc)
    with pytest.raises(type(exc)):
        rig.train()
    assert rig.events == [("earlier", "Cats", True), ("drop",)]
    rig2 = TrainRig(ledger, history, earlier=exc)
    with pytest.raises(type(exc)):
        rig2.train(claim=None)


# -- _prepare: captions, uploads side by side, each caption on its image ------------------------------------------

class PrepareRig:
    def __init__(self, ledger, history, names=("a.png", "b.png"), model_images=None) -> None:
        self.http = FakeHttp()
        self.history = history
        self.wb = wb = Workbench(None, self.http, ledger, None, store=lambda: None)
        self.loaded = [an_image(n) for n in names]
        self.handle = Training(None, model_id="model_1", name="Cats", type="flux.1-lora", status="preparing",
                               images=[TrainingImage(i.name, width=8, height=8, data=i.data) for i in self.loaded])
        self.uploaded: list = []
        self.kept: list = []
        self.settled: list = []
        self.model_images = model_images or []
        self.gate = None
        wb._upload = self._upload
        wb._keep_copy = lambda h, image, local: self.kept.append((image.name, image.asset_id, local.name)) \
            if h is self.handle else None
        wb._settle_uploads = lambda h, images: self.settled.append(images) if h is self.handle else None
        wb._models = self
        self.notified: list = []
        self.handle.on_update(lambda t: self.notified.append((t.stage, history.training("model_1") and
                                                              history.training("model_1").stage)))
        self.notified.clear()

    def _upload(self, handle, local):
        import threading
        assert handle is self.handle
        self.uploaded.append((local.name, threading.current_thread().name))
        if self.gate is not None:
            self.gate(local)
        return None if local.name == "lost.png" else f"asset_{local.name}"

    def model(self, model_id):
        self.asked_model = model_id
        return {"trainingImages": self.model_images}


def test_auto_captions_are_asked_for_all_at_once_then_the_images_uploaded_and_captioned(ledger, history):
    rig = PrepareRig(ledger, history)
    rig.wb._captioner = captioner = FakeCaptioner(0, ["red", ""], [])
    rig.wb._prepare(rig.handle, rig.loaded, "auto")
    assert captioner.captioned == [(rig.loaded, "action")]
    assert rig.notified == [("captioning", None), ("uploading", "uploading")]
    assert [i.caption for i in rig.handle.images] == ["red", ""] and rig.handle.note == ""
    assert sorted(n for n, _ in rig.uploaded) == ["a.png", "b.png"]
    assert all(t.startswith("scenario-upload") for _, t in rig.uploaded)
    assert sorted(rig.kept) == [("a.png", "asset_a.png", "a.png"), ("b.png", "asset_b.png", "b.png")]
    assert rig.http.sent == [("PUT", "/assets/asset_a.png")] and rig.http.bodies == [{"description": "red"}]
    row = history.training("model_1")
    assert [i["asset_id"] for i in row.images] == ["asset_a.png", "asset_b.png"]  # written after the uploads
    assert [i["caption"] for i in row.images] == ["red", ""]
    assert rig.settled == [] and not hasattr(rig, "asked_model")  # a new model has no images to read


def test_lost_captions_are_noted(ledger, history):
    rig = PrepareRig(ledger, history)
    rig.wb._captioner = FakeCaptioner(0, ["", ""], ["a.png", "b.png"])
    rig.wb._prepare(rig.handle, rig.loaded, "auto")
    assert rig.handle.note == ("no caption for a.png, b.png: its answer was lost before (it may have been charged) "
                               "and it is not asked again")


@pytest.mark.parametrize("plan, captions", [({"a.png": "red", "c.png": "x"}, ["red", ""]), (None, ["", ""]),
                                            ("odd", ["", ""])])
def test_given_captions_are_put_on_their_images(ledger, history, plan, captions):
    rig = PrepareRig(ledger, history)
    rig.wb._captioner = captioner = FakeCaptioner(0, [], [])
    rig.wb._prepare(rig.handle, rig.loaded, plan)
    assert captioner.captioned == [] and [i.caption for i in rig.handle.images] == captions
    assert rig.notified == [("uploading", "uploading")]
    assert rig.http.bodies == ([{"description": "red"}] if captions[0] else [])


def test_captions_for_fewer_images_are_an_error(ledger, history):
    rig = PrepareRig(ledger, history)
    rig.wb._captioner = FakeCaptioner(0, ["one"], [])
    with pytest.raises(ValueError):
        rig.wb._prepare(rig.handle, rig.loaded, "auto")


def test_an_image_without_an_asset_gets_no_caption(ledger, history):
    rig = PrepareRig(ledger, history, names=("lost.png",))
    rig.wb._prepare(rig.handle, rig.loaded, {"lost.png": "red"})
    assert rig.http.sent == [] and rig.kept == [("lost.png", None, "lost.png")]


def test_a_reused_drafts_images_are_not_uploaded_again_and_its_lost_uploads_settled(ledger, history):
    images = [{"name": "a.png", "id": "asset_old"}, {"name": "b.png"}, "odd", {"name": "c.png", "id": 5}]
    rig = PrepareRig(ledger, history, model_images=images)
    rig.wb._prepare(rig.handle, rig.loaded, {"a.png": "red"}, reuse={"id": "model_1"})
    assert rig.asked_model == "model_1" and rig.settled == [images]
    assert [n for n, _ in rig.uploaded] == ["b.png"]
    assert sorted(rig.kept) == [("a.png", "asset_old", "a.png"), ("b.png", "asset_b.png", "b.png")]
    assert rig.http.sent == [("PUT", "/assets/asset_old")]


def test_a_reused_draft_without_training_images_uploads_them_all(ledger, history):
    rig = PrepareRig(ledger, history, model_images=None)
    rig.wb._prepare(rig.handle, rig.loaded, None, reuse={"id": "model_1"})
    assert sorted(n for n, _ in rig.uploaded) == ["a.png", "b.png"] and rig.settled == [[]]


def test_uploads_go_eight_at_a_time(ledger, history):
    import threading
    names = [f"{i}.png" for i in range(9)]
    rig = PrepareRig(ledger, history, names=names)
    barrier, count, lock = threading.Barrier(8, timeout=5), [0], threading.Lock()

    def gate(local):
        with lock:
            count[0] += 1
            first_eight = count[0] <= 8
        if first_eight:
            barrier.wait()  # eight at once, or this breaks
    rig.gate = gate
    rig.wb._prepare(rig.handle, rig.loaded, None)
    assert len({t for _, t in rig.uploaded}) == 8


def test_a_single_image_is_uploaded_on_one_thread(ledger, history):
    rig = PrepareRig(ledger, history, names=("a.png",))
    rig.wb._prepare(rig.handle, rig.loaded, None)
    assert len(rig.uploaded) == 1


class UnwritableTrainings:
    def record_training(self, row):
        raise StorageError("disk full")


def test_a_preparation_that_cannot_be_recorded_uploads_nothing():
    ledger = Ledger(lambda: UnwritableTrainings(), LiveRequests(), backend_id=BACKEND, base_url=URL)
    rig = PrepareRig.__new__(PrepareRig)
    rig.uploaded = []
    wb = Workbench(None, FakeHttp(), ledger, None, store=lambda: None)
    wb._upload = lambda h, local: rig.uploaded.append(local.name)
    loaded = [an_image("a.png")]
    handle = Training(None, model_id="model_1", name="Cats", type="x", status="preparing",
                      images=[TrainingImage("a.png", width=8, height=8, data=loaded[0].data)])
    with pytest.raises(StorageError):
        wb._prepare(handle, loaded, None)
    assert rig.uploaded == []


def test_a_forced_training_removes_the_model_it_made_when_it_fails(ledger, history):
    rig = TrainRig(ledger, history)
    plan = a_plan()
    plan.force = True
    rig.prepare_fails = ServerError("upload lost")
    with pytest.raises(ServerError):
        rig.train(plan)
    assert rig.http.sent == [("DELETE", "/models/model_new")]


def test_a_dry_runs_model_that_cannot_be_removed_is_a_draft_row_saying_why(ledger, history):
    rig = TrainRig(ledger, history)
    rig.http.outcomes = [ServerError("busy"), ServerError("busy")]
    rig.train(claim=None, dry_run=True)
    row = history.training("model_new")
    assert (row.status, row.error) == ("not-started", "dry run")


class NoTrainingRows:
    def record_training(self, row):
        raise StorageError("disk full")

    def training(self, model_id):
        return None


def test_a_training_that_cannot_be_written_ahead_uploads_nothing_and_removes_its_model(live):
    ledger = Ledger(lambda: NoTrainingRows(), live, backend_id=BACKEND, base_url=URL)
    rig = TrainRig(ledger, NoTrainingRows())
    with pytest.raises(StorageError):
        rig.train()
    assert not any(e[0] in ("prepare", "start") for e in rig.events)
    assert rig.http.sent == [("DELETE", "/models/model_new")]
