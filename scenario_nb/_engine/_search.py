"""The lost-answer search: a request whose answer was lost may have created (and been charged for) a job.

It is looked for in `GET /jobs` for at least `search_seconds` (the API lists new jobs late) before it is
called unknown, and never called "not charged" unless the server proved it. A job found is adopted: followed
like any other.

Found by content and by time: a job with the request's model and inputs, owned by no other request, that the
server created after the request's intent was recorded (by the server's clock: how far ahead this machine's clock
may be is learned from answers, `ServerClock`), the earliest such. Never an older identical job: that one is
another request's (an earlier run's, another machine's), even if nothing here knows it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from .._errors import OutcomeUnknownError, ScenarioError, StorageError
from .._generation import Generation, parse_time
from .._http import Transport
from .._paging import paged
from ._lanes import Lanes
from ._ledger import Ledger
from ._live import LiveRequests, Settings
from ._timing import ServerClock

log = logging.getLogger("scenario_nb")


class LostAnswerSearch:
    """Looks for the job of a request whose answer was lost, and hands it to `adopt` when found."""

    def __init__(self, http: Transport, lanes: Lanes, live: LiveRequests, ledger: Ledger, settings: Settings, *,
                 adopt: Callable[[Generation, dict], Any], server_clock: Optional[ServerClock] = None) -> None:
        self._http = http
        self._server_clock = server_clock or ServerClock()
        self._lanes = lanes
        self._live = live
        self._ledger = ledger
        self._settings = settings
        self._adopt = adopt  # follows a job found for the request

    def look_for(self, handle: Generation, delay: float = 0.0) -> None:
        """Start looking for the request's job in `delay` seconds (on the poll lane)."""
        self._lanes.schedule(handle, delay, self._reconcile)

    def _reconcile(self, handle: Generation) -> None:
        """Look for the job a request whose answer was lost may have created; adopt it when found."""
        if handle.done and handle.status != "unknown":
            return
        sent = handle.sent_at or handle.submitted_at
        earliest = self._server_clock.earliest_job(handle.submitted_at or sent)  # the intent, on the server's clock
        try:
            found = self._find_job(handle, earliest)
        except ScenarioError as exc:
            log.info("looking for the job of %s failed (%s); trying again", handle.request_id, exc)
            found = None
        if found is not None:
            if handle.done:
                handle._reopen()
            handle._set(note="its answer was lost, and its job was found and adopted")
            self._adopt(handle, found)
            return
        elapsed = self._settings.clock.time() - sent
        if elapsed < self._settings.search_seconds:
            self.look_for(handle, min(8.0, max(1.0, elapsed / 4)))
        elif not handle.done:
            self._ledger.end(handle, OutcomeUnknownError(
                f"the request for {handle.model_name} was sent but its answer was lost, and no job for it has "
                f"shown up yet: it may or may not have been created (and charged). It stays in the history as "
                f"'unknown' (request {handle.request_id}); %scenario status or running the same cell again "
                f"adopts the job if it appears"), status="unknown")

    def _find_job(self, handle: Generation, earliest: float) -> Optional[dict]:
        """The earliest job created after `earliest` (server time) whose echoed input is this request, not owned
        by another request: one followed here, or one the history gives to another request (an identical
        request sent on purpose, perhaps by an earlier kernel, whose job is listed before this one's).

        `metadata.input` echoes the body as sent: a LoRA run through its base model echoes the LoRA's id as
        `modelId`; other models may echo the URL's model, or none.
        """
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(earliest)) + f".{int(earliest % 1 * 1000):03d}Z"
        own_ids = {handle.model_id, handle.run_model_id, None}
        wanted = {k: v for k, v in handle.inputs.items() if k != "modelId"}
        candidates: list[tuple[float, dict]] = []
        arrived = [self._settings.clock.time()]

        def get(path: str, **params: Any) -> dict:
            page = self._http.get(path, **params)
            arrived[0] = self._settings.clock.time()  # when this page came: the server clock's reading for its rows
            return page

        for row in paged(get, "/jobs", "jobs", {"createdAfter": since, "pageSize": 100}):
            self._server_clock.saw(row, arrived[0])
            job_id: Any = row.get("jobId") or row.get("id")
            meta = row.get("metadata") or {}
            echoed = meta.get("input") or {}
            created = parse_time(row.get("createdAt"))
            if self._live.knows_job(job_id) or (created is not None and created <= earliest):
                continue  # another request's, or made before this request's intent: never this one's
            same_model = echoed.get("modelId") in own_ids or meta.get("workflowId") == handle.run_model_id
            if same_model and all(echoed.get(k) == v for k, v in wanted.items()):
                candidates.append((created if created is not None else float("inf"), row))
        for _, row in sorted(candidates, key=lambda c: c[0]):  # the earliest: the one sent right after the intent
            if not self._owned_by_another(str(row.get("jobId") or row.get("id")), handle):
                return row
        return None

    def _owned_by_another(self, job_id: str, handle: Generation) -> bool:
        """The history gives this job to another request (then it is known here from now on)."""
        try:
            row = self._ledger.history.get(job_id)
        except StorageError:  # unreadable: only the jobs followed here are known
            return False
        if row is None or row.request_id == handle.request_id:
            return False
        self._live.know_job(job_id)
        return True
