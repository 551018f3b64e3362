"""The training follower: trainings started, followed, cancelled, re-attached and recovered.

A training is followed on the poll lane beside the jobs (no thread of its own): `GET /models/{id}` at a
cadence from the server's remaining time, and `GET /jobs/{jobId}` once when it fails, for the error and hint
(the model carries none). Its row in the history's `trainings` table is written before anything waits and
after every change, so a new kernel follows it on (`recover_trainings`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Optional

from .._errors import (APIConnectionError, APIError, BadRequestError, NotFoundError, RateLimitError,
                       ScenarioError, ServerError, StorageError)
from .._generation import parse_cost
from .._history import TRAINING_TERMINAL, TrainingRecord
from .._http import Transport
from .._training import CANCEL_WORDS, Training, TrainingOwner
from ._lanes import Lanes
from ._ledger import Ledger
from ._live import Settings
from ._training_rows import training_from

if TYPE_CHECKING:

    from .._models import Model
    from .._store import FileStore

log = logging.getLogger("scenario_nb")

TRAINING_CEILING = 10.0  # seconds between two polls of one training, at most


class TrainingFollower:
    """Keeps every training of one backend current: one live handle per model id, recorded at every change.

    `owner` is only handed to the handles it builds (what they call to cancel); it is never called here."""

    def __init__(self, owner: TrainingOwner, http: Transport, lanes: Lanes, ledger: Ledger, settings: Settings, *,
                 store: Callable[[], "FileStore"]) -> None:
        self._owner = owner
        self._http = http
        self._lanes = lanes
        self._ledger = ledger
        self._settings = settings
        self._store_factory = store
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._trainings: dict[str, Training] = {}  # model id -> the one live handle on a training followed here
        self._tokens: dict[str, int] = {}  # model id -> the one poll task that counts
        self._errors: dict[str, int] = defaultdict(int)  # model id -> failed polls in a row
        self._refusals: dict[str, int] = defaultdict(int)  # model id -> 429s at its start in a row
        self._starting: set[str] = set()  # waiting trainings whose start is being sent
        self._recovered = False
        self._attaching = threading.Lock()

    def live_training(self, model_id: str) -> Optional[Training]:
        with self._lock:
            return self._trainings.get(model_id)

    def trainings_in_flight(self) -> list[Training]:
        with self._lock:
            return [t for t in self._trainings.values() if not t.done]

    def start_training(self, training: Training, parameters: dict) -> None:
        """Record that the training's start may be sent (`unknown`), then `PUT /models/{id}/train` exactly once.

        A refusal (an answer other than 5xx) raises, and nothing was started. A lost answer (no answer, a 5xx, a
        Ctrl-C while waiting) is never sent again: the model is followed, and its status tells (see `_poll`).
        """
        training._set(stage="starting", status="unknown", start_sent_at=time.time())
        try:
            self._ledger.record_training(training, before_sending=True)  # StorageError: nothing is started
            data = self._http.request("PUT", f"/models/{training.model_id}/train",
                                      json_body={"parameters": parameters})
        except (APIConnectionError, ServerError) as exc:
            training._set(note=f"the answer to starting the training was lost ({exc}); following the model")
            self.follow_training(training)
            return
        except (APIError, StorageError):  # refused by the server (or never sent): nothing started
            training._set(status="new", start_sent_at=None)
            raise
        job = data.get("job") or {}
        cost = data.get("creativeUnitsCost")
        if cost is None:
            cost = (data.get("creativeUnits") or {}).get("estimatedCreativeUnits")
        cost = parse_cost(cost)  # a cost that is not a number is a cost not known: the job id is kept
        training._set(job_id=job.get("jobId") or job.get("id") or training.job_id, status="training",
                      cost=cost if cost is not None else training.cost)
        self._take(training, data.get("model") or {})
        self.follow_training(training)

    def wait_for_slot(self, training: Training, refusal: RateLimitError) -> None:
        """A start refused with 429 (too many trainings at once, or a cooldown): nothing started, and the model
        keeps its captioned images. It waits here (`waiting`, recorded) and is started again after the backoff
        policy's wait for 429s (the server's `Retry-After` or `remainingSeconds` first), or at once when one of
        this engine's trainings ends, or on `resume_training`. Never captioned nor uploaded again."""
        with self._lock:
            self._trainings[training.model_id] = training
            self._refusals[training.model_id] += 1
            refusals = self._refusals[training.model_id]
        training._set(status="waiting", stage="", note=f"waiting for a training slot ({refusal.reason}); it starts "
                      f"by itself when one frees, or now with %scenario train resume \"{training.name}\"")
        self._ledger.record_training(training)
        training._notify()
        self._schedule(training, self._http.backoff.delay(refusals - 1, refusal.retry_after, base=2.0, cap=60.0))

    def resume_training(self, training: Training) -> None:
        """A training waiting for a slot: try to start it now."""
        if training.status == "waiting":
            self._schedule(training, 0.0)

    def _start_again(self, training: Training) -> None:
        """A waiting training's turn: unless the model shows it started (another kernel), `PUT /train` again."""
        try:
            model = self._http.get(f"/models/{training.model_id}")["model"]
        except ScenarioError as exc:
            log.info("reading waiting training %s failed (%s); trying again", training.model_id, exc)
            self._schedule(training, self._http.backoff.delay(2, base=2.0, cap=60.0))
            return
        if model.get("status") != "new":  # started elsewhere, or gone: followed from its model from now on
            training._set(status="unknown")
            self._poll(training)
            return
        try:
            self.start_training(training, training.parameters)
        except RateLimitError as exc:
            self.wait_for_slot(training, exc)
        except (APIError, StorageError) as exc:
            training._set(status="not-started", error=f"Scenario refused to start the training: {exc}; nothing "
                          f"was charged for it (its model is kept)")
            self._end(training)

    def _take(self, training: Training, model: dict) -> bool:
        """Apply the API's model to the handle. Right after a start, `new` proves nothing: the model may not
        show its training yet, so a start answered (`training`) or unanswered (`unknown`) stays as it is."""
        if model.get("status") == "new" and training.status in ("unknown", "training"):
            model = {**model, "status": training.status}
        return training._apply_model(model)

    def _never_started(self, training: Training, model: dict) -> bool:
        """Proof that a training was not started: never sent, or a start whose answer was lost and whose model
        still reads `new`, with no training job, after the grace (`Settings.start_grace`)."""
        if model.get("status") != "new" or training.status not in ("new", "unknown"):
            return False
        if training.status == "new":
            return True
        sent = training.start_sent_at or training.created_at
        return time.time() - sent >= self._settings.start_grace and not model.get("jobId")

    def follow_training(self, training: Training) -> Training:
        """Keep a training current from now on: recorded, shown, polled."""
        with self._lock:
            self._trainings[training.model_id] = training
        self._ledger.record_training(training)
        training._notify()
        self._schedule(training, 0.0)
        return training

    def _schedule(self, training: Training, delay: float) -> None:
        with self._lock:
            token = self._tokens[training.model_id] = next(self._seq)
        self._lanes.schedule(training, delay, self._poll, token)

    def _delay(self, training: Training) -> float:
        """clamp(remaining / 5, floor, 10 s); without a remaining time, a tenth of the training's age."""
        floor, left = self._settings.floor, training.remaining
        if left is not None:
            return min(TRAINING_CEILING, max(floor, left / 5))
        return min(TRAINING_CEILING, max(floor, 0.1 * (time.time() - training.created_at)))

    def _stale(self, training: Training, token: Optional[int]) -> bool:
        """Ended, or a poll scheduled since (under the lock)."""
        return training.done or (token is not None and self._tokens.get(training.model_id) != token)

    def _poll(self, training: Training, token: Optional[int] = None) -> None:
        with self._lock:
            if self._stale(training, token):
                return
            starting = training.status == "waiting"
            if starting and training.model_id in self._starting:
                return  # its start is on the wire: one `PUT /train` at a time, whoever woke it
            if starting:
                self._starting.add(training.model_id)
        if starting:
            try:
                self._start_again(training)
            finally:
                with self._lock:
                    self._starting.discard(training.model_id)
            return
        try:
            model = self._http.get(f"/models/{training.model_id}")["model"]
        except NotFoundError:
            training._set(status="failed" if training.status == "training" else "not-started",
                          error="the API no longer knows this model",
                          hint="it may have been deleted, or belong to a sandbox that stopped")
            self._end(training)
            return
        except ScenarioError as exc:  # transient: the transport already retried; never lose a training
            with self._lock:
                self._errors[training.model_id] += 1
                errors = self._errors[training.model_id]
            log.info("poll of training %s failed (%s); trying again", training.model_id, exc)
            self._schedule(training, self._http.backoff.delay(min(errors, 6), getattr(exc, "retry_after", None),
                                                              base=self._settings.floor, cap=TRAINING_CEILING))
            return
        with self._lock:
            self._errors.pop(training.model_id, None)
            if self._stale(training, token):
                return  # a poll woken since (by a cancel, say) asked later: this answer is older than what it saw
        never_started = self._never_started(training, model)
        changed = self._take(training, model)
        if never_started:  # nothing charged for the training; the model stays, a draft
            training._set(status="not-started", stage="", error=training.error or
                          "the training was never started on the server; nothing was charged for it (its model is "
                          "kept: training the same name again reuses it)")
        if training.status in ("failed", "training-canceled") and training.job_id:
            try:
                meta = (self._http.get(f"/jobs/{training.job_id}")["job"].get("metadata") or {})
                training._set(error=meta.get("error") or training.error, hint=meta.get("hint") or training.hint)
            except ScenarioError as exc:
                log.info("reading the job of failed training %s failed (%s)", training.model_id, exc)
        if training.status in TRAINING_TERMINAL:
            self._end(training)
            return
        if changed:
            self._ledger.record_training(training)
        training._notify()
        self._schedule(training, self._delay(training))

    def _end(self, training: Training) -> None:
        """Mark a training done, record it, show it, then release its waiters."""
        with self._lock:
            self._tokens.pop(training.model_id, None)
            self._refusals.pop(training.model_id, None)
            waiting = [t for t in self._trainings.values() if t.status == "waiting"]
        training._finish()
        self._ledger.record_training(training)
        training._notify()
        training._settle()
        for other in waiting:  # a slot may have freed
            self._schedule(other, 0.0)

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
                training._set(note=f"{CANCEL_WORDS['refused']}: {exc.reason}")
            except (RateLimitError, APIConnectionError, ServerError):
                outcome = "unavailable"
            if not training.done:
                self._schedule(training, 0.0)
        if outcome != "refused":
            training._set(note=CANCEL_WORDS[outcome])
        training._notify()
        return outcome

    def training_model(self, training: Training) -> "Model":
        from .._models import Model
        return Model.parse(self._http.get(f"/models/{training.model_id}")["model"])

    # -- Handles from the history and the API ------------------------------------------------------------
    def _training_from(self, record: Optional[TrainingRecord], model: Optional[dict]) -> Training:
        return training_from(self._owner, record, model, self._store_factory)

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
        with self._attaching:
            live = self.live_training(model_id)
            if live is not None:
                return live
            try:
                record = self._ledger.history.training(model_id)
            except StorageError:
                record = None
            model = self._http.get(f"/models/{model_id}")["model"]
            training = self._training_from(record, model)
            with self._lock:
                self._trainings[model_id] = training
            self._poll_now(training)
            return training

    def _poll_now(self, training: Training) -> None:
        """Bring a re-attached handle up to date at once (ended: done before it is returned), then follow."""
        with self._lock:
            token = self._tokens[training.model_id] = next(self._seq)
        self._poll(training, token)

    def recover_trainings(self) -> list[Training]:
        """Once per engine: follow on every unfinished training of this backend found in the history."""
        with self._lock:
            if self._recovered:
                return []
            self._recovered = True
        try:
            rows = [r for r in self._ledger.history.unfinished_trainings(self._ledger.backend_id)
                    if r.status != "preparing"]  # a claim: its process prepares it (or the next train takes it)
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
                self._end(training)
                found.append(training)
            except ScenarioError as exc:
                log.warning("could not follow on training %s: %s", record.model_id, exc)
        return found
