"""Tests written to kill mutants that mutmut planted in `scenario_nb/_engine/_workbench.py` and that
tests/test_workbench.py let live (the run, the figures and the mutants that cannot be killed:
tests/mutants-equivalent.md).

In-process and fast: a `Workbench` with a real ledger and history, a fake transport that logs the requests it
gets, and a stand-in captioner; checked by effect: the requests sent, the rows the history holds, the table made.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from scenario_nb._engine._ledger import Ledger
from scenario_nb._engine._live import LiveRequests
from scenario_nb._engine._workbench import Workbench
from scenario_nb._errors import InputError, ServerError
from scenario_nb._history import History
from scenario_nb._local_images import LocalImage
from scenario_nb._training import Training

URL = "http://127.0.0.1:1/v1"
BACKEND = URL + "#key1"


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "h.sqlite")
    yield h
    h.close()


@pytest.fixture
def ledger(history):
    return Ledger(lambda: history, LiveRequests(), backend_id=BACKEND, base_url=URL)


class Backoff:
    def __init__(self, events: list) -> None:
        self.asked: list = []
        self.events = events

    def delay(self, attempt, retry_after=None) -> float:
        self.asked.append(attempt)
        self.events.append(f"wait {attempt}")
        return 0.0


class FakeHttp:
    """Answers each request with the next scripted outcome (an exception is raised); logs (method, path)."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.sent: list = []
        self.events: list = []
        self.backoff = Backoff(self.events)

    def request(self, method, path, params=None, json_body=None):
        self.sent.append((method, path))
        self.events.append(method)
        outcome = self.outcomes.pop(0) if self.outcomes else {}
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


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
