"""Tests written to kill mutants that mutmut planted in the engine's poller, completer and live bookkeeping
(`scenario_nb/_engine/_poller.py`, `_completer.py`, `_live.py`; the run, the figures and the mutants that cannot
be killed: tests/mutants-equivalent.md).

In-process and fast: each part with a real ledger and history, lanes run by hand, a scripted transport, a
stand-in timing model and a clock the test moves (the modules' `time` swapped for it: no sleeping). Checked by
effect: the requests asked, the tasks scheduled (when, on which lane), the rows the history holds.
"""

from __future__ import annotations

import pytest

from scenario_nb._engine import _clock
from scenario_nb._engine._completer import Completer, _asset_text, _seed
from scenario_nb._engine._live import Settings
from scenario_nb._engine._poller import Poller
from scenario_nb._errors import (APIConnectionError, DownloadFailedError, JobFailedError, JobTimeoutError,
                                NotFoundError, PermissionDeniedError, RateLimitError, ServerError, StorageError)
from scenario_nb._generation import Generation, Output
from scenario_nb._history import JobRecord

from ledger_parts import URL, ModuleClock as Clock



@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_clock, "time", c)  # the engine's clock reads the time through this module
    return c


class Lanes:
    """Tasks kept in order with their delay, token and lane, run by hand."""

    def __init__(self) -> None:
        self.tasks: list = []  # (handle, delay, task, token, lane)

    def schedule(self, handle, delay, task, token=None, *, lane="poll"):
        self.tasks.append((handle, delay, task, token, lane))

    def run(self, index: int = 0):
        handle, _, task, token, _ = self.tasks.pop(index)
        task(handle, token) if token is not None else task(handle)

    def plan(self) -> list:
        return [(h.request_id, delay, lane) for h, delay, _, _, lane in self.tasks]


class Backoff:
    def __init__(self) -> None:
        self.holds: dict = {}
        self.asked: list = []

    def held(self, url):
        return self.holds.get(url, 0.0)

    def delay(self, attempt, retry_after=None, *, base=None, cap=None):
        self.asked.append((attempt, retry_after, base, cap))
        return 100.0 + attempt


class Http:
    """GETs answered from a script per path (a list of answers: a dict answered, an exception raised)."""

    base_url = URL

    def __init__(self, **answers) -> None:
        self.answers: dict = {}
        self.asked: list = []
        self.downloads: list = []
        self.backoff = Backoff()

    def answer(self, path, *outcomes):
        self.answers.setdefault(path, []).extend(outcomes)

    def get_once(self, path):
        self.asked.append(path)
        outcome = self.answers[path].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def download_once(self, url):
        self.downloads.append(url)
        outcome = self.answers[url].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Timing:
    """A stand-in timing model: fixed answers, and what it was asked."""

    def __init__(self) -> None:
        self.delay = 7.0
        self.wake = None
        self.siblings: list = []
        self.followers: list = []
        self.replacements: list = []
        self.asked: list = []

    def next_delay(self, handle):
        self.asked.append(("next_delay", handle.request_id))
        return self.delay

    def learn_success(self, handle):
        self.asked.append(("learn_success", handle.request_id))
        return self.wake

    def sibling_dues(self, handle, wake):
        self.asked.append(("sibling_dues", handle.request_id, wake))
        return self.siblings

    def follower_dues(self, handle):
        self.asked.append(("follower_dues", handle.request_id))
        return self.followers

    def replace_scout(self, gone):
        self.asked.append(("replace_scout", gone.request_id))
        return self.replacements


class ServerClock:
    def __init__(self) -> None:
        self.created_calls: list = []
        self.seen: list = []

    def created(self, job, arrived):
        self.created_calls.append((job, arrived))

    def saw(self, job, now):
        self.seen.append((job, now))


class Rig:
    def __init__(self, ledger, live, history) -> None:
        self.ledger, self.live, self.history = ledger, live, history
        self.lanes, self.http, self.timing = Lanes(), Http(), Timing()
        self.settings = Settings(floor=0.5, ceiling=6.0, job_timeout=100.0)
        self.server_clock = ServerClock()
        self.completed: list = []
        self.poller = Poller(self.http, self.lanes, live, self.timing, ledger, self.settings,
                             complete=lambda h, job: self.completed.append((h.request_id, job)),
                             server_clock=self.server_clock)

    def handle(self, request_id="req_1", job_id=None, **kw) -> Generation:
        h = Generation(model_id="model_x", request_id=request_id, prompt="a cat", status="queued", **kw)
        if job_id:
            h._set(job_id=job_id)
            self.live.bind_job(job_id, h)
        return h

    def row(self, handle):
        return self.history.get_request(handle.request_id)


@pytest.fixture
def rig(ledger, live, history, clock):
    return Rig(ledger, live, history)


def iso(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


# -- Poller.adopt, track ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["jobId", "id"])
def test_an_adopted_job_is_bound_recorded_shown_and_polled_at_the_timings_delay(rig, clock, key):
    h = rig.handle()
    seen = []
    h.on_update(lambda g: seen.append((g.job_id, g.status, rig.row(g).job_id if rig.row(g) else None)))
    seen.clear()  # on_update calls it once at once
    rig.poller.adopt(h, {key: 42, "status": "in-progress"}, "3")
    assert h.job_id == "42" and rig.live.for_job("42") is h and rig.live.get("req_1") is h
    assert rig.live.knows_job("42") and h.cost == 3.0 and h.status == "in-progress"
    row = rig.row(h)
    assert (row.job_id, row.status, row.cost) == ("42", "in-progress", 3.0)
    assert seen == [("42", "in-progress", "42")]  # shown once, after the row
    assert rig.lanes.plan() == [("req_1", 7.0, "poll")]
    assert rig.timing.asked == [("next_delay", "req_1")]
    assert rig.live.due("req_1") == clock.mono + 7.0
    assert rig.live.tracked_for("req_1") == 0.0
    clock.advance(3)
    assert rig.live.tracked_for("req_1") == 3.0
    assert rig.server_clock.created_calls == [] and rig.live.created("req_1") is None and h.server_offset == 0.0


def test_an_adopted_job_without_a_cost_keeps_the_handles(rig):
    h = rig.handle(cost=5.0)
    rig.poller.adopt(h, {"jobId": "j"})
    assert h.cost == 5.0 and rig.row(h).cost == 5.0


def test_a_job_just_created_teaches_the_server_clock_and_its_offset(rig, clock):
    h = rig.handle()
    job = {"jobId": "j", "status": "queued", "createdAt": iso(clock.wall - 2.5)}
    rig.poller.adopt(h, job, 1, created=True)
    assert rig.server_clock.created_calls == [(job, clock.wall)]
    assert rig.live.created("req_1") == clock.wall
    assert h.server_offset == pytest.approx(2.5)


def test_a_job_just_created_without_a_date_has_no_offset(rig, clock):
    h = rig.handle()
    rig.poller.adopt(h, {"jobId": "j", "status": "queued"}, created=True)
    assert rig.live.created("req_1") == clock.wall and h.server_offset == 0.0


def test_an_odd_answer_next_to_the_job_id_still_records_the_job(rig):
    class Broken(ServerClock):
        def created(self, job, arrived):
            raise ValueError("odd")
    rig.poller._server_clock = Broken()
    h = rig.handle()
    with pytest.raises(ValueError):
        rig.poller.adopt(h, {"jobId": "j", "status": "queued"}, created=True)
    assert rig.row(h).job_id == "j" and rig.lanes.tasks == []


def test_the_default_server_clock_is_a_fresh_one(ledger, live):
    p = Poller(Http(), Lanes(), live, Timing(), ledger, Settings(), complete=lambda h, j: None)
    assert p._server_clock.ahead_at_most() == 10.0


def test_tracking_again_keeps_the_first_tracking_time(rig, clock):
    h = rig.handle(job_id="j")
    rig.poller.track(h)
    clock.advance(4)
    rig.poller.track(h)
    assert rig.live.tracked_for("req_1") == 4.0


# -- Poller._schedule_poll, poll_soon -----------------------------------------------------------------------------

def test_a_poll_is_never_sooner_than_the_servers_wait_for_that_jobs_url(rig):
    h = rig.handle(job_id="j")
    rig.http.backoff.holds[f"{URL}/jobs/j"] = 9.0
    rig.poller.poll_soon(h)
    rig.http.backoff.holds[f"{URL}/jobs/j"] = 1.0
    rig.poller._schedule_poll(h, 3.0)
    assert rig.lanes.plan() == [("req_1", 9.0, "poll"), ("req_1", 3.0, "poll")]
    rig.poller.poll_soon(h)
    assert rig.lanes.tasks[-1][1] == 1.0


def test_only_the_newest_poll_of_a_job_asks(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", {"job": {"status": "in-progress"}})
    rig.poller.poll_soon(h)
    rig.poller.poll_soon(h)
    rig.lanes.run(0)  # the older one: no longer counts
    assert rig.http.asked == []
    rig.lanes.run(0)
    assert rig.http.asked == ["/jobs/j"]


def test_a_poll_while_another_is_on_the_wire_does_not_ask_and_the_wire_is_freed_after(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", {"job": {"status": "in-progress"}}, {"job": {"status": "in-progress"}})
    rig.live._asking.add("req_1")
    rig.poller._poll(h)
    assert rig.http.asked == []
    rig.live.done_asking("req_1")
    rig.poller._poll(h)
    rig.poller._poll(h)
    assert rig.http.asked == ["/jobs/j", "/jobs/j"]  # freed after each ask


def test_the_wire_is_freed_even_when_the_ask_fails(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", ValueError("odd"))
    with pytest.raises(ValueError):
        rig.poller._poll(h)
    assert "req_1" not in rig.live._asking


# -- Poller._ask ------------------------------------------------------------------------------------------------

def test_a_job_followed_past_its_timeout_ends_unrecorded_and_hands_over(rig, clock):
    h = rig.handle(job_id="j")
    rig.ledger.record(h)
    rig.live.track("req_1")
    clock.advance(100.0)
    rig.http.answer("/jobs/j", {"job": {"status": "in-progress"}})
    rig.poller._ask(h)  # exactly the timeout: still asked
    assert rig.http.asked == ["/jobs/j"] and not h.done
    clock.advance(0.01)
    rig.timing.replacements = [rig.handle("req_2", job_id="k")]
    rig.poller._ask(h)
    assert rig.http.asked == ["/jobs/j"]
    assert h.done and isinstance(h.exception, JobTimeoutError) and h.exception.seconds == 100.0
    assert h.exception.job_id == "j"
    assert rig.row(h).status == "queued"  # not recorded: a new kernel follows it on
    assert rig.live.get("req_1") is None
    assert rig.timing.asked[-1] == ("replace_scout", "req_1")
    assert rig.lanes.plan()[-1] == ("req_2", 0.5, "poll")


def test_each_poll_is_counted_and_the_server_clock_sees_each_answer(rig, clock):
    h = rig.handle(job_id="j")
    job = {"status": "in-progress", "progress": 0.3}
    rig.http.answer("/jobs/j", {"job": job})
    rig.poller._ask(h)
    assert rig.live.polls("req_1") == 1 and rig.server_clock.seen == [(job, clock.wall)]
    assert rig.live.last_sample("req_1") == (clock.wall, 0.3)


def test_a_job_the_api_no_longer_knows_fails_and_hands_over(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", NotFoundError("gone"))
    rig.timing.replacements = [rig.handle("req_2", job_id="k")]
    rig.poller._ask(h)
    assert h.done and isinstance(h.exception, JobFailedError)
    assert (h.exception.job_id, h.exception.error, h.exception.hint) == (
        "j", "the API no longer knows this job",
        "it may belong to another project, or to a sandbox that stopped")
    row = rig.row(h)
    assert (row.status, row.error) == ("failure", str(h.exception))
    assert rig.lanes.plan() == [("req_2", 0.5, "poll")]


@pytest.mark.parametrize("polls, attempt", [(1, 1), (4, 4), (6, 4)])
def test_a_failed_poll_is_asked_again_at_the_backoffs_delay(rig, log_lines, polls, attempt):
    h = rig.handle(job_id="j")
    rig.live._polls["req_1"] = polls - 1
    rig.http.answer("/jobs/j", ServerError("busy"))
    rig.poller._ask(h)
    assert rig.http.backoff.asked == [(attempt, None, 0.5, 6.0)]
    assert rig.lanes.plan() == [("req_1", 100.0 + attempt, "poll")]
    assert not h.done and log_lines == [f"poll of j failed ({ServerError('busy')}); trying again"]


def test_a_poll_refused_for_a_rate_waits_the_servers_retry_after(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", RateLimitError("slow", retry_after=12.0))
    rig.poller._ask(h)
    assert rig.http.backoff.asked == [(1, 12.0, 0.5, 6.0)]


def test_an_answer_without_a_status_keeps_the_handles(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", {"job": {"progress": 0.5}})
    rig.poller._ask(h)
    assert h.status == "queued" and rig.lanes.plan() == [("req_1", 7.0, "poll")]


def test_a_running_job_is_shown_sampled_and_polled_at_the_next_delay_its_followers_sooner(rig, clock):
    h = rig.handle(job_id="j")
    follower = rig.handle("req_2", job_id="k")
    rig.live.new_poll("req_2", 50.0)
    rig.timing.followers = [(follower, clock.wall + 2.0)]
    seen = []
    h.on_update(lambda g: seen.append(g.progress))
    seen.clear()
    rig.http.answer("/jobs/j", {"job": {"status": "in-progress", "progress": 0.4}})
    rig.poller._ask(h)
    assert seen == [0.4] and h.status == "in-progress"
    assert rig.row(h) is None  # live state, not history
    assert rig.lanes.plan() == [("req_1", 7.0, "poll"), ("req_2", 2.0, "poll")]
    assert ("follower_dues", "req_1") in rig.timing.asked


def test_an_answer_after_another_poll_saw_success_is_dropped(rig):
    h = rig.handle(job_id="j")
    rig.live.claim_answer("req_1", success=True)
    rig.http.answer("/jobs/j", {"job": {"status": "in-progress", "progress": 0.4}})
    rig.poller._ask(h)
    assert h.progress == 0.0 and rig.lanes.tasks == [] and rig.live.last_sample("req_1") is None


def test_a_success_is_claimed_completed_on_the_fetch_lane_and_wakes_its_siblings(rig, clock):
    h = rig.handle(job_id="j")
    sibling = rig.handle("req_2", job_id="k")
    rig.timing.wake = 30.0
    rig.timing.siblings = [(sibling, clock.wall + 1.0)]
    job = {"status": "success", "progress": 1}
    rig.http.answer("/jobs/j", {"job": job})
    rig.poller._ask(h)
    assert rig.live.is_completing("req_1")
    assert ("sibling_dues", "req_1", 30.0) in rig.timing.asked
    assert rig.lanes.plan() == [("req_2", 1.0, "poll"), ("req_1", 0.0, "fetch")]
    rig.lanes.run(1)
    assert rig.completed == [("req_1", job)]
    assert not h.done  # the completer ends it


def test_a_success_that_teaches_nothing_wakes_no_sibling(rig, clock):
    h = rig.handle(job_id="j")
    rig.timing.siblings = [(rig.handle("req_2", job_id="k"), clock.wall)]
    rig.http.answer("/jobs/j", {"job": {"status": "success"}})
    rig.poller._ask(h)
    assert rig.lanes.plan() == [("req_1", 0.0, "fetch")]
    assert not any(a[0] == "sibling_dues" for a in rig.timing.asked)


@pytest.mark.parametrize("status", ["failure", "canceled"])
def test_a_failed_or_canceled_job_ends_with_the_servers_error_and_hands_over(rig, status):
    h = rig.handle(job_id="j")
    rig.timing.replacements = [rig.handle("req_2", job_id="k")]
    rig.http.answer("/jobs/j", {"job": {"status": status, "metadata": {"error": "nsfw", "hint": "rephrase"}}})
    rig.poller._ask(h)
    assert h.done and isinstance(h.exception, JobFailedError)
    assert (h.exception.job_id, h.exception.error, h.exception.hint, h.exception.status) == (
        "j", "nsfw", "rephrase", status)
    assert (rig.row(h).status, rig.row(h).error) == (status, "nsfw")
    assert rig.lanes.plan() == [("req_2", 0.5, "poll")]


def test_a_failed_job_without_error_or_hint_has_empty_ones(rig):
    h = rig.handle(job_id="j")
    rig.http.answer("/jobs/j", {"job": {"status": "failure"}})
    rig.poller._ask(h)
    assert (h.exception.error, h.exception.hint) == ("", "")


# -- Poller._poll_by --------------------------------------------------------------------------------------------

def test_a_job_is_woken_at_its_due_time_when_that_is_sooner_than_its_poll(rig, clock):
    rig.settings.floor = 1.0
    early, late, none, recent = (rig.handle(f"r{i}", job_id=f"j{i}") for i in range(4))
    rig.live.new_poll("r0", 10.0)  # due in 10: woken at 2 (10 > 2 + 1 + 1)
    rig.live.new_poll("r1", 3.25)  # due at 3.25: not woken at 2 (3.25 > 0.25 + 2 + 1 is false)
    rig.live.sample("r3", 0.1)  # sampled just now: not within a floor
    clock.advance(0.25)
    rig.poller._poll_by([(early, clock.wall + 2.0), (late, clock.wall + 2.0), (none, clock.wall - 5.0),
                         (recent, clock.wall)])
    assert rig.lanes.plan() == [("r0", 2.0, "poll"), ("r2", 0.0, "poll"), ("r3", 0.75, "poll")]


def test_a_job_due_just_after_its_poll_less_a_floor_is_woken(rig, clock):
    rig.settings.floor = 1.0
    h = rig.handle("r0", job_id="j0")
    rig.live.new_poll("r0", 3.5)
    rig.poller._poll_by([(h, clock.wall + 2.0)])  # 3.5 > 2 + 1
    assert rig.lanes.plan() == [("r0", 2.0, "poll")]


# -- LiveRequests --------------------------------------------------------------------------------------------------

def a_handle(request_id="r", job_id=None, done=False) -> Generation:
    h = Generation(model_id="m", request_id=request_id, prompt="p", status="queued")
    h._set(job_id=job_id)
    if done:
        h._finish(None, "success")
        h._settle()
    return h


def test_live_handles_are_kept_in_order_and_by_job(live):
    a, b, c = a_handle("a"), a_handle("b", done=True), a_handle("c")
    live.add(a)
    live.add(b)
    live.bind_job("job_c", c)
    assert live.get("a") is a and live.get("x") is None
    assert live.in_flight() == [a, c] and live.matching(lambda h: True) == [a, b, c]
    assert live.for_job("job_c") is c and live.for_job("job_x") is None
    assert live.knows_job("job_c") and not live.knows_job("job_x")
    live.know_job("job_y")
    assert live.knows_job("job_y") and live.for_job("job_y") is None


def test_a_forgotten_request_drops_its_bookkeeping_but_its_job_stays_known(live, clock):
    h = a_handle("r", job_id="j")
    live.bind_job("j", h)
    live.track("r")
    live.new_poll("r", 1.0)
    live.note_created("r", 3.0)
    live.count_poll("r")
    live.sample("r", 0.5)
    live.claim_answer("r", success=True)
    live.forget("r")
    live.forget("never")
    assert live.get("r") is None and live.due("r") is None and live.created("r") is None
    assert live.polls("r") == 0 and live.last_sample("r") is None and not live.is_completing("r")
    assert live.knows_job("j") and live.for_job("j") is h
    clock.advance(5)
    live.track("r")
    assert live.tracked_for("r") == 0.0  # starts afresh
    assert live.start_asking(h, live.new_poll("r", 0.0))


def test_an_untracked_request_has_been_followed_for_no_time(live, clock):
    assert live.tracked_for("r") == 0.0


def test_polls_are_counted_per_request(live):
    assert live.polls("r") == 0
    assert [live.count_poll("r"), live.count_poll("r"), live.count_poll("s")] == [1, 2, 1]
    assert live.polls("r") == 2


def test_each_new_poll_has_a_new_token_and_due_time(live, clock):
    first = live.new_poll("r", 2.0)
    second = live.new_poll("r", 3.0)
    assert second != first and live.due("r") == clock.mono + 3.0 and live.due("s") is None


def test_which_polls_may_ask(live):
    h = a_handle("r", job_id="j")
    token = live.new_poll("r", 0.0)
    assert not live.start_asking(h, token - 1 if token else token + 1)
    assert live.start_asking(h, token)
    assert not live.start_asking(h, None)  # one on the wire already
    live.done_asking("r")
    assert live.start_asking(h, None)  # a wake-up without a token
    live.done_asking("r")
    assert not live.start_asking(a_handle("x"), None)  # no job
    assert not live.start_asking(a_handle("y", job_id="k", done=True), None)
    live.claim_answer("r", success=True)
    assert not live.start_asking(h, token)


def test_a_first_token_of_zero_still_counts(live):
    h = a_handle("r", job_id="j")
    live._seq = iter([0, 1])
    token = live.new_poll("r", 0.0)
    assert token == 0 and live.start_asking(h, token)


def test_a_success_is_claimed_once(live):
    assert live.claim_answer("r", success=False) and not live.is_completing("r")
    assert live.claim_answer("r", success=True) and live.is_completing("r")
    assert not live.claim_answer("r", success=False)
    assert not live.claim_answer("r", success=True)


def test_samples_and_creations_are_kept_per_request(live, clock):
    live.sample("r", 0.25)
    live.note_created("r", 42.0)
    assert live.last_sample("r") == (clock.wall, 0.25) and live.last_sample("s") is None
    assert live.created("r") == 42.0 and live.created("s") is None


def test_the_settings_defaults():
    s = Settings()
    assert (s.floor, s.ceiling, s.job_timeout, s.search_seconds, s.target_quantile, s.start_grace) == (
        0.25, 5.0, 3600.0, 75.0, 0.7, 120.0)


def test_a_job_known_by_id_is_no_longer_found_once_nothing_holds_its_handle(live):
    import gc
    live.bind_job("j", a_handle("r", job_id="j"))
    live.forget("r")
    gc.collect()
    assert live.for_job("j") is None and live.knows_job("j")


# -- Completer ----------------------------------------------------------------------------------------------------

class Store:
    """A file store in a folder: what was put, and which keys it holds."""

    def __init__(self, root, fail: int = 0) -> None:
        self.root, self.fail = root, fail
        self.puts: list = []

    def path_for(self, key, mime="image/png"):
        ext = {"image/png": "png", "text/plain": "txt", "video/mp4": "mp4", "model/gltf-binary": "glb"}[mime]
        return self.root / f"{key}.{ext}"

    def has(self, key, mime="image/png"):
        return self.path_for(key, mime).is_file()

    def put(self, key, data, mime):
        self.puts.append((key, data, mime))
        if self.fail:
            self.fail -= 1
            raise StorageError("corrupt")
        self.path_for(key, mime).write_bytes(data)


class CompleterRig:
    def __init__(self, ledger, live, history, tmp_path) -> None:
        self.ledger, self.live, self.history = ledger, live, history
        self.lanes, self.http = Lanes(), Http()
        self.settings = Settings(ceiling=6.0)
        self.store = Store(tmp_path)
        self.completer = Completer(self.http, lambda: self.store, self.lanes, ledger, self.settings)

    def handle(self) -> Generation:
        h = Generation(model_id="m", request_id="req_1", prompt="p", status="queued", job_id="j")
        self.live.bind_job("j", h)
        return h

    def asset(self, key, url, mime="image/png", kind=None, seed=None):
        asset = {"url": url, "mimeType": mime}
        if kind:
            asset["kind"] = kind
        if seed is not None:
            asset["metadata"] = {"seed": seed}
        self.http.answer(f"/assets/{key}", {"asset": asset})


@pytest.fixture
def crig(ledger, live, history, tmp_path):
    return CompleterRig(ledger, live, history, tmp_path)


def test_every_output_is_read_downloaded_stored_and_the_handle_ended(crig, tmp_path):
    crig.asset("a1", "u1", seed="42")
    crig.asset("a2", "u2", mime="video/mp4", seed="x")
    crig.http.answer("u1", b"png1")
    crig.http.answer("u2", b"mp4")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1", 7, "a2"]}})
    assert crig.http.asked == ["/assets/a1", "/assets/a2"] and crig.http.downloads == ["u1", "u2"]
    assert h.outputs == [Output("a1", "image", "image/png", tmp_path / "a1.png"),
                         Output("a2", "video", "video/mp4", tmp_path / "a2.mp4")]
    assert h.seeds == [42, "x"] and h.text is None
    assert h.done and h.exception is None and h.status == "success"
    row = crig.history.get_request("req_1")
    assert (row.status, row.asset_ids, row.mime_types) == ("success", ["a1", "a2"], ["image/png", "video/mp4"])


def test_an_asset_stored_already_is_not_downloaded_and_its_kind_is_the_assets(crig, tmp_path):
    (tmp_path / "a1.glb").write_bytes(b"3d")
    crig.asset("a1", "u1", mime="model/gltf-binary", kind="3d-model")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}})
    assert crig.http.downloads == [] and crig.store.puts == []
    assert h.outputs == [Output("a1", "3d-model", "model/gltf-binary", tmp_path / "a1.glb")]


def test_an_asset_without_a_mime_type_is_a_png(crig, tmp_path):
    crig.http.answer("/assets/a1", {"asset": {"url": "u1"}})
    crig.http.answer("u1", b"png")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}})
    assert h.outputs == [Output("a1", "image", "image/png", tmp_path / "a1.png")] and h.seeds == [None]


def test_the_guides_shape_is_downloaded_by_url_once(crig, tmp_path):
    crig.http.answer("http://x/1.png", b"one")
    (tmp_path / "j-1.png").write_bytes(b"two")
    h = crig.handle()
    job = {"result": {"images": [{"url": "http://x/1.png"}, {"url": "http://x/2.png"}, "odd", {"url": ""}]}}
    crig.completer.complete(h, job)
    assert crig.http.downloads == ["http://x/1.png"] and crig.http.asked == []
    assert crig.store.puts == [("j-0", b"one", "image/png")]
    assert [o.asset_id for o in h.outputs] == ["j-0", "j-1"] and h.seeds == [None, None]
    assert h.outputs[0] == Output("j-0", "image", "image/png", tmp_path / "j-0.png")


def test_the_guides_shape_is_ignored_when_asset_ids_are_given(crig):
    crig.asset("a1", "u1")
    crig.http.answer("u1", b"png")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}, "result": {"images": [{"url": "http://x"}]}})
    assert [o.asset_id for o in h.outputs] == ["a1"]


def test_a_workflows_assets_are_read_from_its_flow_once_each(crig):
    for key in ("f1", "f2"):
        crig.asset(key, f"u_{key}")
        crig.http.answer(f"u_{key}", b"x")
    h = crig.handle()
    flow = [{"assets": [{"assetId": "f1"}, {"assetId": ""}, "odd"]}, "odd", {"assets": None},
            {"assets": [{"assetId": "f2"}, {"assetId": "f1"}]}]
    crig.completer.complete(h, {"metadata": {"flow": flow}})
    assert [o.asset_id for o in h.outputs] == ["f1", "f2"] and crig.http.asked == ["/assets/f1", "/assets/f2"]


def test_a_flows_assets_are_ignored_when_asset_ids_are_given(crig):
    crig.asset("a1", "u1")
    crig.http.answer("u1", b"png")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"], "flow": [{"assets": [{"assetId": "f1"}]}]}})
    assert [o.asset_id for o in h.outputs] == ["a1"]


@pytest.mark.parametrize("output, text", [
    ({"text": "hello"}, "hello"),
    ("plain", "plain"),
    ({"answer": 1}, '{\n  "answer": 1\n}'),
    ({"text": 3}, '{\n  "text": 3\n}'),
    (None, None),
    ("", ""),
])
def test_a_text_answer_is_read_from_the_output(crig, output, text):
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"output": output}})
    assert h.text == text and h.done and h.outputs == []


def test_text_assets_are_the_answer_before_the_output(crig, tmp_path):
    crig.asset("t1", "u1", mime="text/plain")
    crig.asset("t2", "u2", mime="text/plain", kind="text")
    crig.http.answer("u1", "one é".encode())
    crig.http.answer("u2", b"two \xff")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["t1", "t2"], "output": "ignored"}})
    assert h.text == "one é\n\ntwo \ufffd"
    assert crig.history.get_request("req_1").text == h.text


def test_asset_text_reads_text_kinds_and_text_mimes_that_are_on_disk(tmp_path):
    (tmp_path / "a").write_text("A")
    (tmp_path / "b").write_text("B")
    (tmp_path / "c").write_text("C")
    outputs = [Output("a", "text", "application/json", tmp_path / "a"), Output("b", "document", "text/csv",
                                                                               tmp_path / "b"),
               Output("c", "image", "image/png", tmp_path / "c"), Output("d", "text", "text/plain", tmp_path / "d")]
    assert _asset_text(outputs) == "A\n\nB"
    assert _asset_text(outputs[2:]) is None


def test_a_seed_is_a_number_when_it_can_be():
    assert (_seed("12"), _seed(7), _seed("x"), _seed(None)) == (12, 7, "x", None)


def test_a_refused_signed_url_is_renewed_three_times_then_given_up(crig):
    crig.http.answer("/assets/a1", {"asset": {"url": "u0"}}, *[{"asset": {"url": f"u{i}"}} for i in (1, 2, 3)])
    crig.http.answer("u0", PermissionDeniedError("expired"))
    crig.http.answer("u1", NotFoundError("gone"))
    crig.http.answer("u2", PermissionDeniedError("expired"))
    crig.http.answer("u3", b"png")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}})
    assert crig.http.downloads == ["u0", "u1", "u2", "u3"] and [o.asset_id for o in h.outputs] == ["a1"]
    crig2_refusals = [PermissionDeniedError("expired")] * 4
    crig.http.answers.clear()
    crig.http.downloads.clear()
    crig.http.answer("/assets/b1", *[{"asset": {"url": f"v{i}"}} for i in range(4)])
    for i in range(4):
        crig.http.answer(f"v{i}", crig2_refusals[i])
    h2 = Generation(model_id="m", request_id="req_2", prompt="p", status="queued", job_id="k")
    crig.completer.complete(h2, {"metadata": {"assetIds": ["b1"]}})
    assert crig.http.downloads == ["v0", "v1", "v2", "v3"]
    assert isinstance(h2.exception, DownloadFailedError) and h2.status == "success" and h2.outputs == []


def test_a_corrupt_download_is_fetched_once_more_from_a_fresh_url(crig, tmp_path):
    crig.store.fail = 1
    crig.http.answer("/assets/a1", {"asset": {"url": "u0"}}, {"asset": {"url": "u1"}})
    crig.http.answer("u0", b"bad")
    crig.http.answer("u1", b"good")
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}})
    assert crig.http.downloads == ["u0", "u1"] and (tmp_path / "a1.png").read_bytes() == b"good"
    assert crig.store.puts == [("a1", b"bad", "image/png"), ("a1", b"good", "image/png")]
    assert h.exception is None


@pytest.mark.parametrize("exc", [APIConnectionError("reset"), RateLimitError("slow", retry_after=4.0),
                                 ServerError("busy")])
def test_a_transient_failure_tries_the_whole_download_again_later(crig, log_lines, exc):
    crig.asset("a1", "u1")
    crig.http.answer("u1", exc)
    h = crig.handle()
    job = {"metadata": {"assetIds": ["a1"]}}
    crig.completer.complete(h, job, attempt=2)
    assert not h.done and log_lines == [f"downloading the outputs of j failed ({exc}); trying again"]
    assert crig.http.backoff.asked == [(2, getattr(exc, "retry_after", None), None, 6.0)]
    assert crig.lanes.plan() == [("req_1", 102.0, "fetch")]
    crig.asset("a1", "u1")
    crig.http.answer("u1", exc)
    crig.lanes.run()
    assert crig.http.backoff.asked[-1][0] == 3  # the next attempt


def test_the_ninth_transient_failure_ends_the_paid_job_without_outputs(crig):
    crig.asset("t1", "u1", mime="text/plain")
    crig.asset("a1", "u2")
    crig.http.answer("u1", b"words")
    crig.http.answer("u2", ServerError("busy"))
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["t1", "a1"], "output": "o"}}, attempt=8)
    assert crig.lanes.tasks == [] and h.done and h.outputs == [] and h.text == "words"
    assert isinstance(h.exception, DownloadFailedError) and h.exception.job_id == "j"
    assert "busy" in str(h.exception)
    row = crig.history.get_request("req_1")
    assert (row.status, row.asset_ids) == ("success", [])


def test_the_eighth_try_is_still_scheduled(crig):
    crig.asset("a1", "u1")
    crig.http.answer("u1", ServerError("busy"))
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}}, attempt=7)
    assert not h.done and len(crig.lanes.tasks) == 1


def test_a_lasting_failure_ends_the_paid_job_at_once_with_the_output_text(crig):
    crig.http.answer("/assets/a1", PermissionDeniedError("no"))
    h = crig.handle()
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"], "output": "the text"}})
    assert crig.lanes.tasks == [] and h.done and h.text == "the text" and h.outputs == []
    assert isinstance(h.exception, DownloadFailedError) and h.status == "success"
    assert h.exception.job_id == "j"
    assert crig.history.get_request("req_1").status == "success"


def test_a_job_without_an_id_fails_its_download_with_an_empty_one(crig):
    crig.http.answer("/assets/a1", PermissionDeniedError("no"))
    h = Generation(model_id="m", request_id="req_1", prompt="p", status="queued")
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}})
    assert h.exception.job_id == ""
    crig.http.answer("/assets/a1", ServerError("no"))
    h = Generation(model_id="m", request_id="req_2", prompt="p", status="queued")
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}}, attempt=9)
    assert h.exception.job_id == ""


def test_stored_outputs_are_where_the_store_keeps_them(crig, tmp_path):
    row = JobRecord("req_1", status="success", asset_ids=["a", "b"], mime_types=["video/mp4", "text/plain"])
    assert crig.completer.stored_outputs(row) == [Output("a", "video", "video/mp4", tmp_path / "a.mp4"),
                                                  Output("b", "text", "text/plain", tmp_path / "b.txt")]
    old = JobRecord("req_2", status="success", asset_ids=["c", "d"])
    assert [o.path for o in crig.completer.stored_outputs(old)] == [tmp_path / "c.png", tmp_path / "d.png"]


def test_outputs_are_stored_when_every_file_of_a_successful_row_is_there(crig, tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    assert crig.completer.outputs_stored(JobRecord("r", status="success", asset_ids=["a"]))
    assert not crig.completer.outputs_stored(JobRecord("r", status="success", asset_ids=["a", "b"]))
    assert not crig.completer.outputs_stored(JobRecord("r", status="failure", asset_ids=["a"]))
    assert not crig.completer.outputs_stored(JobRecord("r", status="success"))
    assert crig.completer.outputs_stored(JobRecord("r", status="success", text=""))


def test_a_poll_soon_without_a_servers_wait_is_due_now(rig, clock):
    h = rig.handle(job_id="j")
    rig.poller.poll_soon(h)
    assert rig.lanes.plan() == [("req_1", 0.0, "poll")] and rig.live.due("req_1") == clock.mono


def test_a_job_overdue_is_not_woken_when_its_poll_is_within_a_floor(rig, clock):
    rig.settings.floor = 1.0
    h = rig.handle("r0", job_id="j0")
    rig.live.new_poll("r0", 0.5)
    rig.poller._poll_by([(h, clock.wall - 5.0)])  # due long ago: now, and 0.5 is not > 0 + 1
    assert rig.lanes.plan() == []


def test_a_poll_scheduled_before_the_request_was_forgotten_no_longer_counts(live):
    h = a_handle("r", job_id="j")
    token = live.new_poll("r", 0.0)
    live.forget("r")
    assert not live.start_asking(h, token)


def test_a_first_transient_failure_is_attempt_zero(crig):
    crig.asset("a1", "u1")
    crig.http.answer("u1", ServerError("busy"))
    crig.completer.complete(crig.handle(), {"metadata": {"assetIds": ["a1"]}})
    assert crig.http.backoff.asked == [(0, None, None, 6.0)]


def test_outputs_given_up_on_are_none_even_on_a_handle_that_had_some(crig, tmp_path):
    crig.asset("a1", "u1")
    crig.http.answer("u1", ServerError("busy"))
    h = crig.handle()
    h._set(outputs=[Output("old", "image", "image/png", tmp_path / "old.png")])
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}}, attempt=8)
    assert h.done and h.outputs == []


def test_a_row_whose_asset_ids_and_types_differ_in_length_is_an_error(crig):
    with pytest.raises(ValueError):
        crig.completer.stored_outputs(JobRecord("r", status="success", asset_ids=["a", "b"],
                                                mime_types=["image/png"]))


def test_a_lasting_failure_drops_outputs_a_handle_had_and_names_its_cause(crig, tmp_path):
    refusal = PermissionDeniedError("no")
    crig.http.answer("/assets/a1", refusal)
    h = crig.handle()
    h._set(outputs=[Output("old", "image", "image/png", tmp_path / "old.png")])
    crig.completer.complete(h, {"metadata": {"assetIds": ["a1"]}})
    assert h.outputs == [] and h.exception.error == str(refusal)


def test_text_assets_are_read_as_utf8_whatever_the_locale(tmp_path):
    import locale
    (tmp_path / "t").write_bytes("é".encode())
    before = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")  # ASCII: a default decoding would make "é" two unknowns
        assert _asset_text([Output("t", "text", "text/plain", tmp_path / "t")]) == "é"
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
