"""The engine: sends each request once, follows its job, stores its outputs and records every step.

One engine per client, a few daemon worker threads whatever the number of jobs. The history is a
write-ahead ledger: a request is recorded before it leaves, its job id as soon as it is known, and its end
with its outputs; if the history cannot be written, nothing is sent.

Each job is polled near its predicted completion rather than on a fixed beat: from the model's recent
server-side durations (their 70th percentile: asking a little late costs less than asking twice), else the
job's own progress rate, else a probe never more than ~20 % late. Jobs sent together finish together: when
the first of a model's jobs finishes, its siblings are polled at once; once the model's duration is known,
each sibling is asked when that says (one job's jitter moves none of the others). A poll is one GET, never
retried in place: a failed one is asked again later (after the server's Retry-After, if it gave one).
A request refused with 429 waits here, in order, until the creation gate opens; polls never wait on it.
A request whose answer was lost is looked for in `GET /jobs` for at least a minute before it is called
unknown, and never called "not charged" unless the server proved it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
import weakref
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._errors import (APIConnectionError, APIError, BadRequestError, DownloadFailedError, JobFailedError,
                      JobTimeoutError, NotFoundError, OutcomeUnknownError, PermissionDeniedError, RateLimitError,
                      ScenarioError, ServerError, StorageError, SubmitFailedError)
from ._generation import CANCEL_WORDS, Generation, Output, kind_of, parse_time
from ._history import TRAINING_TERMINAL, History, JobRecord, TrainingRecord, new_request_id
from ._http import Transport, UncertainSubmit
from ._training import CANCEL_WORDS as TRAINING_CANCEL_WORDS, Training, TrainingImage

if TYPE_CHECKING:
    from pathlib import Path

    from ._models import Model
    from ._store import FileStore

log = logging.getLogger("scenario_nb")

SEARCH_SECONDS = 75.0  # how long a lost answer's job is looked for in GET /jobs before it is called unknown
URL_RENEWALS = 3  # fresh signed URLs asked for when the asset origin refuses one (expired)
HOLD_CHECK = 0.05  # how often requests held for a free parallel-job slot look again (a local check, no request)
SCOUTS = 2  # jobs of a cold cohort (a model's duration unknown) that probe for all of it
COHORT_SECONDS = 10.0  # jobs of one model sent this close together are one cohort
FINISHING_QUANTILE = 0.9  # finalizing is short and varies: asking just after it ends beats asking twice
TEACHES = 0.1  # progress from which a scout's rate is worth passing on (just after it starts, it is noise)


class DurationModel:
    """Recent server-side durations per model, to predict when a job will finish."""

    def __init__(self, size: int = 32) -> None:
        self._seen: dict[str, deque] = defaultdict(lambda: deque(maxlen=size))
        self._lock = threading.Lock()

    def add(self, model_id: str, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._seen[model_id].append(seconds)

    def seed(self, model_id: str, durations: list) -> None:
        with self._lock:
            if model_id not in self._seen:
                self._seen[model_id].extend(d for d in durations if d > 0)

    def quantile(self, model_id: str, q: float) -> Optional[float]:
        with self._lock:
            seen = sorted(self._seen.get(model_id, ()))
        return seen[min(len(seen) - 1, int(q * len(seen)))] if seen else None


def server_duration(history: list) -> Optional[float]:
    """Seconds from the first status to success, by the server's own clock."""
    times = [parse_time(h.get("date")) for h in history if isinstance(h, dict)]
    ends = [parse_time(h.get("date")) for h in history if isinstance(h, dict) and h.get("status") == "success"]
    known = [t for t in times if t]
    if not known or not ends or not ends[-1]:
        return None
    return ends[-1] - min(known)


def _seed(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


class Engine:
    """Submits, follows, completes and records every request of one client (one backend)."""

    def __init__(self, http: Transport, *, history: Callable[[], History], store: Callable[[], "FileStore"],
                 backend_id: str, floor: float = 0.25, ceiling: float = 5.0, job_timeout: float = 3600.0,
                 workers: int = 8, target_quantile: float = 0.7) -> None:
        self._http = http
        self._history_factory, self._store_factory = history, store
        self.backend_id = backend_id
        self.base_url = http.base_url
        self.floor, self.ceiling, self.job_timeout = floor, ceiling, job_timeout
        self.search_seconds = SEARCH_SECONDS
        self.target_quantile = target_quantile
        self.durations = DurationModel()
        self._finishing = DurationModel()  # per model: seconds from `finalizing` to `success`, by the server
        # Three lanes: polls (and searches) on two threads — a poll costs ~0.5 ms of CPU —, output downloads on
        # the rest, so a burst of downloads never holds up seeing the next success, and up to four requests
        # being sent side by side.
        self._lane_sizes = {"poll": 2, "fetch": max(1, workers - 2), "send": 4}
        self._lock = threading.RLock()
        self._wakeups = {lane: threading.Condition(self._lock) for lane in self._lane_sizes}
        self._queues: dict[str, list] = {lane: [] for lane in self._lane_sizes}  # heaps of (due, seq, task, …)
        self._seq = itertools.count()
        self._threads: dict[str, list[threading.Thread]] = {lane: [] for lane in self._lane_sizes}
        self._stopped = False
        self._live: dict[str, Generation] = {}  # request id -> handle, while in flight
        self._by_job: "weakref.WeakValueDictionary[str, Generation]" = weakref.WeakValueDictionary()
        self._known_jobs: set[str] = set()
        self._waiting: deque = deque()  # handles refused with 429, sent in order once the gate opens
        self._draining = False
        self._job_slots: Optional[int] = None  # the parallel-job limit a 429 named (`actionLimit`), once one did
        self._tokens: dict[str, int] = {}  # request id -> the one poll task that counts
        self._due: dict[str, float] = {}  # request id -> when (monotonic) that poll is due
        self._tracked_at: dict[str, float] = {}
        self._created: dict[str, float] = {}  # request id -> when its creation answer arrived (time.time())
        self._polls: dict[str, int] = defaultdict(int)
        self._samples: dict[str, tuple] = {}
        self._scouts: dict[str, float] = {}  # request id of a job probing for its cold cohort -> its phase
        self._learned: dict[str, float] = {}  # a scout's request id -> its predicted end, seconds after sending
        self._asking: set = set()  # request ids with a poll on the wire: a wake-up never sends a second
        self._completing: set = set()  # request ids whose success was seen: completed once, never polled again
        self._seeded: set = set()
        self._recovered = False
        self._reattaching = threading.Lock()
        self._trainings: dict[str, Training] = {}  # model id -> the one live handle on a training followed here
        self._training_tokens: dict[str, int] = {}  # model id -> the one poll task that counts
        self._training_errors: dict[str, int] = defaultdict(int)  # model id -> failed polls in a row
        self._trainings_recovered = False
        self._training_attach = threading.Lock()

    # -- Local state -------------------------------------------------------------------------------
    @property
    def history(self) -> History:
        return self._history_factory()

    @property
    def store(self) -> "FileStore":
        return self._store_factory()

    def in_flight(self) -> list[Generation]:
        """Every request not finished: waiting here, being sent, looked for, or running on the server."""
        with self._lock:
            return [h for h in self._live.values() if not h.done]

    def waiting(self) -> list[Generation]:
        """Requests held here by the rate limit: not sent, not charged."""
        with self._lock:
            return [h for h in self._waiting if not h.done]

    def live_handle(self, *, job_id: Optional[str] = None, request_id: Optional[str] = None,
                    request_key: Optional[str] = None) -> Optional[Generation]:
        with self._lock:
            if job_id:
                return self._by_job.get(job_id)
            if request_id:
                return self._live.get(request_id)
            for handle in self._live.values():
                if not handle.done and self._key(handle) == request_key:
                    return handle
        return None

    def close(self) -> None:
        """Stop following (jobs keep running on the server; the history knows them)."""
        with self._lock:
            self._stopped = True
            for lane, queue in self._queues.items():
                queue.clear()
                self._wakeups[lane].notify_all()

    @property
    def closed(self) -> bool:
        return self._stopped

    # -- The ledger --------------------------------------------------------------------------------
    @staticmethod
    def _key(handle: Generation) -> str:
        return History.request_key(handle.model_id, handle.prompt, handle.inputs)

    def _row(self, handle: Generation) -> JobRecord:
        return JobRecord(
            request_id=handle.request_id, job_id=handle.job_id, backend_id=self.backend_id,
            backend_url=self.base_url, model_id=handle.model_id, base_model_id=handle.base_model_id,
            model_name=handle.model_name, prompt=handle.prompt, inputs=handle.inputs,
            request_key=self._key(handle), cost=handle.cost, status=handle.status, progress=handle.progress,
            asset_ids=handle.asset_ids, mime_types=[o.mime_type for o in handle.outputs],
            files=[str(p) for p in handle.files], text=handle.text,
            error=handle.error or (str(handle.exception) if handle.exception else None), hint=handle.hint,
            source=handle.source, kind=handle.kind, sent_at=handle.sent_at, created_at=handle.submitted_at,
            updated_at=time.time(), finished_at=handle.finished_at)

    def _record(self, handle: Generation, *, before_sending: bool = False) -> None:
        """Write the handle's row. Before sending, a failure refuses the request; after, it is reported on
        the handle and in the log, and the job is followed all the same (it is paid for)."""
        try:
            self.history.record(self._row(handle))
        except StorageError as exc:
            if before_sending:
                raise StorageError(f"{exc}; nothing was sent") from None
            handle._set(note=f"not recorded in the history: {exc}")
            log.warning("job %s is not in the history: %s", handle.job_id or handle.request_id, exc)

    # -- Sending -----------------------------------------------------------------------------------
    def submit(self, handle: Generation, *, block: bool = True) -> Generation:
        """Record the request, then send it once (or queue it behind the rate limit).

        With `block`, returns when the request has an answer (a job, a 429, or a lost answer); a Ctrl-C
        while waiting stops only the waiting: the request goes on in the background and stays in the ledger.
        """
        self._submit(handle)
        if block:
            self.wait_answered([handle])
        return handle

    def submit_many(self, handles: list[Generation]) -> list[Generation]:
        """Record and send several requests side by side (a few senders); returns once each has an answer.

        Each is recorded before it is sent; if the history fails part-way, those already sent go on and the
        rest are refused (`StorageError`, nothing sent for them).
        """
        for handle in handles:
            self._submit(handle)
        self.wait_answered(handles)
        return handles

    def wait_answered(self, handles: list[Generation]) -> None:
        """Wait until each request has an answer. A Ctrl-C stops only the waiting: the exception carries
        `.handles` (what was sent, and goes on) for the front door's one line."""
        try:
            for handle in handles:
                while not handle._answered.wait(0.05):
                    pass
        except KeyboardInterrupt as exc:
            exc.handles = handles  # type: ignore[attr-defined]
            raise

    def _submit(self, handle: Generation) -> None:
        if self._stopped:
            raise SubmitFailedError("this client was closed (the session switched backend or the kernel is "
                                    "stopping): nothing was sent")
        handle.request_id = handle.request_id or new_request_id()
        handle.submitted_at = time.time()
        waits = self._http.creation_gate.remaining() > 0 or bool(self.waiting()) or self._full(handle)
        handle._set(status="waiting" if waits else "sending")
        self._record(handle, before_sending=True)  # raises StorageError: nothing is sent
        with self._lock:
            self._live[handle.request_id] = handle
        if waits:
            self._enqueue(handle)
            handle._answered.set()  # held here: its answer is "not yet", and the caller need not wait
            return
        self._schedule(handle, 0.0, self._send, lane="send")

    def _send(self, handle: Generation) -> None:
        """A send-lane task: send now, unless a 429 closed the creation gate since it was queued."""
        try:
            if self._http.creation_gate.remaining() > 0 or self.waiting() or self._full(handle):
                self._mark(handle, "waiting")
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
        self._end(handle, OutcomeUnknownError(f"the request for {handle.model_name} failed while being sent "
                                              f"({exc}); %scenario status shows whether a job appeared"),
                  status="unknown")

    def _send_once(self, handle: Generation) -> str:
        """POST (or PUT) the request exactly once: "created", "waiting", "unknown" or "not-sent"."""
        path = (f"/workflows/{handle.run_model_id}/run" if handle.kind == "workflow"
                else f"/generate/custom/{handle.run_model_id}")
        handle._set(status="sending", sent_at=time.time())
        try:
            data = self._http.create("PUT" if handle.kind == "workflow" else "POST", path, handle.inputs)
        except RateLimitError as exc:  # nothing was created: it waits here, in order, for the gate to open
            body = exc.body if isinstance(exc.body, dict) else {}
            if body.get("actionName") == "parallelCustomJobs" and isinstance(body.get("actionLimit"), int):
                with self._lock:
                    self._job_slots = body["actionLimit"]
            self._mark(handle, "waiting")
            self._enqueue(handle)
            return "waiting"
        except UncertainSubmit:  # it may have created a job: look for it
            self._mark(handle, "unknown")
            self._schedule(handle, 0.5, self._reconcile)
            return "unknown"
        except (APIError, APIConnectionError) as exc:  # a 4xx, or never sent: provably no job
            error = exc if isinstance(exc, APIError) else SubmitFailedError(
                f"the request for {handle.model_name} never reached the API ({exc}); nothing was charged")
            self._end(handle, error, status="not-sent")
            return "not-sent"
        job = data.get("job") or {}
        if not (job.get("jobId") or job.get("id")):  # an answer without a job id: as good as lost
            self._mark(handle, "unknown")
            self._schedule(handle, 0.5, self._reconcile)
            return "unknown"
        self._adopt(handle, job, data.get("creativeUnitsCost"), created=True)
        return "created"

    def _mark(self, handle: Generation, status: str) -> None:
        """A local status change: recorded, then shown."""
        handle._set(status=status)
        self._record(handle)
        handle._notify()

    def _adopt(self, handle: Generation, job: dict, cost: Any = None, *, created: bool = False) -> None:
        """The job exists: remember its id (history first), then follow it."""
        job_id = str(job.get("jobId") or job.get("id"))
        with self._lock:
            self._known_jobs.add(job_id)
            self._by_job[job_id] = handle
            self._live[handle.request_id] = handle
        handle._set(job_id=job_id, cost=float(cost) if cost is not None else handle.cost)
        server_created = parse_time(job.get("createdAt"))
        if created:  # this answer's arrival is the job's creation on our clock (it has no status history yet)
            arrived = time.time()
            with self._lock:
                self._created[handle.request_id] = arrived
            if server_created:
                handle._set(server_offset=arrived - server_created)
        handle._apply(job)
        self._record(handle)
        handle._notify()
        self._track(handle)

    def _enqueue(self, handle: Generation) -> None:
        with self._lock:
            if handle not in self._waiting:
                self._waiting.append(handle)
            start, self._draining = not self._draining, True
        if start:
            self._schedule(None, self._http.creation_gate.remaining(), self._drain, lane="send")

    def _drain(self, _: Any = None) -> None:
        """Send waiting requests one by one, oldest first, while the creation gate is open."""
        while True:
            with self._lock:
                while self._waiting and self._waiting[0].done:
                    self._waiting.popleft()
                if not self._waiting or self._stopped:
                    self._draining = False
                    return
                handle = self._waiting[0]
            wait = self._http.creation_gate.remaining()
            if wait > 0:
                self._schedule(None, wait, self._drain, lane="send")
                return
            if self._full(handle):  # every slot the last 429 named is ours and busy: send when one of ours ends
                self._schedule(None, HOLD_CHECK, self._drain, lane="send")
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
                self._schedule(None, self._http.creation_gate.remaining() or self.floor, self._drain, lane="send")
                return

    def _full(self, handle: Generation) -> bool:
        """A generation would meet the parallel-job limit a 429 named: as many of our jobs are running.
        (Jobs of other clients on the account count too, server-side; then a 429 says so and we back off.)"""
        with self._lock:
            if self._job_slots is None or handle.kind != "generation":
                return False
            running = sum(1 for h in self._live.values() if h.kind == "generation" and not h.done and
                          (h.job_id or h.status == "unknown") and h.request_id not in self._completing)
            return running >= self._job_slots

    # -- Lost answers ------------------------------------------------------------------------------
    def _reconcile(self, handle: Generation) -> None:
        """Look for the job a request whose answer was lost may have created; adopt it when found."""
        if handle.done and handle.status != "unknown":
            return
        sent = handle.sent_at or handle.submitted_at
        since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(sent - 120))
        try:
            found = self._find_job(handle, since)
        except ScenarioError as exc:
            log.info("looking for the job of %s failed (%s); trying again", handle.request_id, exc)
            found = None
        if found is not None:
            if handle.done:
                handle._reopen()
            handle._set(note="its answer was lost, and its job was found and adopted")
            self._adopt(handle, found)
            return
        elapsed = time.time() - sent
        if elapsed < self.search_seconds:
            self._schedule(handle, min(8.0, max(1.0, elapsed / 4)), self._reconcile)
        elif not handle.done:
            self._end(handle, OutcomeUnknownError(
                f"the request for {handle.model_name} was sent but its answer was lost, and no job for it has "
                f"shown up yet: it may or may not have been created (and charged). It stays in the history as "
                f"'unknown' (request {handle.request_id}); %scenario status or running the same cell again "
                f"adopts the job if it appears"), status="unknown")

    def _find_job(self, handle: Generation, since: str) -> Optional[dict]:
        """A job created since `since` whose echoed input is this request, not owned by another request: one
        followed here, or one the history gives to another request (an identical request sent on purpose,
        perhaps by an earlier kernel, whose job is listed before this one's).

        `metadata.input` echoes the body as sent: a LoRA run through its base model echoes the LoRA's id as
        `modelId`; other models may echo the URL's model, or none.
        """
        params: dict = {"createdAfter": since, "pageSize": 100}
        own_ids = {handle.model_id, handle.run_model_id, None}
        wanted = {k: v for k, v in handle.inputs.items() if k != "modelId"}
        while True:
            page = self._http.get("/jobs", **params)
            for row in page.get("jobs") or []:
                job_id = row.get("jobId") or row.get("id")
                meta = row.get("metadata") or {}
                echoed = meta.get("input") or {}
                with self._lock:
                    if job_id in self._known_jobs:
                        continue
                same_model = echoed.get("modelId") in own_ids or meta.get("workflowId") == handle.run_model_id
                if same_model and all(echoed.get(k) == v for k, v in wanted.items()) and \
                        not self._owned_by_another(str(job_id), handle):
                    return row
            token = page.get("nextPaginationToken")
            if not token or token == params.get("paginationToken"):
                return None
            params["paginationToken"] = token

    def _owned_by_another(self, job_id: str, handle: Generation) -> bool:
        """The history gives this job to another request (then it is known here from now on)."""
        try:
            row = self.history.get(job_id)
        except StorageError:  # unreadable: only the jobs followed here are known
            return False
        if row is None or row.request_id == handle.request_id:
            return False
        with self._lock:
            self._known_jobs.add(job_id)
        return True

    # -- Following -----------------------------------------------------------------------------------
    def _track(self, handle: Generation) -> None:
        with self._lock:
            self._tracked_at.setdefault(handle.request_id, time.monotonic())
        self._schedule_poll(handle, self._next_delay(handle))

    def _schedule_poll(self, handle: Generation, delay: float) -> None:
        with self._lock:
            token = self._tokens[handle.request_id] = next(self._seq)
            self._due[handle.request_id] = time.monotonic() + delay
        self._schedule(handle, delay, self._poll, token)

    def poll_soon(self, handle: Generation) -> None:
        self._schedule_poll(handle, 0.0)

    def _poll(self, handle: Generation, token: Optional[int] = None) -> None:
        with self._lock:
            if token is not None and self._tokens.get(handle.request_id) != token:
                return  # a newer poll was scheduled for it
            if handle.done or handle.job_id is None or handle.request_id in self._completing:
                return
            if handle.request_id in self._asking:
                return  # the poll already on the wire answers for this one too
            self._asking.add(handle.request_id)
        try:
            self._ask(handle)
        finally:
            with self._lock:
                self._asking.discard(handle.request_id)

    def _ask(self, handle: Generation) -> None:
        assert handle.job_id is not None
        if time.monotonic() - self._tracked_at.get(handle.request_id, time.monotonic()) > self.job_timeout:
            self._end(handle, JobTimeoutError(handle.job_id, self.job_timeout), record=False)
            self._hand_over(handle)
            return
        self._polls[handle.request_id] += 1
        try:
            job = self._http.get_once(f"/jobs/{handle.job_id}")["job"]
        except NotFoundError:
            self._end(handle, JobFailedError(handle.job_id, "the API no longer knows this job",
                                             "it may belong to another project, or to a sandbox that stopped"),
                      status="failure")
            self._hand_over(handle)
            return
        except ScenarioError as exc:  # transient (a poll is never retried in place): ask again later, never
            log.info("poll of %s failed (%s); trying again", handle.job_id, exc)  # lose the job
            backoff = min(self.ceiling, self.floor * 2 ** min(self._polls[handle.request_id], 4))
            waited = exc.retry_after if isinstance(exc, RateLimitError) else None  # the server's own wait
            self._schedule_poll(handle, max(backoff, waited or 0.0))
            return
        status = str(job.get("status") or handle.status)
        with self._lock:  # decide on this answer's own status: the first to see success completes the job
            if handle.request_id in self._completing:
                return
            if status == "success":
                self._completing.add(handle.request_id)
        # Statuses between the job's creation and its end are live state, not history: the row written when the
        # job was named already makes a new kernel follow it on, and the end is written with the outputs.
        handle._apply(job)
        self._samples[handle.request_id] = (time.time(), handle.progress)
        handle._notify()
        if status == "success":
            duration = server_duration(handle.status_history)
            finishing = self._phase_start(handle, "success"), self._phase_start(handle, "finalizing")
            if finishing[0] is not None and finishing[1] is not None:
                self._finishing.add(handle.run_model_id, finishing[0] - finishing[1])
            with self._lock:  # its cohort now knows the duration: no more scouting
                self._scouts.pop(handle.request_id, None)
                self._learned.pop(handle.request_id, None)
            if duration:
                known = self.durations.quantile(handle.run_model_id, self.target_quantile)
                self.durations.add(handle.run_model_id, duration)
                # Siblings are due when this one ended, or when the model's jobs usually end if that is later:
                # once that is known, one job's jitter is no reason to ask all the others early.
                self._wake_siblings(handle, duration if known is None else max(duration, known))
            self._schedule(handle, 0.0, lambda h: self._complete(h, job), lane="fetch")
        elif status in ("failure", "canceled"):
            self._end(handle, JobFailedError(handle.job_id, handle.error or "", handle.hint or "", handle.status))
            self._hand_over(handle)
        else:
            self._schedule_poll(handle, self._next_delay(handle))
            self._teach(handle)

    def _wake_siblings(self, finished: Generation, duration: float) -> None:
        """Jobs of the same model sent about when this one was are due about now: ask at once (each at its own
        due time: one sent later is asked later)."""
        with self._lock:
            siblings = [h for h in self._live.values() if h is not finished and not h.done and h.job_id and
                        h.run_model_id == finished.run_model_id and h.request_id not in self._completing]
        finishing = self._finishing.quantile(finished.run_model_id, FINISHING_QUANTILE)  # once, not per sibling
        siblings = [h for h in siblings if h.request_id not in self._samples or  # its own progress tells it better
                    self._progress_end(h, finishing) is None]
        self._poll_by([(s, self._started(s) + duration) for s in siblings])  # as long as the finished one ran

    def _started(self, handle: Generation) -> float:
        """When the server created this job, on our clock: its first status, else its creation answer's arrival
        (that answer has no status history yet), else when it was sent. Not simply when it was sent: a burst of
        requests queues at the server, and a job asked about by its sending time is asked just before it ends,
        then a floor later."""
        created = self._phase_start(handle, "queued") if handle.server_offset else None
        if created is None:
            created = self._created.get(handle.request_id)
        return created if created is not None else handle.sent_at or handle.submitted_at

    def _poll_by(self, dues: list) -> None:
        """Ask about each (job, due time) at its due time if that is sooner than it would be asked anyway, so
        N successes (or N lessons) never make N² polls."""
        now, clock = time.time(), time.monotonic()
        sooner = []
        with self._lock:
            for handle, due in dues:
                last = self._samples.get(handle.request_id, (0.0,))[0]  # never twice within the floor
                delay = max(0.0, due - now, last + self.floor - now)
                if self._due.get(handle.request_id, float("inf")) > clock + delay + self.floor:
                    sooner.append((handle, delay))
        for handle, delay in sooner:
            self._schedule_poll(handle, delay)

    # Cold start. With no duration known for a model, jobs sent together would each probe at random to find
    # out when they end. Instead a few of each cohort (same model, sent within COHORT_SECONDS) are scouts and
    # probe for all; the others (followers) wait: a scout's progress rate tells them when to ask, a scout's
    # success wakes them (`_wake_siblings`), and meanwhile they ask at the ceiling cadence, so a job is never
    # left unasked. A scout that ends without success hands over to a follower at once.
    def _role(self, handle: Generation) -> str:
        """'scout' or 'follower' in its cold cohort (asked only while the model's duration is unknown)."""
        with self._lock:
            if handle.request_id in self._scouts:
                return "scout"
            sent = handle.sent_at or handle.submitted_at
            near = 0
            for request_id in list(self._scouts):
                scout = self._live.get(request_id)
                if scout is None or scout.done:  # ended: its place is free
                    self._scouts.pop(request_id, None)
                    self._learned.pop(request_id, None)
                elif scout.run_model_id == handle.run_model_id and \
                        abs((scout.sent_at or scout.submitted_at) - sent) <= COHORT_SECONDS:
                    near += 1
            if near < SCOUTS:  # scouts sent together ask out of step: one sees the success soon after it comes
                self._scouts[handle.request_id] = self.floor * near / SCOUTS
                return "scout"
            return "follower"

    def _cohort_end(self, handle: Generation) -> Optional[float]:
        """When a follower is worth asking about, from its scouts' progress (a little after they expect to
        end: their own success wakes it sooner)."""
        sent = handle.sent_at or handle.submitted_at
        with self._lock:
            offsets = [self._learned[r] for r in self._scouts if r in self._learned and r in self._live and
                       self._live[r].run_model_id == handle.run_model_id and
                       abs((self._live[r].sent_at or self._live[r].submitted_at) - sent) <= COHORT_SECONDS]
        if not offsets:
            return None
        offset = min(offsets)
        return sent + offset + 2 * self.floor + 0.05 * offset

    def _teach(self, scout: Generation) -> None:
        """A scout that knows when it will end tells its waiting followers when to ask."""
        with self._lock:
            if scout.request_id not in self._scouts:
                return
        end = self._progress_end(scout)
        if end is None or scout.progress < TEACHES:
            return
        with self._lock:
            self._learned[scout.request_id] = end - (scout.sent_at or scout.submitted_at)
            followers = [h for h in self._live.values() if h is not scout and not h.done and h.job_id and
                         h.run_model_id == scout.run_model_id and h.request_id not in self._scouts and
                         h.request_id not in self._completing]
        if self.durations.quantile(scout.run_model_id, 0.5) is not None:
            return  # a success already taught everyone
        self._poll_by([(f, due) for f in followers if (due := self._cohort_end(f)) is not None])

    def _hand_over(self, gone: Generation) -> None:
        """A scout ended without a success: the earliest-sent followers take its place and probe at once."""
        with self._lock:
            if gone.request_id not in self._scouts:
                return
            self._scouts.pop(gone.request_id, None)
            self._learned.pop(gone.request_id, None)
            followers = sorted((h for h in self._live.values() if h is not gone and not h.done and h.job_id and
                                h.run_model_id == gone.run_model_id and h.request_id not in self._scouts and
                                h.request_id not in self._completing),
                               key=lambda h: h.sent_at or h.submitted_at)
        for follower in followers:
            if self._role(follower) != "scout":
                break
            self._schedule_poll(follower, self.floor)

    def _scout_turn(self, handle: Generation) -> float:
        """The delay before a scout asks again while its job finalizes for an unknown time: a floor at least,
        and out of step with the other scouts' next asks (floor / SCOUTS apart), so the cohort asks every
        floor / SCOUTS and the first success is seen that much sooner. Others ask at the floor."""
        clock = time.monotonic()
        due = clock + self.floor
        with self._lock:
            if handle.request_id not in self._scouts:
                return self.floor
            gap = self.floor / SCOUTS
            others = sorted(self._due[r] for r in self._scouts if r != handle.request_id and r in self._due and
                            r in self._live and self._live[r].run_model_id == handle.run_model_id)
        for other in others:
            if abs(due - other) < gap:
                due = other + gap
        return due - clock

    def _progress_end(self, handle: Generation, finishing: Any = "learned") -> Optional[float]:
        """When this job will end, from its own progress: its rate while in progress, or how long this model's
        jobs take to finalize (None before it has one). `finishing`: that length, if the caller has it."""
        if finishing == "learned":
            finishing = self._finishing.quantile(handle.run_model_id, FINISHING_QUANTILE)
        if handle.status == "finalizing":
            started = self._phase_start(handle, "finalizing")
            return None if started is None or finishing is None else started + finishing + 0.05
        sample = self._samples.get(handle.request_id)
        started = self._phase_start(handle, "in-progress")
        if handle.status == "in-progress" and sample and 0 < handle.progress < 1 and started is not None \
                and sample[0] > started:
            rate = handle.progress / (sample[0] - started)  # then it finalizes
            return sample[0] + (1 - handle.progress) / rate + (0.2 if finishing is None else finishing + 0.05)
        return None

    def _next_delay(self, handle: Generation) -> float:
        """How long until this job is worth asking about again."""
        now = time.time()
        if handle.status == "finalizing":  # outputs are being stored: moments away (as long as it usually takes)
            end = self._progress_end(handle)
            if end is None:  # how long is not known yet: its cohort's scouts take turns asking
                return self._scout_turn(handle)
            return self.floor if end <= now + self.floor else min(self.ceiling, end - now)
        if handle.run_model_id not in self._seeded:
            self._seed_from_history(handle.run_model_id)
        predictions = []
        sent = handle.sent_at or handle.submitted_at  # a request held here by the rate limit starts when sent
        typical = self.durations.quantile(handle.run_model_id, self.target_quantile)
        follower = typical is None and self._role(handle) == "follower"
        if typical is not None:  # durations are the server's, from the job's creation
            predictions.append(self._started(handle) + typical)
        for predicted in (self._progress_end(handle), self._cohort_end(handle) if follower else None):
            if predicted is not None:
                predictions.append(predicted)
        if not predictions:
            if follower:  # its scouts probe for it; it asks now and then in case they cannot
                return self.ceiling
            # A scout: never more than ~20 % late. Each probes at its own random share of that, so scouts sent
            # together probe at different moments.
            return min(self.ceiling, max(self.floor, 0.2 * (now - sent) * random.uniform(0.3, 1.0)))
        ahead = [t for t in predictions if t > now + self.floor]
        if ahead:
            phase = self._scouts.get(handle.request_id, 0.0) if typical is None else 0.0
            return min(self.ceiling, min(ahead) - now + phase)
        overdue = max(0, self._polls[handle.request_id] - 1)
        return min(self.ceiling, self.floor * 1.25 ** min(overdue, 12))

    def _seed_from_history(self, model_id: str) -> None:
        """Durations of this model's past successes on this backend (local clock: a slight overestimate)."""
        self._seeded.add(model_id)
        try:
            rows = self.history.recent(200, backend_id=self.backend_id)
        except ScenarioError:
            return
        self.durations.seed(model_id, [(r.finished_at or 0) - (r.sent_at or r.created_at) for r in rows
                                       if r.status == "success" and r.finished_at and
                                       model_id in (r.model_id, r.base_model_id)][:32])

    @staticmethod
    def _phase_start(handle: Generation, status: str) -> Optional[float]:
        for entry in handle.status_history:
            if entry.get("status") == status:
                t = parse_time(entry.get("date"))
                return None if t is None else t + handle.server_offset
        return None

    # -- Completing ----------------------------------------------------------------------------------
    def _complete(self, handle: Generation, job: dict, attempt: int = 0) -> None:
        """Resolve, download and store every output (images, videos, 3D, text), then mark the handle done."""
        meta = job.get("metadata") or {}
        wanted: dict[str, Optional[str]] = {a: None for a in meta.get("assetIds") or [] if isinstance(a, str)}
        for index, image in enumerate((job.get("result") or {}).get("images") or []):  # the guide's shape
            if not wanted and isinstance(image, dict) and image.get("url"):
                wanted[f"{handle.job_id}-{index}"] = image["url"]
        for node in meta.get("flow") or []:
            for asset in (node.get("assets") or []) if isinstance(node, dict) else []:
                if isinstance(asset, dict) and asset.get("assetId") and not meta.get("assetIds"):
                    wanted.setdefault(asset["assetId"], None)
        output = meta.get("output")
        text = output.get("text") if isinstance(output, dict) and isinstance(output.get("text"), str) else \
            output if isinstance(output, str) else None
        if text is None and output:
            import json
            text = json.dumps(output, indent=2, default=str)
        outputs, seeds = [], []
        try:
            for key, url in wanted.items():
                stored, seed = self._fetch(key, url)
                outputs.append(stored)
                seeds.append(_seed(seed))
        except (APIConnectionError, RateLimitError, ServerError) as exc:  # transient: a few more tries
            if attempt < 8:
                log.info("downloading the outputs of %s failed (%s); trying again", handle.job_id, exc)
                self._schedule(handle, min(self.ceiling, 0.5 * 2 ** attempt),
                               lambda h: self._complete(h, job, attempt + 1), lane="fetch")
                return
            handle._set(outputs=[], text=text)
            self._end(handle, DownloadFailedError(handle.job_id or "", exc), status="success")
            return
        except ScenarioError as exc:  # paid for, not fetched: the error says how to fetch again
            handle._set(outputs=[], text=text)
            self._end(handle, DownloadFailedError(handle.job_id or "", exc), status="success")
            return
        handle._set(outputs=outputs, seeds=seeds, text=text)
        self._end(handle, None, status="success")

    def _fetch(self, key: str, url: Optional[str]) -> tuple[Output, Any]:
        """One output stored locally: (Output, its seed). A refused signed URL is renewed from the API."""
        store = self.store
        if url is not None:  # the guide's shape: a URL and nothing else
            if not store.has(key):
                store.put(key, self._http.download_once(url), "image/png")
            return Output(key, "image", "image/png", store.path_for(key)), None
        # Each asked once on this thread's kept-alive connections: a failure is tried again later, whole.
        asset = self._http.get_once(f"/assets/{key}")["asset"]
        mime = str(asset.get("mimeType") or "image/png")
        kind = str(asset.get("kind") or kind_of(mime))
        if not store.has(key, mime):
            url = asset.get("url")
            for attempt in range(URL_RENEWALS + 1):
                try:
                    data = self._http.download_once(url)
                    break
                except (PermissionDeniedError, NotFoundError):
                    if attempt == URL_RENEWALS:
                        raise
                    url = self._http.get_once(f"/assets/{key}")["asset"].get("url")
            try:
                store.put(key, data, mime)
            except StorageError:  # a corrupt download: once more from a fresh URL before giving up
                fresh = self._http.get_once(f"/assets/{key}")["asset"].get("url")
                store.put(key, self._http.download_once(fresh), mime)
        return Output(key, kind, mime, store.path_for(key, mime)), (asset.get("metadata") or {}).get("seed")

    def _end(self, handle: Generation, exception: Optional[BaseException], *, status: Optional[str] = None,
             record: bool = True) -> None:
        """Mark a handle done, after its outputs are stored, and record the outcome."""
        with self._lock:
            self._live.pop(handle.request_id, None)
            self._tokens.pop(handle.request_id, None)
            self._due.pop(handle.request_id, None)
            self._tracked_at.pop(handle.request_id, None)
            self._created.pop(handle.request_id, None)
            self._polls.pop(handle.request_id, None)
            self._samples.pop(handle.request_id, None)
            self._completing.discard(handle.request_id)
        handle._finish(exception, status)
        if record:
            self._record(handle)
        handle._notify()
        handle._settle()  # wait() returns once the history and every view have seen the end

    # -- What handles and front doors ask for ------------------------------------------------------------
    def cancel(self, handle: Generation) -> str:
        """Try to stop a request or its job; returns the outcome (see `Generation.cancel`)."""
        if handle.done:
            outcome = "finished"
        elif handle.job_id is None:
            with self._lock:
                queued = handle in self._waiting
                if queued:
                    self._waiting.remove(handle)
            if queued:
                handle._set(note=CANCEL_WORDS["dropped"])
                self._end(handle, JobFailedError(handle.request_id, status="canceled",
                                                 text="canceled before it was sent: nothing was charged"),
                          status="not-sent")
                return "dropped"
            outcome = "unavailable"
        else:
            try:
                self._http.request("POST", f"/jobs/{handle.job_id}/action", json_body={"action": "cancel"})
                outcome = "requested"
                self.poll_soon(handle)
            except BadRequestError as exc:
                outcome = "refused" if "cancel" in exc.reason.lower() else "unavailable"
            except (RateLimitError, APIConnectionError):
                outcome = "unavailable"
        handle._set(note=CANCEL_WORDS[outcome])
        handle._notify()
        return outcome

    def reattach(self, job_id: str) -> Generation:
        """A live handle on any job by id: the one in flight, a timed-out or not-fetched one taken back, or a
        new one built from the history and the server."""
        with self._reattaching:  # one handle per job, even when a recovery and a front door ask at once
            return self._reattach(job_id)

    def _reattach(self, job_id: str) -> Generation:
        handle = self.live_handle(job_id=job_id)
        if handle is not None and (not handle.done or handle.ok):
            return handle  # still followed, or finished here with its outputs
        if handle is not None and isinstance(handle.exception, (JobTimeoutError, DownloadFailedError)):
            handle._reopen()
            handle._set(note="")
            with self._lock:
                self._live[handle.request_id] = handle
            self._track(handle)
            return handle
        record = None
        try:
            record = self.history.get(job_id)
        except StorageError:
            pass
        job = self._http.get(f"/jobs/{job_id}")["job"]
        meta = job.get("metadata") or {}
        handle = self._handle_from(record, job)
        if record is None:
            echoed = dict(meta.get("input") or {})
            run_model = echoed.pop("modelId", "") or meta.get("workflowId") or ""
            handle.inputs, handle.model_id, handle.run_model_id = echoed, run_model, run_model
            handle.model_name = run_model
        self._adopt(handle, job)
        return handle

    def _handle_from(self, record: Optional[JobRecord], job: Optional[dict] = None) -> Generation:
        kind = record.kind if record else ("workflow" if (job or {}).get("jobType") == "workflow" else "generation")
        handle = Generation(self, model_id=record.model_id if record else "",
                            run_model_id=(record.base_model_id or record.model_id) if record else "",
                            inputs=record.inputs if record else {}, base_model_id=record.base_model_id if record
                            else None, source=record.source if record else "api", kind=kind,
                            model_name=record.model_name if record else "",
                            request_id=record.request_id if record else new_request_id())
        if record is not None:
            handle._set(cost=record.cost, submitted_at=record.created_at, sent_at=record.sent_at,
                        status=record.status or "queued")
        return handle

    def finished_handle(self, record: JobRecord) -> Generation:
        """A done handle rebuilt from a history row whose outputs are all stored (no request made)."""
        handle = self._handle_from(record)
        handle._set(job_id=record.job_id, outputs=self._stored_outputs(record), text=record.text, error=record.error,
                    hint=record.hint, progress=1.0)
        handle._finish(None, record.status)
        handle._set(finished_at=record.finished_at or time.time())
        handle._settle()
        return handle

    def _stored_outputs(self, record: JobRecord) -> list[Output]:
        """The outputs a history row names, where the file store keeps them (rows of schema 1: PNGs)."""
        mimes = record.mime_types or ["image/png"] * len(record.asset_ids)
        return [Output(a, kind_of(m), m, self.store.path_for(a, m))
                for a, m in zip(record.asset_ids, mimes, strict=True)]

    def outputs_stored(self, record: JobRecord) -> bool:
        """Whether a successful row's outputs are all on disk (then it can be shown with no request)."""
        return record.status == "success" and (bool(record.asset_ids) or record.text is not None) and \
            all(o.path.is_file() for o in self._stored_outputs(record))

    def follow_record(self, record: JobRecord) -> Generation:
        """Follow on a request from the history (this kernel's or an earlier one's)."""
        if record.job_id:
            return self.reattach(record.job_id)
        live = self.live_handle(request_id=record.request_id)
        if live is not None:
            return live
        handle = self._handle_from(record)
        if record.status == "waiting":  # an earlier kernel held it here and never sent it
            self._end(handle, SubmitFailedError(
                f"the request for {handle.model_name} was still waiting for the rate limit when its kernel "
                f"stopped; it was never sent and nothing was charged"), status="not-sent")
            return handle
        handle._set(status="unknown")
        with self._lock:
            self._live[handle.request_id] = handle
        self._schedule(handle, 0.0, self._reconcile)
        return handle

    def recover(self) -> list[Generation]:
        """Once per engine: follow on every unfinished request of this backend found in the history."""
        with self._lock:
            if self._recovered:
                return []
            self._recovered = True
        try:
            rows = self.history.unfinished(self.backend_id)
        except StorageError:
            return []
        handles = []
        for record in rows:
            try:
                handles.append(self.follow_record(record))
            except NotFoundError:
                handle = self._handle_from(record)
                handle._set(job_id=record.job_id)
                self._end(handle, JobFailedError(record.job_id or "", "the API no longer knows this job",
                                                 "it may belong to another project, or to a sandbox that "
                                                 "stopped"), status="failure")
            except ScenarioError as exc:
                log.warning("could not follow on %s: %s", record.job_id or record.request_id, exc)
        return handles

    # -- Trainings ---------------------------------------------------------------------------------------
    # A training is followed on the poll lane beside the jobs (no thread of its own): `GET /models/{id}` at a
    # cadence from the server's remaining time, and `GET /jobs/{jobId}` once when it fails, for the error and
    # hint (the model carries none). Its row in the history's `trainings` table is written before anything
    # waits and after every change, so a new kernel follows it on (`recover_trainings`).
    TRAINING_CEILING = 10.0  # seconds between two polls of one training, at most

    def live_training(self, model_id: str) -> Optional[Training]:
        with self._lock:
            return self._trainings.get(model_id)

    def trainings_in_flight(self) -> list[Training]:
        with self._lock:
            return [t for t in self._trainings.values() if not t.done]

    def record_training(self, training: Training, *, before_sending: bool = False) -> None:
        """Write the training's row. Before its training is started, a failure refuses it; after, it is
        noted on the handle and in the log, and the training is followed all the same."""
        row = TrainingRecord(
            model_id=training.model_id, backend_id=self.backend_id, backend_url=self.base_url, name=training.name,
            type=training.type, job_id=training.job_id, status=training.status, stage=training.stage,
            progress=training.progress, remaining=training.remaining, cost=training.cost,
            parameters=training.parameters, images=[i.as_dict() for i in training.images], error=training.error,
            hint=training.hint, created_at=training.created_at, updated_at=time.time(),
            finished_at=training.finished_at)
        try:
            self.history.record_training(row)
        except StorageError as exc:
            if before_sending:
                raise StorageError(f"{exc}; the training was not started") from None
            training._set(note=f"not recorded in the history: {exc}")
            log.warning("training %s is not in the history: %s", training.model_id, exc)

    def start_training(self, training: Training, parameters: dict) -> None:
        """Record that the training is being started, then `PUT /models/{id}/train` exactly once.

        A refusal (4xx) raises and nothing was started. A lost answer (no answer, 5xx) is never retried: the
        model is followed, and its status tells whether the training started.
        """
        training._set(stage="starting")
        self.record_training(training, before_sending=True)  # raises StorageError: nothing is started
        try:
            data = self._http.request("PUT", f"/models/{training.model_id}/train",
                                      json_body={"parameters": parameters})
        except (APIConnectionError, ServerError) as exc:
            training._set(note=f"the answer to starting the training was lost ({exc}); following the model")
            self.follow_training(training)
            return
        job = data.get("job") or {}
        cost = data.get("creativeUnitsCost")
        if cost is None:
            cost = (data.get("creativeUnits") or {}).get("estimatedCreativeUnits")
        training._set(job_id=job.get("jobId") or job.get("id") or training.job_id,
                      cost=float(cost) if cost is not None else training.cost)
        training._apply_model(data.get("model") or {"status": "training"})
        self.follow_training(training)

    def follow_training(self, training: Training) -> Training:
        """Keep a training current from now on: recorded, shown, polled."""
        with self._lock:
            self._trainings[training.model_id] = training
        self.record_training(training)
        training._notify()
        self._schedule_training(training, 0.0)
        return training

    def _schedule_training(self, training: Training, delay: float) -> None:
        with self._lock:
            token = self._training_tokens[training.model_id] = next(self._seq)
        self._schedule(training, delay, self._poll_training, token)  # type: ignore[arg-type]

    def _training_delay(self, training: Training) -> float:
        """clamp(remaining / 5, floor, 10 s); without a remaining time, a tenth of the training's age."""
        left = training.remaining
        if left is not None:
            return min(self.TRAINING_CEILING, max(self.floor, left / 5))
        return min(self.TRAINING_CEILING, max(self.floor, 0.1 * (time.time() - training.created_at)))

    def _poll_training(self, training: Training, token: Optional[int] = None) -> None:
        with self._lock:
            if training.done or (token is not None and self._training_tokens.get(training.model_id) != token):
                return
        try:
            model = self._http.get(f"/models/{training.model_id}")["model"]
        except NotFoundError:
            training._set(status="failed" if training.status == "training" else "not-started",
                          error="the API no longer knows this model",
                          hint="it may have been deleted, or belong to a sandbox that stopped")
            self._end_training(training)
            return
        except ScenarioError as exc:  # transient: the transport already retried; never lose a training
            with self._lock:
                self._training_errors[training.model_id] += 1
                errors = self._training_errors[training.model_id]
            log.info("poll of training %s failed (%s); trying again", training.model_id, exc)
            self._schedule_training(training, min(self.TRAINING_CEILING, self.floor * 2 ** min(errors, 6)))
            return
        with self._lock:
            self._training_errors.pop(training.model_id, None)
        changed = training._apply_model(model)
        if training.status == "new":  # never started (a refusal or a lost start): nothing charged for training
            training._set(status="not-started", error=training.error or
                          "the training was never started on the server; nothing was charged for it")
        if training.status in ("failed", "training-canceled") and training.job_id:
            try:
                meta = (self._http.get(f"/jobs/{training.job_id}")["job"].get("metadata") or {})
                training._set(error=meta.get("error") or training.error, hint=meta.get("hint") or training.hint)
            except ScenarioError as exc:
                log.info("reading the job of failed training %s failed (%s)", training.model_id, exc)
        if training.status in TRAINING_TERMINAL:
            self._end_training(training)
            return
        if changed:
            self.record_training(training)
        training._notify()
        self._schedule_training(training, self._training_delay(training))

    def _end_training(self, training: Training) -> None:
        """Mark a training done, record it, show it, then release its waiters."""
        with self._lock:
            self._training_tokens.pop(training.model_id, None)
        training._finish()
        self.record_training(training)
        training._notify()
        training._settle()

    def cancel_training(self, training: Training) -> str:
        """`POST /models/{id}/train/action {"action": "cancel"}`; the outcome as in `Training.cancel`."""
        if training.done:
            outcome = "finished"
        else:
            try:
                data = self._http.request("POST", f"/models/{training.model_id}/train/action",
                                          json_body={"action": "cancel"})
                if isinstance(data.get("model"), dict):
                    training._apply_model(data["model"])
                outcome = "requested"
            except BadRequestError as exc:
                outcome = "refused"
                training._set(note=f"{TRAINING_CANCEL_WORDS['refused']}: {exc.reason}")
            except (RateLimitError, APIConnectionError, ServerError):
                outcome = "unavailable"
            if not training.done:
                self._schedule_training(training, 0.0)
        if outcome != "refused":
            training._set(note=TRAINING_CANCEL_WORDS[outcome])
        training._notify()
        return outcome

    def training_model(self, training: Training) -> "Model":
        from ._models import Model
        return Model.parse(self._http.get(f"/models/{training.model_id}")["model"])

    def _training_from(self, record: Optional[TrainingRecord], model: Optional[dict]) -> Training:
        """A handle from a history row and/or the API's model (not followed yet)."""
        model = model or {}
        model_id = record.model_id if record else str(model.get("id"))
        if record is not None and record.images:
            images = [TrainingImage(str(i.get("name") or ""), i.get("asset_id"), str(i.get("caption") or ""),
                                    self._stored_path(i.get("asset_id"))) for i in record.images]
        else:
            images = [TrainingImage(str(i.get("name") or ""), i.get("id"),
                                    str(i.get("description") or i.get("automaticCaptioning") or ""),
                                    self._stored_path(i.get("id")))
                      for i in model.get("trainingImages") or [] if isinstance(i, dict)]
        training = Training(self, model_id=model_id, name=(record.name if record else "") or model.get("name") or
                            model_id, type=(record.type if record else "") or str(model.get("type") or ""),
                            images=images, parameters=(record.parameters if record else None) or
                            model.get("parameters") or {})
        if record is not None:
            training._set(job_id=record.job_id, cost=record.cost, status=record.status or "new", stage=record.stage,
                          progress=record.progress or 0.0, error=record.error, hint=record.hint,
                          created_at=record.created_at or time.time())
        return training

    def _stored_path(self, asset_id: Any) -> Optional["Path"]:
        if not isinstance(asset_id, str) or not asset_id:
            return None
        try:
            return self.store.find(asset_id)
        except StorageError:
            return None

    def finished_training(self, record: TrainingRecord) -> Training:
        """A done handle rebuilt from a finished history row (no request made)."""
        training = self._training_from(record, None)
        training._set(finished_at=record.finished_at or record.updated_at or time.time())
        training._finish()
        training._settle()
        return training

    def reattach_training(self, model_id: str) -> Training:
        """The one live handle on a training by model id: the one followed here, else one built from the
        history and the API (followed on while it trains, done when it has ended)."""
        with self._training_attach:
            live = self.live_training(model_id)
            if live is not None:
                return live
            try:
                record = self.history.training(model_id)
            except StorageError:
                record = None
            model = self._http.get(f"/models/{model_id}")["model"]
            training = self._training_from(record, model)
            with self._lock:
                self._trainings[model_id] = training
            self._poll_training_now(training)
            return training

    def _poll_training_now(self, training: Training) -> None:
        """Bring a re-attached handle up to date at once (ended: done before it is returned), then follow."""
        with self._lock:
            token = self._training_tokens[training.model_id] = next(self._seq)
        self._poll_training(training, token)

    def recover_trainings(self) -> list[Training]:
        """Once per engine: follow on every unfinished training of this backend found in the history."""
        with self._lock:
            if self._trainings_recovered:
                return []
            self._trainings_recovered = True
        try:
            rows = self.history.unfinished_trainings(self.backend_id)
        except StorageError:
            return []
        found = []
        for record in rows:
            try:
                found.append(self.reattach_training(record.model_id))
            except NotFoundError:
                training = self._training_from(record, None)
                training._set(status="failed" if record.status == "training" else "not-started",
                              error="the API no longer knows this model",
                              hint="it may have been deleted, or belong to a sandbox that stopped")
                self._end_training(training)
                found.append(training)
            except ScenarioError as exc:
                log.warning("could not follow on training %s: %s", record.model_id, exc)
        return found

    # -- Scheduling --------------------------------------------------------------------------------
    def _schedule(self, handle: Optional[Generation], delay: float, task: Callable, token: Any = None, *,
                  lane: str = "poll") -> None:
        with self._lock:
            if self._stopped:
                return
            heapq.heappush(self._queues[lane], (time.monotonic() + delay, next(self._seq), task, handle, token))
            threads = self._threads[lane] = [t for t in self._threads[lane] if t.is_alive()]
            if len(threads) < self._lane_sizes[lane]:
                thread = threading.Thread(target=self._work, args=(lane,), name=f"scenario-engine-{lane}",
                                          daemon=True)  # daemon: exit never waits for a request
                threads.append(thread)
                thread.start()
            self._wakeups[lane].notify()

    def _work(self, lane: str) -> None:
        """A worker of one lane: take its earliest due task, run it, repeat; exit after a minute of nothing."""
        queue, wakeup = self._queues[lane], self._wakeups[lane]
        idle_since = time.monotonic()
        while True:
            with self._lock:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    if queue and queue[0][0] <= now:
                        _, _, task, handle, token = heapq.heappop(queue)
                        break
                    if not queue and now - idle_since > 60:
                        self._threads[lane] = [t for t in self._threads[lane] if t is not threading.current_thread()]
                        return
                    wakeup.wait(queue[0][0] - now if queue else 60)
            try:
                task(handle, token) if token is not None else task(handle)
            except Exception as exc:  # never lose a job to a bug or an odd answer: try again later
                log.warning("%s on %s; trying again", exc, getattr(handle, "job_id", None))
                if handle is not None and not handle.done:
                    self._schedule(handle, self.ceiling, task, token, lane=lane)
            idle_since = time.monotonic()

__all__ = ["Engine", "DurationModel", "server_duration"]
