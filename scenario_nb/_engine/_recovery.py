"""Taking requests back: a live handle on any job by id, a request from the history followed on, and every
unfinished request of this backend recovered when a client starts (an earlier kernel's, or this one's)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from .._errors import (DownloadFailedError, JobFailedError, JobTimeoutError, NotFoundError, ScenarioError,
                       StorageError, SubmitFailedError)
from .._generation import Generation, Owner
from .._history import JobRecord, new_request_id
from .._http import Transport
from ._completer import Completer
from ._ledger import Ledger
from ._live import LiveRequests
from ._poller import Poller
from ._search import LostAnswerSearch

log = logging.getLogger("scenario_nb")


class Recovery:
    """Builds handles from the history and the server, and hands them to the poller or the search.

    `owner` is only handed to the handles it builds (what they ask for their store and to cancel)."""

    def __init__(self, owner: Owner, http: Transport, live: LiveRequests, ledger: Ledger, poller: Poller,
                 search: LostAnswerSearch, completer: Completer) -> None:
        self._owner = owner
        self._http = http
        self._live = live
        self._ledger = ledger
        self._poller = poller
        self._search = search
        self._completer = completer
        self._reattaching = threading.Lock()
        self._recovering = threading.Lock()
        self._recovered = False

    def reattach(self, job_id: str) -> Generation:
        """A live handle on any job by id: the one in flight, a timed-out or not-fetched one taken back, or a
        new one built from the history and the server."""
        with self._reattaching:  # one handle per job, even when a recovery and a front door ask at once
            return self._reattach(job_id)

    def _reattach(self, job_id: str) -> Generation:
        handle = self._live.for_job(job_id)
        if handle is not None and (not handle.done or handle.ok):
            return handle  # still followed, or finished here with its outputs
        if handle is not None and isinstance(handle.exception, (JobTimeoutError, DownloadFailedError)):
            handle._reopen()
            handle._set(note="")
            self._live.add(handle)
            self._poller.track(handle)
            return handle
        record = None
        try:
            record = self._ledger.history.get(job_id)
        except StorageError:
            pass
        job = self._http.get(f"/jobs/{job_id}")["job"]
        meta = job.get("metadata") or {}
        handle = self.handle_from(record, job)
        if record is None:
            echoed = dict(meta.get("input") or {})
            run_model = echoed.pop("modelId", "") or meta.get("workflowId") or ""
            handle.inputs, handle.model_id, handle.run_model_id = echoed, run_model, run_model
            handle.model_name = run_model
        self._poller.adopt(handle, job)
        return handle

    def handle_from(self, record: Optional[JobRecord], job: Optional[dict] = None) -> Generation:
        """A handle from a history row and/or the server's job (not followed yet)."""
        kind = record.kind if record else ("workflow" if (job or {}).get("jobType") == "workflow" else "generation")
        handle = Generation(self._owner, model_id=record.model_id if record else "",
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
        handle = self.handle_from(record)
        handle._set(job_id=record.job_id, outputs=self._completer.stored_outputs(record), text=record.text,
                    error=record.error, hint=record.hint, progress=1.0)
        handle._finish(None, record.status)
        handle._set(finished_at=record.finished_at or time.time())
        handle._settle()
        return handle

    def follow_record(self, record: JobRecord) -> Generation:
        """Follow on a request from the history (this kernel's or an earlier one's)."""
        if record.job_id:
            return self.reattach(record.job_id)
        live = self._live.get(record.request_id)
        if live is not None:
            return live
        handle = self.handle_from(record)
        if record.status == "waiting":  # an earlier kernel held it here and never sent it
            self._ledger.end(handle, SubmitFailedError(
                f"the request for {handle.model_name} was still waiting for the rate limit when its kernel "
                f"stopped; it was never sent and nothing was charged"), status="not-sent")
            return handle
        handle._set(status="unknown")
        self._live.add(handle)
        self._search.look_for(handle)
        return handle

    def recover(self) -> list[Generation]:
        """Once per engine: follow on every unfinished request of this backend found in the history."""
        with self._recovering:
            if self._recovered:
                return []
            self._recovered = True
        try:
            rows = self._ledger.history.unfinished(self._ledger.backend_id)
        except StorageError:
            return []
        handles = []
        for record in rows:
            try:
                handles.append(self.follow_record(record))
            except NotFoundError:
                if record.legacy:  # a schema-1 row: perhaps another key's job on this URL; not ours to judge
                    continue
                handle = self.handle_from(record)
                handle._set(job_id=record.job_id)
                self._ledger.end(handle, JobFailedError(record.job_id or "", "the API no longer knows this job",
                                                        "it may belong to another project, or to a sandbox that "
                                                        "stopped"), status="failure")
            except ScenarioError as exc:
                log.warning("could not follow on %s: %s", record.job_id or record.request_id, exc)
        return handles
