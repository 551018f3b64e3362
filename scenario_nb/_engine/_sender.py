"""The sender: each request recorded, then sent exactly once, or held here in order behind the rate limit.

A request refused with 429 waits here until the transport's creation gate opens (and, once a 429 named the
account's parallel-job limit, until one of our jobs ends); polls never wait on it. The queue is drained on
the send lane, oldest first; one request that fails in an unexpected way ends on its own (recorded as
"unknown") and never stops the requests behind it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from .._errors import (APIConnectionError, APIError, InputError, OutcomeUnknownError, RateLimitError,
                       SubmitFailedError)
from .._generation import Generation
from .._history import new_request_id
from .._http import Transport, UncertainSubmit
from ._lanes import Lanes
from ._ledger import Ledger
from ._live import LiveRequests, Settings

log = logging.getLogger("scenario_nb")

HOLD_CHECK = 0.05  # how often requests held for a free parallel-job slot look again (a local check, no request)
PROBE_SECONDS = 60.0  # after this long with no 429 naming the parallel-job limit, one more job is tried


class JobSlots:
    """The account's parallel-job limit as the last 429 named it (`actionLimit`): kept for a while, then probed
    again, one more job per quiet while (PROBE_SECONDS with no 429 naming it), so an account that allows more
    again gets more. A probe too many costs one 429: that request waits here, in order, not charged."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._named: Optional[tuple[int, float]] = None  # (the limit a 429 named, when)
        self._lock = threading.Lock()

    def learned(self, limit: int) -> None:
        """A 429 named the limit: it holds from now on, for a while."""
        with self._lock:
            self._named = (limit, self.clock())

    def limit(self) -> Optional[int]:
        """How many of our generations may run at once (None: no 429 has named a limit)."""
        with self._lock:
            if self._named is None:
                return None
            limit, since = self._named
        return limit + int(max(0.0, self.clock() - since) // PROBE_SECONDS)


class Sender:
    """Sends creation requests on the send lane and keeps the 429 hold queue."""

    def __init__(self, http: Transport, lanes: Lanes, live: LiveRequests, ledger: Ledger, settings: Settings, *,
                 adopt: Callable[..., Any], look_for: Callable[[Generation, float], None]) -> None:
        self._http = http
        self._lanes = lanes
        self._live = live
        self._ledger = ledger
        self._settings = settings
        self._adopt = adopt  # follows the job a request created: adopt(handle, job, cost, created=True)
        self._look_for = look_for  # looks for the job of a request whose answer was lost
        self._lock = threading.Lock()
        self._waiting: deque = deque()  # handles refused with 429, sent in order once the gate opens
        self._draining = False
        # the parallel-job limit a 429 named (`actionLimit`), once one did
        self._slots = JobSlots(settings.clock.monotonic)

    def submit(self, handle: Generation) -> None:
        """Record the request (`StorageError`: nothing is sent), then send it, or hold it here if it must wait.
        Its `_answered` event is set once it has an answer (a job, a hold, or a lost answer)."""
        if self._lanes.closed:
            raise SubmitFailedError("this client was closed (the session switched backend or the kernel is "
                                    "stopping): nothing was sent")
        try:  # a body that is no JSON (NaN, infinity, an object) can never be sent: refused before the ledger
            json.dumps(handle.inputs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"the request for {handle.model_name} cannot be written as JSON ({exc}); nothing was "
                             f"sent") from None
        handle.request_id = handle.request_id or new_request_id()
        handle.submitted_at = self._settings.clock.time()
        waits = self._http.creation_gate.remaining() > 0 or bool(self.waiting()) or self._full(handle)
        handle._set(status="waiting" if waits else "sending")
        self._ledger.record(handle, before_sending=True)  # raises StorageError: nothing is sent
        self._live.add(handle)
        if waits:
            self._enqueue(handle)
            handle._answered.set()  # held here: its answer is "not yet", and the caller need not wait
            return
        self._lanes.schedule(handle, 0.0, self._send, lane="send")

    def waiting(self) -> list[Generation]:
        """Requests held here by the rate limit: not sent, not charged."""
        with self._lock:
            return [h for h in self._waiting if not h.done]

    def drop(self, handle: Generation) -> bool:
        """Take a held request out of the queue (it will never be sent); False if it was not held here."""
        with self._lock:
            if handle not in self._waiting:
                return False
            self._waiting.remove(handle)
            return True

    def _send(self, handle: Generation) -> None:
        """A send-lane task: send now, unless a 429 closed the creation gate since it was queued."""
        try:
            if self._http.creation_gate.remaining() > 0 or self.waiting() or self._full(handle):
                self._ledger.mark(handle, "waiting")
                self._enqueue(handle)
                return
            self._send_once(handle)
        except Exception as exc:  # never leave a request without an outcome
            self._failed_while_sending(handle, exc)
        finally:
            handle._answered.set()

    def _failed_while_sending(self, handle: Generation, exc: Exception) -> None:
        """An unexpected failure (a bug, an odd answer) while sending: the request ends "unknown", recorded."""
        log.exception("sending %s failed", handle.request_id)
        self._ledger.end(handle, OutcomeUnknownError(f"the request for {handle.model_name} failed while being sent "
                                                     f"({exc}); %scenario status shows whether a job appeared"),
                         status="unknown")

    def _send_once(self, handle: Generation) -> str:
        """POST (or PUT) the request exactly once: "created", "waiting", "unknown" or "not-sent"."""
        path = (f"/workflows/{handle.run_model_id}/run" if handle.kind == "workflow"
                else f"/generate/custom/{handle.run_model_id}")
        handle._set(status="sending", sent_at=self._settings.clock.time())
        try:
            data = self._http.create("PUT" if handle.kind == "workflow" else "POST", path, handle.inputs)
        except RateLimitError as exc:  # nothing was created: it waits here, in order, for the gate to open
            body = exc.body if isinstance(exc.body, dict) else {}
            if body.get("actionName") == "parallelCustomJobs" and isinstance(body.get("actionLimit"), int):
                self._slots.learned(body["actionLimit"])
            self._ledger.mark(handle, "waiting")
            self._enqueue(handle)
            return "waiting"
        except UncertainSubmit:  # it may have created a job: look for it
            self._ledger.mark(handle, "unknown")
            self._look_for(handle, 0.5)
            return "unknown"
        except (APIError, APIConnectionError) as exc:  # a 4xx, or never sent: provably no job
            error = exc if isinstance(exc, APIError) else SubmitFailedError(
                f"the request for {handle.model_name} never reached the API ({exc}); nothing was charged")
            self._ledger.end(handle, error, status="not-sent")
            return "not-sent"
        job = data.get("job") or {}
        if not (job.get("jobId") or job.get("id")):  # an answer without a job id: as good as lost
            self._ledger.mark(handle, "unknown")
            self._look_for(handle, 0.5)
            return "unknown"
        self._adopt(handle, job, data.get("creativeUnitsCost"), created=True)
        return "created"

    def _enqueue(self, handle: Generation) -> None:
        with self._lock:
            if handle not in self._waiting:
                self._waiting.append(handle)
            start, self._draining = not self._draining, True
        if start:
            self._lanes.schedule(None, self._http.creation_gate.remaining(), self._drain, lane="send")

    def _drain(self, _: Any = None) -> None:
        """Send waiting requests one by one, oldest first, while the creation gate is open."""
        while True:
            with self._lock:
                while self._waiting and self._waiting[0].done:
                    self._waiting.popleft()
                if not self._waiting or self._lanes.closed:
                    self._draining = False
                    return
                handle = self._waiting[0]
            wait = self._http.creation_gate.remaining()
            if wait > 0:
                self._lanes.schedule(None, wait, self._drain, lane="send")
                return
            if self._full(handle):  # every slot the last 429 named is ours and busy: send when one of ours ends
                self._lanes.schedule(None, HOLD_CHECK, self._drain, lane="send")
                return
            with self._lock:
                self._waiting.popleft()
            try:
                outcome = self._send_once(handle)
            except Exception as exc:  # one odd answer ends its own request, never the queue behind it
                self._failed_while_sending(handle, exc)
                continue
            if outcome == "waiting":  # refused again: it went back to the end; keep order
                with self._lock:
                    self._waiting.remove(handle)
                    self._waiting.appendleft(handle)
                self._lanes.schedule(None, self._http.creation_gate.remaining() or self._settings.floor,
                                     self._drain, lane="send")
                return

    def _full(self, handle: Generation) -> bool:
        """A generation would meet the parallel-job limit a 429 named: as many of our jobs are running or being
        sent. (Jobs of other clients on the account count too, server-side; then a 429 says so and we back off.)"""
        slots = self._slots.limit()
        if slots is None or handle.kind != "generation":
            return False
        live = self._live
        running = live.matching(lambda h: h is not handle and h.kind == "generation" and not h.done and
                                bool(h.job_id or h.status in ("sending", "unknown")) and
                                not live.is_completing(h.request_id))  # being sent: a job in a moment
        return len(running) >= slots
