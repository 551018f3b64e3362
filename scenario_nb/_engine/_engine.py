"""The engine: the parts wired together, behind the interface the client and the handles use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .._errors import APIConnectionError, BadRequestError, JobFailedError, RateLimitError
from .._generation import CANCEL_WORDS, Generation
from .._history import History, JobRecord, TrainingRecord
from .._http import Transport
from .._estimate import CostEstimate
from .._local_images import LocalImage
from .._training import Captions, Training, TrainingPlan
from ._clock import Clock
from ._completer import Completer
from ._lanes import Lanes
from ._ledger import Ledger
from ._live import LiveRequests, Settings
from ._poller import Poller
from ._recovery import Recovery
from ._search import LostAnswerSearch
from ._sender import Sender
from ._timing import DurationModel, PollTiming, ServerClock
from ._trainings import TrainingFollower
from ._workbench import Confirm, Workbench

if TYPE_CHECKING:
    from .._models import Model
    from .._store import FileStore


def lane_sizes(workers: int = 8) -> dict[str, int]:
    """Worker threads per lane: polls (and searches) on two — a poll costs ~0.5 ms of CPU —, output downloads on
    the rest, so a burst of downloads never holds up seeing the next success, and up to four requests being
    sent side by side. (The client sizes its connection pool from these.)"""
    return {"poll": 2, "fetch": max(1, workers - 2), "send": 4}


class _Setting:
    """An engine attribute that is a field of its shared `Settings` (the client sets some at any time)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, engine: Any, owner: Optional[type] = None) -> float:
        return getattr(engine.settings, self._name)

    def __set__(self, engine: Any, value: float) -> None:
        setattr(engine.settings, self._name, value)


class Engine:
    """Submits, follows, completes and records every request of one client (one backend).

    Built from parts, each handed what it uses: the lanes (worker threads), the live requests (shared
    bookkeeping), the ledger (the history), the timing model, the poller, the completer, the lost-answer
    search, the sender (with the 429 queue), the recovery of handles, and the training follower."""

    floor = _Setting()
    ceiling = _Setting()
    job_timeout = _Setting()
    search_seconds = _Setting()
    target_quantile = _Setting()
    start_grace = _Setting()

    def __init__(self, http: Transport, *, history: Callable[[], History], store: Callable[[], "FileStore"],
                 backend_id: str, floor: float = 0.25, ceiling: float = 5.0, job_timeout: float = 3600.0,
                 workers: int = 8, target_quantile: float = 0.7, clock: Optional[Clock] = None) -> None:
        self._http = http
        self._store_factory = store
        self.backend_id = backend_id
        self.base_url = http.base_url
        self.settings = Settings(floor=floor, ceiling=ceiling, job_timeout=job_timeout,
                                 target_quantile=target_quantile, clock=clock or Clock())
        self._lanes = Lanes(lane_sizes(workers), self.settings)
        self._live = LiveRequests(self.settings.clock)
        self._ledger = Ledger(history, self._live, backend_id=backend_id, base_url=self.base_url)
        self._timing = PollTiming(self._live, self.settings, history=history, backend_id=backend_id)
        self._completer = Completer(http, store, self._lanes, self._ledger, self.settings)
        self._server_clock = ServerClock()
        self._poller = Poller(http, self._lanes, self._live, self._timing, self._ledger, self.settings,
                             complete=self._completer.complete, server_clock=self._server_clock)
        self._search = LostAnswerSearch(http, self._lanes, self._live, self._ledger, self.settings,
                                       adopt=self._poller.adopt, server_clock=self._server_clock)
        self._sender = Sender(http, self._lanes, self._live, self._ledger, self.settings, adopt=self._poller.adopt,
                             look_for=self._search.look_for)
        self._recovery = Recovery(self, http, self._live, self._ledger, self._poller, self._search, self._completer)
        self._trainings = TrainingFollower(self, http, self._lanes, self._ledger, self.settings, store=store)
        self._workbench = Workbench(self, http, self._ledger, self._trainings, store=store)

    # -- Local state -------------------------------------------------------------------------------
    @property
    def history(self) -> History:
        return self._ledger.history

    @property
    def store(self) -> "FileStore":
        return self._store_factory()

    @property
    def durations(self) -> DurationModel:
        """Recent server-side durations per model (`DurationModel`)."""
        return self._timing.durations

    def in_flight(self) -> list[Generation]:
        """Every request not finished: waiting here, being sent, looked for, or running on the server."""
        return self._live.in_flight()

    def waiting(self) -> list[Generation]:
        """Requests held here by the rate limit: not sent, not charged."""
        return self._sender.waiting()

    def live_handle(self, *, job_id: Optional[str] = None, request_id: Optional[str] = None,
                    request_key: Optional[str] = None) -> Optional[Generation]:
        if job_id:
            return self._live.for_job(job_id)
        if request_id:
            return self._live.get(request_id)
        same = self._live.matching(lambda h: not h.done and Ledger.request_key(h) == request_key)
        return same[0] if same else None

    def close(self) -> None:
        """Stop following (jobs keep running on the server; the history knows them)."""
        self._lanes.close()

    @property
    def closed(self) -> bool:
        return self._lanes.closed

    # -- Sending -----------------------------------------------------------------------------------
    def submit(self, handle: Generation, *, block: bool = True) -> Generation:
        """Record the request, then send it once (or queue it behind the rate limit).

        With `block`, returns when the request has an answer (a job, a 429, or a lost answer); a Ctrl-C
        while waiting stops only the waiting: the request goes on in the background and stays in the ledger.
        """
        self._sender.submit(handle)
        if block:
            self.wait_answered([handle])
        return handle

    def submit_many(self, handles: list[Generation]) -> list[Generation]:
        """Record and send several requests side by side (a few senders); returns once each has an answer.

        Each is recorded before it is sent; if the history fails part-way, those already sent go on and the
        rest are refused (`StorageError`, nothing sent for them).
        """
        for handle in handles:
            self._sender.submit(handle)
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

    # -- What handles and front doors ask for ------------------------------------------------------------
    def cancel(self, handle: Generation) -> str:
        """Try to stop a request or its job; returns the outcome (see `Generation.cancel`)."""
        if handle.done:
            outcome = "finished"
        elif handle.job_id is None:
            if self._sender.drop(handle):
                handle._set(note=CANCEL_WORDS["dropped"])
                self._ledger.end(handle, JobFailedError(handle.request_id, status="canceled",
                                                       text="canceled before it was sent: nothing was charged"),
                                status="not-sent")
                return "dropped"
            outcome = "unavailable"
        else:
            try:
                self._http.request("POST", f"/jobs/{handle.job_id}/action", json_body={"action": "cancel"})
                outcome = "requested"
                self._poller.poll_soon(handle)
            except BadRequestError as exc:
                outcome = "refused" if "cancel" in exc.reason.lower() else "unavailable"
            except (RateLimitError, APIConnectionError):
                outcome = "unavailable"
        handle._set(note=CANCEL_WORDS[outcome])
        handle._notify()
        return outcome

    def reattach(self, job_id: str) -> Generation:
        """A live handle on any job by id (see `Recovery.reattach`)."""
        return self._recovery.reattach(job_id)

    def finished_handle(self, record: JobRecord) -> Generation:
        """A done handle rebuilt from a history row whose outputs are all stored (no request made)."""
        return self._recovery.finished_handle(record)

    def outputs_stored(self, record: JobRecord) -> bool:
        """Whether a successful row's outputs are all on disk (then it can be shown with no request)."""
        return self._completer.outputs_stored(record)

    def follow_record(self, record: JobRecord) -> Generation:
        """Follow on a request from the history (this kernel's or an earlier one's)."""
        return self._recovery.follow_record(record)

    def recover(self) -> list[Generation]:
        """Once per engine: follow on every unfinished request of this backend found in the history."""
        return self._recovery.recover()

    # -- Trainings (see `TrainingFollower`) ----------------------------------------------------------------
    def live_training(self, model_id: str) -> Optional[Training]:
        return self._trainings.live_training(model_id)

    def trainings_in_flight(self) -> list[Training]:
        return self._trainings.trainings_in_flight()

    def train(self, plan: TrainingPlan, *, dry_run: bool = False, max_cost: Optional[float] = None,
              confirm: Optional[Confirm] = None) -> Union[Training, CostEstimate]:
        """Create, price, caption, upload and start a training (see `Workbench.train`)."""
        return self._workbench.train(plan, dry_run=dry_run, max_cost=max_cost, confirm=confirm)

    def drafts(self) -> list[dict]:
        """Untrained models this project made (see `OwnModels.drafts`)."""
        return self._workbench.drafts()

    def delete_draft(self, name_or_id: str) -> dict:
        return self._workbench.delete_draft(name_or_id)

    def caption_images(self, images: list[LocalImage], details_level: str,
                       max_cost: Optional[float] = None) -> Captions:
        return self._workbench.caption_images(images, details_level, max_cost)

    def resume_training(self, training: Training) -> None:
        self._trainings.resume_training(training)

    def cancel_training(self, training: Training) -> str:
        return self._trainings.cancel_training(training)

    def training_model(self, training: Training) -> "Model":
        return self._trainings.training_model(training)

    def finished_training(self, record: TrainingRecord) -> Training:
        return self._trainings.finished_training(record)

    def reattach_training(self, model_id: str) -> Training:
        return self._trainings.reattach_training(model_id)

    def recover_trainings(self) -> list[Training]:
        return self._trainings.recover_trainings()
