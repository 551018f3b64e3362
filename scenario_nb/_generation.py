"""`Generation`: a live handle on one job, updated by the client's poller, never blocking the kernel."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from ._errors import JobFailedError, JobTimeoutError, ScenarioError, StorageError
from ._models import TERMINAL_STATUSES

log = logging.getLogger("scenario_nb")

LOCAL_STATES = ("submitting", "throttled", "reconciling")


def parse_time(text: Any) -> Optional[float]:
    """An API timestamp (`2026-09-01T10:00:00.120Z`) as epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Generation:
    """One generation (or workflow run): status, progress, cost, and its images once downloaded.

    Returned at once by `client.generate(...)`; the client's single poller keeps it current. `wait()`
    blocks only the caller, and Ctrl-C stops the waiting, never the job.
    """

    def __init__(self, client, *, model_id: str, run_model_id: str, inputs: dict,
                 base_model_id: Optional[str] = None, source: str = "api", kind: str = "generation",
                 model_name: str = "") -> None:
        self.client = client
        self.model_id = model_id
        self.run_model_id = run_model_id
        self.base_model_id = base_model_id
        self.model_name = model_name or model_id
        self.inputs = dict(inputs)
        self.source = source
        self.kind = kind
        self.job_id: Optional[str] = None
        self.status = "submitting"
        self.progress = 0.0
        self.error: Optional[str] = None
        self.hint: Optional[str] = None
        self.exception: Optional[BaseException] = None
        self.cost: Optional[float] = None
        self.asset_ids: list[str] = []
        self.files: list[Path] = []
        self.seeds: list[Any] = []
        self.status_history: list[dict] = []
        self.submitted_at = time.time()
        self.finished_at: Optional[float] = None
        self.server_offset = 0.0
        self._sent_at = self.submitted_at
        self.uncertain = False  # its request's answer was lost once, and it was reconciled
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[["Generation"], None]] = []

    @classmethod
    def from_record(cls, client, record) -> "Generation":
        """A finished handle rebuilt from the history (no request made), e.g. for re-run safety."""
        handle = cls(client, model_id=record.model_id, run_model_id=record.base_model_id or record.model_id,
                     inputs=record.inputs, base_model_id=record.base_model_id, source=record.source,
                     kind=record.kind or "generation")
        handle.job_id, handle.status, handle.cost = record.job_id, record.status, record.cost
        handle.asset_ids, handle.files = list(record.asset_ids), [Path(f) for f in record.files]
        handle.error, handle.hint, handle.progress = record.error, record.hint, 1.0
        handle.submitted_at, handle.finished_at = record.created_at, record.finished_at or time.time()
        handle._done.set()
        return handle

    # -- What users read ---------------------------------------------------------------------------
    @property
    def prompt(self) -> str:
        return str(self.inputs.get("prompt", ""))

    @property
    def seed(self) -> Any:
        """The seed asked for, else the one the server chose for the first image."""
        return self.inputs.get("seed", self.seeds[0] if self.seeds else None)

    @property
    def done(self) -> bool:
        """Finished (images stored, history written); `wait()` returns once callbacks saw it too."""
        return self.finished_at is not None

    @property
    def ok(self) -> bool:
        return self.done and self.status == "success" and self.exception is None

    @property
    def images(self) -> list:
        """Full-resolution PIL images, loaded from the local file store."""
        return [self.client.store.open_image(a) for a in self.asset_ids if self.client.store.has(a)]

    def __repr__(self) -> str:
        return f"<Generation {self.job_id or '(not created yet)'} {self.model_name} {self.status}>"

    def summary(self) -> str:
        """One line: job, model, status, cost and what to do next."""
        parts = [self.job_id or "(no job yet)", self.model_name]
        if self.base_model_id:
            parts.append(f"via {self.base_model_id}")
        state = self.status if self.status != "in-progress" else f"in-progress {self.progress:.0%}"
        parts.append(state)
        if self.cost is not None:
            parts.append(f"{self.cost:g} CU")
        if self.asset_ids and self.status == "success":
            parts.append(f"{len(self.asset_ids)} image{'s' * (len(self.asset_ids) != 1)}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        text = " · ".join(str(p) for p in parts)
        if self.exception is not None:
            text += f"\n{self.exception}"
        return text

    def provenance(self) -> dict:
        """Everything needed to know (and reproduce) how these images were made."""
        return {"job_id": self.job_id, "model_id": self.model_id, "model_name": self.model_name,
                "base_model_id": self.base_model_id, "prompt": self.prompt, "seed": self.seed,
                "seeds": list(self.seeds), "inputs": self.inputs, "asset_ids": list(self.asset_ids),
                "cost": self.cost, "status": self.status, "kind": self.kind}

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ._display import generation_bundle
        return generation_bundle(self)

    # -- What users do -----------------------------------------------------------------------------
    def wait(self, timeout: Optional[float] = None) -> "Generation":
        """Block until done; returns self, or raises the job's error. Ctrl-C stops waiting, not the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(self.job_id or "(not created yet)", timeout)
        if self.exception is not None:
            raise self.exception
        return self

    def cancel(self) -> "Generation":
        """Cancel on the server (the job ends `canceled` shortly after); a queued request is dropped."""
        if self.done:
            if self.status in TERMINAL_STATUSES:
                from ._errors import InputError
                raise InputError(f"job {self.job_id} already ended ({self.status}); nothing to cancel")
            return self
        if self.job_id is None:
            self.client.poller.forget(self)
            self._finish(JobFailedError("(never created)", status="canceled"), status="canceled")
            return self
        self.client.cancel(self.job_id)
        self.client.poller.poll_soon(self)
        return self

    def on_update(self, callback: Callable[["Generation"], None]) -> "Generation":
        """Call `callback(self)` on every change, from the poller thread.

        Callbacks may set widget values; they must not print or display (that output would land in
        whatever cell is running). Called once right away so a view can draw the current state.
        """
        with self._lock:
            self._callbacks.append(callback)
        self._call(callback)
        return self

    def save(self, directory: Union[str, Path], only: Optional[Iterable[str]] = None) -> list[Path]:
        """Write each image (or the asset ids in `only`) as PNG with provenance in its text chunks, plus a
        JSON sidecar; returns the paths."""
        if not self.ok:
            raise StorageError(f"job {self.job_id} has no images to save yet ({self.status})")
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {directory}: {exc.strerror or exc}") from None
        prov = self.provenance()
        written = []
        wanted = set(only) if only is not None else set(self.asset_ids)
        for index, asset_id in enumerate(self.asset_ids):
            if asset_id not in wanted:
                continue
            seed = self.seeds[index] if index < len(self.seeds) else self.seed
            text = {"prompt": self.prompt, "model": self.model_id, "model_name": self.model_name,
                    "seed": "" if seed is None else str(seed), "job_id": self.job_id or "",
                    "asset_id": asset_id, "inputs": json.dumps(self.inputs, sort_keys=True),
                    "Software": "scenario_nb"}
            stem = f"{self.job_id}_{index}"
            written.append(self.client.store.save_png_with_metadata(asset_id, directory / f"{stem}.png", text))
        sidecar = directory / f"{self.job_id}.json"
        tmp = sidecar.with_suffix(".json.part")
        try:
            tmp.write_text(json.dumps({**prov, "files": [p.name for p in written]}, indent=2, default=str))
            tmp.replace(sidecar)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {sidecar}: {exc.strerror or exc}") from None
        return written + [sidecar]

    # -- Called by the client and the poller ---------------------------------------------------------
    def _attach(self, job_id: str, job: dict, cost: Any, new: bool = True) -> None:
        """The job exists: remember it (history first, so a killed kernel loses nothing)."""
        self.job_id = job_id
        if cost is not None:
            self.cost = float(cost)
        created = parse_time(job.get("createdAt"))
        if new and created:
            self.server_offset = time.time() - created
            self.submitted_at = created + self.server_offset
        elif created:
            self.submitted_at = created
        self._apply(job, notify=False)
        history = self.client.history
        from ._history import History, JobRecord
        if new or history.get(job_id) is None:
            history.record(JobRecord(
                job_id=job_id, backend_url=self.client.base_url, model_id=self.model_id,
                base_model_id=self.base_model_id, prompt=self.prompt, inputs=self.inputs,
                request_key=History.request_key(self.model_id, self.prompt, self.inputs), cost=self.cost,
                status=self.status, progress=self.progress, asset_ids=[], files=[], error=None, hint=None,
                source=self.source, kind=self.kind, created_at=self.submitted_at, updated_at=time.time(),
                finished_at=None))
        self._notify()

    def _apply(self, job: dict, notify: bool = True) -> bool:
        """Take a fresh job object; returns True when the status changed."""
        meta = job.get("metadata") or {}
        status = str(job.get("status") or self.status)
        changed = status != self.status
        with self._lock:
            self.status = status
            try:
                self.progress = max(0.0, min(1.0, float(job.get("progress") or 0)))
            except (TypeError, ValueError):
                pass
            if status == "success":
                self.progress = 1.0
            self.status_history = list(job.get("statusHistory") or self.status_history)
            self.error = meta.get("error") or self.error
            self.hint = meta.get("hint") or self.hint
            billing = job.get("billing") or {}
            if self.cost is None and billing.get("cuCost") is not None:
                self.cost = float(billing["cuCost"])
        if notify:
            self._notify()
        return changed

    def _throttled(self, retry_after: Optional[float]) -> None:
        self.status = "throttled"
        self._notify()

    def _uncertain(self, sent_at: float) -> None:
        self.status, self._sent_at, self.uncertain = "reconciling", sent_at, True
        self._notify()

    def _finish(self, exception: Optional[BaseException] = None, *, status: Optional[str] = None) -> None:
        """Mark done (after any images are stored) and record the outcome in the history."""
        if status:
            self.status = status
        self.exception = exception
        self.finished_at = time.time()
        if self.job_id and not isinstance(exception, JobTimeoutError):
            try:
                self.client.history.update(
                    self.job_id, status=self.status, progress=self.progress, asset_ids=self.asset_ids,
                    files=[str(f) for f in self.files], error=self.error or (str(exception) if exception else None),
                    hint=self.hint, cost=self.cost, finished_at=self.finished_at, updated_at=self.finished_at)
            except ScenarioError as exc:
                log.warning("could not update the history for %s: %s", self.job_id, exc)
        self._notify()
        self._done.set()

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            self._call(callback)

    def _call(self, callback: Callable[["Generation"], None]) -> None:
        try:
            callback(self)
        except Exception:  # a broken view must not stop the poller
            log.exception("scenario_nb: an on_update callback failed")


def wait_all(handles: Iterable[Generation], timeout: Optional[float] = None) -> list[Generation]:
    """Wait until every handle is done (succeeded or failed); returns them. Errors stay on `.exception`."""
    handles = list(handles)
    deadline = None if timeout is None else time.monotonic() + timeout
    for handle in handles:
        while not handle._done.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                pending = [h.job_id for h in handles if not h.done]
                raise JobTimeoutError(", ".join(str(j) for j in pending), timeout)
    return handles
