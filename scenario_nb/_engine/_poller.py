"""The poller: follows each job the engine knows, one GET at a time, until it ends.

A poll is one GET, never retried in place: a failed one is asked again later, when the transport's backoff
policy says, and never before the server's Retry-After for that job's URL, whichever path schedules it. When
to ask is the timing model's call (`PollTiming`); a success is handed to the completer on the fetch lane, and
every other end is written in the ledger.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from .._errors import JobFailedError, JobTimeoutError, NotFoundError, RateLimitError, ScenarioError
from .._generation import Generation, parse_cost, parse_time
from .._http import Transport
from ._lanes import Lanes
from ._ledger import Ledger
from ._live import LiveRequests, Settings
from ._timing import PollTiming, ServerClock

log = logging.getLogger("scenario_nb")


class Poller:
    """Adopts jobs (their id recorded first) and polls each near its predicted end until it ends."""

    def __init__(self, http: Transport, lanes: Lanes, live: LiveRequests, timing: PollTiming, ledger: Ledger,
                 settings: Settings, *, complete: Callable[[Generation, dict], None],
                 server_clock: Optional[ServerClock] = None) -> None:
        self._http = http
        self._server_clock = server_clock or ServerClock()  # learns from every job answer how far ahead we are
        self._lanes = lanes
        self._live = live
        self._timing = timing
        self._ledger = ledger
        self._settings = settings
        self._complete = complete  # stores a succeeded job's outputs and ends its handle (on the fetch lane)

    def adopt(self, handle: Generation, job: dict, cost: Any = None, *, created: bool = False) -> None:
        """The job exists: remember its id (history first), then follow it.

        The id is set before anything else is read from the answer, and recorded whatever that reading does:
        a paid job is never left untracked by an odd field next to its id."""
        job_id = str(job.get("jobId") or job.get("id"))
        self._live.bind_job(job_id, handle)
        handle._set(job_id=job_id)
        arrived = self._settings.clock.time()
        try:
            handle._set(cost=parse_cost(cost) if cost is not None else handle.cost)
            server_created = parse_time(job.get("createdAt"))
            if created:  # this answer's arrival is the job's creation on our clock (it has no status history yet)
                self._server_clock.created(job, arrived)
                self._live.note_created(handle.request_id, arrived)
                if server_created:
                    handle._set(server_offset=arrived - server_created)
            handle._apply(job)
        finally:
            self._ledger.record(handle)
        handle._notify()
        self.track(handle)

    def track(self, handle: Generation) -> None:
        """Follow a live job from now on (its job-timeout clock starts at its first tracking)."""
        self._live.track(handle.request_id)
        self._schedule_poll(handle, self._timing.next_delay(handle))

    def poll_soon(self, handle: Generation) -> None:
        self._schedule_poll(handle, 0.0)

    def _schedule_poll(self, handle: Generation, delay: float) -> None:
        delay = max(delay, self._http.backoff.held(f"{self._http.base_url}/jobs/{handle.job_id}"))
        token = self._live.new_poll(handle.request_id, delay)
        self._lanes.schedule(handle, delay, self._poll, token)

    def _poll(self, handle: Generation, token: Optional[int] = None) -> None:
        if not self._live.start_asking(handle, token):
            return
        try:
            self._ask(handle)
        finally:
            self._live.done_asking(handle.request_id)

    def _ask(self, handle: Generation) -> None:
        assert handle.job_id is not None
        settings = self._settings
        if self._live.tracked_for(handle.request_id) > settings.job_timeout:
            self._ledger.end(handle, JobTimeoutError(handle.job_id, settings.job_timeout), record=False)
            self._hand_over(handle)
            return
        polls = self._live.count_poll(handle.request_id)
        try:
            job = self._http.get_once(f"/jobs/{handle.job_id}")["job"]
            self._server_clock.saw(job, self._settings.clock.time())
        except NotFoundError:
            self._ledger.end(handle, JobFailedError(handle.job_id, "the API no longer knows this job",
                                                    "it may belong to another project, or to a sandbox that "
                                                    "stopped"), status="failure")
            self._hand_over(handle)
            return
        except ScenarioError as exc:  # transient (a poll is never retried in place): ask again later, never
            log.info("poll of %s failed (%s); trying again", handle.job_id, exc)  # lose the job
            waited = exc.retry_after if isinstance(exc, RateLimitError) else None  # the server's own wait
            self._schedule_poll(handle, self._http.backoff.delay(min(polls, 4), waited, base=settings.floor,
                                                                 cap=settings.ceiling))
            return
        status = str(job.get("status") or handle.status)
        # Decide on this answer's own status: the first to see success completes the job.
        if not self._live.claim_answer(handle.request_id, success=status == "success"):
            return
        # Statuses between the job's creation and its end are live state, not history: the row written when the
        # job was named already makes a new kernel follow it on, and the end is written with the outputs.
        handle._apply(job)
        self._live.sample(handle.request_id, handle.progress)
        handle._notify()
        if status == "success":
            wake = self._timing.learn_success(handle)
            if wake is not None:
                self._poll_by(self._timing.sibling_dues(handle, wake))
            self._lanes.schedule(handle, 0.0, lambda h: self._complete(h, job), lane="fetch")
        elif status in ("failure", "canceled"):
            self._ledger.end(handle, JobFailedError(handle.job_id, handle.error or "", handle.hint or "",
                                                    handle.status))
            self._hand_over(handle)
        else:
            self._schedule_poll(handle, self._timing.next_delay(handle))
            self._poll_by(self._timing.follower_dues(handle))

    def _poll_by(self, dues: list[tuple[Generation, float]]) -> None:
        """Ask about each (job, due time) at its due time if that is sooner than it would be asked anyway, so
        N successes (or N lessons) never make N² polls."""
        floor = self._settings.floor
        now, clock = self._settings.clock.time(), self._settings.clock.monotonic()
        sooner = []
        for handle, due in dues:
            last = (self._live.last_sample(handle.request_id) or (0.0,))[0]  # never twice within the floor
            delay = max(0.0, due - now, last + floor - now)
            scheduled = self._live.due(handle.request_id)
            if (float("inf") if scheduled is None else scheduled) > clock + delay + floor:
                sooner.append((handle, delay))
        for handle, delay in sooner:
            self._schedule_poll(handle, delay)

    def _hand_over(self, gone: Generation) -> None:
        """A scout ended without a success: the earliest-sent followers take its place and probe at once."""
        for follower in self._timing.replace_scout(gone):
            self._schedule_poll(follower, self._settings.floor)
