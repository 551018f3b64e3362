"""The ledger: every request and training written to the history before it is sent, and after every step.

If the history cannot be written before sending, nothing is sent (the caller gets `StorageError`); after
sending, a failed write is noted on the handle and in the log, and the job is followed all the same: it is
paid for.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from .._errors import StorageError
from .._generation import Generation
from .._prompts import prompt_of
from .._history import TERMINAL, History, JobRecord, TrainingRecord, new_request_id
from .._history_trainings import this_process
from .._training import Training
from ._live import LiveRequests

log = logging.getLogger("scenario_nb")


class Ledger:
    """Writes handles' rows in the history of one backend, and ends requests (forgotten, finished, recorded)."""

    def __init__(self, history: Callable[[], History], live: LiveRequests, *, backend_id: str,
                 base_url: str) -> None:
        self._history_factory = history
        self._live = live
        self.backend_id = backend_id
        self.base_url = base_url

    @property
    def history(self) -> History:
        return self._history_factory()

    @staticmethod
    def request_key(handle: Generation) -> str:
        """What makes two requests the same request (the model, the prompt, the inputs)."""
        return History.request_key(handle.model_id, prompt_of(handle.inputs), handle.inputs)

    def _row(self, handle: Generation) -> JobRecord:
        return JobRecord(
            request_id=handle.request_id, job_id=handle.job_id, backend_id=self.backend_id,
            backend_url=self.base_url, model_id=handle.model_id, base_model_id=handle.base_model_id,
            model_name=handle.model_name, prompt=handle.prompt, inputs=handle.inputs,
            request_key=self.request_key(handle), cost=handle.cost, status=handle.status, progress=handle.progress,
            asset_ids=handle.asset_ids, mime_types=[o.mime_type for o in handle.outputs],
            files=[str(p) for p in handle.files], text=handle.text,
            error=handle.error or (str(handle.exception) if handle.exception else None), hint=handle.hint,
            source=handle.source, kind=handle.kind, sent_at=handle.sent_at, created_at=handle.submitted_at,
            updated_at=time.time(), finished_at=handle.finished_at)

    def record(self, handle: Generation, *, before_sending: bool = False) -> None:
        """Write the handle's row. Before sending, a failure refuses the request; after, it is reported on
        the handle and in the log, and the job is followed all the same (it is paid for)."""
        try:
            self.history.record(self._row(handle))
        except StorageError as exc:
            if before_sending:
                raise StorageError(f"{exc}; nothing was sent") from None
            handle._set(note=f"not recorded in the history: {exc}")
            log.warning("job %s is not in the history: %s", handle.job_id or handle.request_id, exc)

    def mark(self, handle: Generation, status: str) -> None:
        """A local status change: recorded, then shown."""
        handle._set(status=status)
        self.record(handle)
        handle._notify()

    def end(self, handle: Generation, exception: Optional[BaseException], *, status: Optional[str] = None,
            record: bool = True) -> None:
        """Mark a handle done, after its outputs are stored, and record the outcome."""
        self._live.forget(handle.request_id)
        handle._finish(exception, status)
        if record:
            self.record(handle)
        handle._notify()
        handle._settle()  # wait() returns once the history and every view have seen the end

    def record_training(self, training: Training, *, before_sending: bool = False) -> None:
        """Write the training's row. Before its training is started, a failure refuses it; after, it is
        noted on the handle and in the log, and the training is followed all the same."""
        row = TrainingRecord(
            model_id=training.model_id, backend_id=self.backend_id, backend_url=self.base_url, name=training.name,
            type=training.type, job_id=training.job_id, status=training.status, stage=training.stage,
            progress=training.progress, remaining=training.remaining, cost=training.cost,
            parameters=training.parameters, images=[i.as_dict() for i in training.images], error=training.error,
            hint=training.hint, created_at=training.created_at, updated_at=time.time(),
            finished_at=training.finished_at, start_sent_at=training.start_sent_at, owner=this_process())
        try:
            self.history.record_training(row)
        except StorageError as exc:
            if before_sending:
                raise StorageError(f"{exc}; the training was not started") from None
            training._set(note=f"not recorded in the history: {exc}")
            log.warning("training %s is not in the history: %s", training.model_id, exc)

    # -- The workbench's own paid steps: a model created, a training image uploaded ----------------------------
    def intent(self, kind: str, *, name: str, what: str, model_id: str = "") -> JobRecord:
        """A workbench request's row (`model` or `upload`), written before it leaves: `sending`. A failed write
        refuses it (`StorageError`: nothing sent)."""
        now = time.time()
        row = JobRecord(request_id=new_request_id(), backend_id=self.backend_id, backend_url=self.base_url,
                        model_id=model_id, model_name=name, prompt=what, kind=kind, status="sending",
                        source="workbench", sent_at=now, created_at=now, updated_at=now)
        try:
            self.history.record(row)
        except StorageError as exc:
            raise StorageError(f"{exc}; nothing was sent") from None
        return row

    def settle(self, row: JobRecord, status: str, **changes: object) -> None:
        """A workbench row's outcome: `success` (its id known), `unknown` (the answer lost and not found yet: it may
        exist), `not-sent` (proven never made). A failed write is logged: what was made is on the server."""
        for name, value in changes.items():
            setattr(row, name, value)
        row.status, row.updated_at = status, time.time()
        if status in TERMINAL:
            row.finished_at = row.updated_at
        try:
            self.history.record(row)
        except StorageError as exc:
            log.warning("the %s of %s is not in the history: %s", row.kind, row.model_name, exc)
