"""`Generation`: a live handle on one request and its job. State plus a small public API.

The engine (`_engine/`) is the only thing that changes a handle: it sends the request, follows the job,
stores its outputs and records every step in the history. Front doors read the state and call the public
methods (`wait`, `cancel`, `save`, `on_update`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Union

from ._errors import InputError, JobFailedError, JobTimeoutError, ScenarioError, StorageError, SubmitFailedError
from ._prompts import prompt_key

if TYPE_CHECKING:
    from PIL.Image import Image

    from ._store import FileStore


class Owner(Protocol):
    """What a handle needs from the engine that keeps it current: where it runs, where its outputs are, and
    the one action it can ask for."""

    base_url: str

    @property
    def store(self) -> "FileStore": ...

    def cancel(self, handle: "Generation") -> str: ...


class Detached:
    """The owner of a handle built from plain values (a test, a record shown again): no engine follows it or
    can cancel it, it runs nowhere, and its outputs are the files it was given."""

    base_url = ""

    @property
    def store(self) -> "FileStore":
        from ._store import FileStore
        return FileStore(os.devnull)  # no folder of its own: it only reads and copies the paths it is handed

    def cancel(self, handle: "Generation") -> str:
        if handle.done:
            handle._set(note=CANCEL_WORDS["finished"])
            return "finished"
        handle._set(note="nothing follows this handle (it was built from plain values); cancel its job with "
                         "client.cancel(job_id)")
        return "unavailable"


FINAL = ("success", "failure", "canceled", "not-sent")

log = logging.getLogger("scenario_nb")

STATUS_WORDS = {
    "sending": "sending", "waiting": "queued here (waiting for a free slot; not sent yet)",
    "unknown": "answer lost (looking for its job)", "not-sent": "not sent (nothing charged)",
    "download-failed": "finished, outputs not fetched", "timeout": "stopped watching (still running)",
}
CANCEL_WORDS = {
    "dropped": "canceled before it was sent: nothing was charged",
    "requested": "cancel requested: the job ends as canceled shortly",
    "refused": "Scenario does not cancel this kind of job: it will finish and be charged, and its images "
               "will still arrive",
    "finished": "already finished: nothing to cancel",
    "unavailable": "could not ask Scenario to cancel it right now (rate limit or network); it keeps running",
}


def parse_time(text: Any) -> Optional[float]:
    """An API timestamp (`2026-09-01T10:00:00.120Z`) as epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_cost(value: Any) -> Optional[float]:
    """A cost in creative units from an answer, or None when it is missing or not a number (an odd cost is a
    cost not known: never a reason to lose the job it came with)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        cost = float(value)
    except (TypeError, ValueError):
        log.warning("the API answered a cost that is not a number (%r); it is shown as not known", value)
        return None
    return cost if cost == cost and abs(cost) != float("inf") else None


def kind_of(mime_type: str) -> str:
    """An asset kind (as the API names them) from a MIME type: image, video, 3d, audio, text or document."""
    family = mime_type.split("/")[0]
    return {"model": "3d", "application": "document"}.get(family, family)


@dataclass(frozen=True)
class Output:
    """One stored output of a job: an image, a video, a 3D model, a document…"""

    asset_id: str
    kind: str
    mime_type: str
    path: Path

    @property
    def is_image(self) -> bool:
        return self.kind == "image" or self.mime_type.startswith("image/")


class Generation:
    """One generation (or workflow run): status, progress, cost, and its outputs once stored.

    Returned at once by `client.generate(...)`; the client's engine (its `owner`) keeps it current from a
    background thread. `wait()` blocks only the caller, and Ctrl-C stops the waiting, never the job.

    Built from plain values (no owner), it is a record of a job that nothing follows:
    `Generation(model_id="flux.1-dev", prompt="a lighthouse", status="success", job_id="job_1", outputs=[...])`.
    A final status (success, failure, canceled, not-sent) makes it done at once.
    """

    def __init__(self, owner: Optional[Owner] = None, *, model_id: str, prompt: Optional[str] = None,
                 inputs: Optional[dict] = None, status: str = "sending", job_id: Optional[str] = None,
                 outputs: Iterable[Output] = (), cost: Optional[float] = None, error: Optional[str] = None,
                 run_model_id: Optional[str] = None, base_model_id: Optional[str] = None, source: str = "api",
                 kind: str = "generation", model_name: str = "", request_id: str = "",
                 prompt_name: str = "") -> None:
        self._engine: Owner = owner if owner is not None else Detached()
        self.request_id = request_id
        self.model_id = model_id
        self.run_model_id = run_model_id or base_model_id or model_id
        self.base_model_id = base_model_id
        self.model_name = model_name or model_id
        self.inputs = dict(inputs or {})
        self.prompt_name = prompt_name or prompt_key(self.inputs)
        if prompt is not None:
            self.inputs[self.prompt_name] = prompt
        self.source = source
        self.kind = kind
        self.job_id: Optional[str] = job_id
        self.status = status
        self.progress = 0.0
        self.error: Optional[str] = error
        self.hint: Optional[str] = None
        self.note = ""  # one plain line about the last thing that happened to it (e.g. a refused cancel)
        self.exception: Optional[BaseException] = None
        self.cost: Optional[float] = cost
        self.outputs: list[Output] = list(outputs)
        self.text: Optional[str] = None  # a text model's answer: its text assets, else metadata.output
        self.seeds: list[Any] = []
        self.status_history: list[dict] = []
        self.submitted_at = time.time()
        self.sent_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.server_offset = 0.0
        self._done = threading.Event()
        self._answered = threading.Event()  # the request has an answer: a job, a 429, or a lost answer
        self._lock = threading.Lock()
        self._callbacks: list[Callable[["Generation"], None]] = []
        if owner is None and status in FINAL:
            self._end_as_given()

    def _end_as_given(self) -> None:
        """A handle built from plain values with a final status: done, as the engine would have left it."""
        exception: Optional[ScenarioError] = None
        if self.status == "not-sent":
            exception = SubmitFailedError(self.error or "the request was never sent; nothing was charged")
        elif self.status != "success":
            exception = JobFailedError(self.job_id or "", self.error or "", status=self.status)
        self.progress = 1.0 if exception is None else 0.0
        self._finish(exception)
        self._settle()

    # -- What users read ---------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Where this job runs (its client's API URL); it stays there if the session switches backend."""
        return self._engine.base_url

    @property
    def prompt(self) -> str:
        """The text in the model's prompt input (`prompt`, or e.g. `instruction` for Scenario's LLM)."""
        return str(self.inputs.get(self.prompt_name, ""))

    @property
    def seed(self) -> Any:
        """The seed asked for, else the one the server chose for the first image."""
        return self.inputs.get("seed", self.seeds[0] if self.seeds else None)

    @property
    def done(self) -> bool:
        """Finished: outputs stored and history written (or given up on, with `.exception` saying why)."""
        return self.finished_at is not None

    @property
    def ok(self) -> bool:
        return self.done and self.status == "success" and self.exception is None

    @property
    def asset_ids(self) -> list[str]:
        return [o.asset_id for o in self.outputs]

    @property
    def files(self) -> list[Path]:
        return [o.path for o in self.outputs]

    @property
    def images(self) -> list["Image"]:
        """Full-resolution PIL images (the image outputs), loaded from the local file store.

        Shown in a notebook, each is a light preview (so the saved notebook stays small); the image itself
        keeps every pixel, and `files` are the full files."""
        from ._preview import as_preview
        return [as_preview(self._engine.store.open_image(o.path)) for o in self.outputs
                if o.is_image and o.path.is_file()]

    def __repr__(self) -> str:
        return f"<Generation {self.job_id or '(no job yet)'} {self.model_name} {self.status}>"

    def status_words(self) -> str:
        if self.status == "in-progress":
            return f"in-progress {self.progress:.0%}"
        if self.status == "success" and self.exception is not None:
            return STATUS_WORDS["download-failed"]
        if self.exception is not None and isinstance(self.exception, JobTimeoutError):
            return STATUS_WORDS["timeout"]
        return STATUS_WORDS.get(self.status, self.status)

    def summary(self) -> str:
        """One line (two with an error): job, model, status, cost, what it made."""
        parts = [self.job_id or "(no job yet)", self.model_name]
        if self.base_model_id:
            parts.append(f"via {self.base_model_id}")
        parts.append(self.status_words())
        if self.cost is not None:
            parts.append(f"{self.cost:g} CU")
        if self.ok and self.outputs:
            kinds = sorted({o.kind for o in self.outputs})
            noun = {"image": "image", "text": "answer"}.get(kinds[0], "output") if len(kinds) == 1 else "output"
            parts.append(f"{len(self.outputs)} {noun}{'s' * (len(self.outputs) != 1)}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        text = " · ".join(str(p) for p in parts)
        if self.exception is not None:
            text += f"\n{self.exception}"
        elif self.note:
            text += f"\n{self.note}"
        return text

    def provenance(self) -> dict:
        """Everything needed to know (and reproduce) how these outputs were made."""
        return {"job_id": self.job_id, "model_id": self.model_id, "model_name": self.model_name,
                "base_model_id": self.base_model_id, "prompt": self.prompt, "seed": self.seed,
                "seeds": list(self.seeds), "inputs": self.inputs, "asset_ids": self.asset_ids,
                "kinds": [o.kind for o in self.outputs], "cost": self.cost, "status": self.status,
                "kind": self.kind, "backend": self.backend}

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ._display import generation_bundle
        return generation_bundle(self)

    # -- What users do -----------------------------------------------------------------------------
    def wait(self, timeout: Optional[float] = None) -> "Generation":
        """Block until done; returns self, or raises the job's error. Ctrl-C stops waiting, not the job."""
        if not self._done.wait(timeout):
            raise self._timeout(timeout or 0)
        if self.exception is not None:
            raise self.exception
        return self

    def _timeout(self, seconds: float) -> JobTimeoutError:
        """Stopped waiting: re-attach by job id, or (no job yet) the words for where the request is."""
        return JobTimeoutError(self.job_id, seconds, f"the request has no job yet ({self.status_words()})")

    def cancel(self) -> str:
        """Try to stop the job; returns what happened, and `.note` says it in plain words.

        "dropped": it was still waiting here, never sent, nothing charged. "requested": Scenario accepted;
        the job ends `canceled` shortly. "refused": Scenario does not cancel this kind of job (generation
        jobs, on the real API): it finishes, is charged, and its outputs still arrive. "finished": it had
        already ended. "unavailable": the cancel could not be sent now (rate limit, network).
        """
        return self._engine.cancel(self)

    def on_update(self, callback: Callable[["Generation"], None]) -> "Generation":
        """Call `callback(self)` on every change, from the engine's thread.

        Callbacks may set widget values; they must not print or display (that output would land in
        whatever cell is running). Called once right away so a view can draw the current state.
        """
        with self._lock:
            self._callbacks.append(callback)
        self._call(callback)
        return self

    def save(self, directory: Union[str, Path], only: Optional[Iterable[str]] = None) -> list[Path]:
        """Copy each output (or the asset ids in `only`) into a folder, with provenance, plus a JSON sidecar.

        Images are written as PNG with the prompt, seed and job id in their text chunks; other outputs as
        they came. Returns the paths written, the sidecar last.
        """
        directory = Path(directory).expanduser()
        if directory.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".json", ".mp4", ".glb"):
            raise InputError(f"save() takes a folder, not a file name ({directory.name}); e.g. "
                             f"gen.save({str(directory.parent)!r})")
        if not self.ok:
            raise StorageError(f"job {self.job_id or '(no job yet)'} has nothing to save yet ({self.status_words()})")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {directory}: {exc.strerror or exc}") from None
        store = self._engine.store
        written = []
        wanted = set(only) if only is not None else set(self.asset_ids)
        for index, output in enumerate(self.outputs):
            if output.asset_id not in wanted:
                continue
            stem = directory / f"{self.job_id}_{index}"
            if output.is_image:
                seed = self.seeds[index] if index < len(self.seeds) else self.seed
                text = {"prompt": self.prompt, "model": self.model_id, "model_name": self.model_name,
                        "seed": "" if seed is None else str(seed), "job_id": self.job_id or "",
                        "asset_id": output.asset_id, "inputs": json.dumps(self.inputs, sort_keys=True),
                        "Software": "scenario_nb"}
                written.append(store.save_png_with_metadata(output.path, stem.with_suffix(".png"), text))
            else:
                written.append(store.copy(output.path, stem.with_suffix(output.path.suffix)))
        sidecar = directory / f"{self.job_id}.json"
        document = json.dumps({**self.provenance(), "text": self.text, "files": [p.name for p in written]},
                              indent=2, default=str)
        written.append(store.write_text(sidecar, document))
        return written

    # -- Kept current by the engine (the same layer; nothing else calls these) -------------------------
    def _apply(self, job: dict) -> None:
        """Take a fresh job object from the API."""
        meta = job.get("metadata") or {}
        with self._lock:
            self.status = str(job.get("status") or self.status)
            try:
                self.progress = max(0.0, min(1.0, float(job.get("progress") or 0)))
            except (TypeError, ValueError):
                pass
            if self.status == "success":
                self.progress = 1.0
            self.status_history = list(job.get("statusHistory") or self.status_history)
            self.error = meta.get("error") or self.error
            self.hint = meta.get("hint") or self.hint
            billing = job.get("billing") or {}
            if self.cost is None and isinstance(billing, dict):
                self.cost = parse_cost(billing.get("cuCost"))

    def _set(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def _finish(self, exception: Optional[BaseException] = None, status: Optional[str] = None) -> None:
        """Done: outputs stored (or given up on). Waiters are released by `_settle`, after the callbacks."""
        with self._lock:
            if status:
                self.status = status
            self.exception = exception
            self.finished_at = time.time()

    def _settle(self) -> None:
        self._done.set()

    def _reopen(self) -> None:
        """Followed again after a timeout or a failed download (re-attached)."""
        with self._lock:
            self.exception = None
            self.finished_at = None
            self._done.clear()

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            self._call(callback)

    def _call(self, callback: Callable[["Generation"], None]) -> None:
        call_safely(callback, self, self.job_id or self.request_id)


def call_safely(callback: Callable[[Any], None], subject: Any, name: Any) -> None:
    """Run one `on_update` callback: a broken view must not stop the engine; the log goes to the terminal."""
    try:
        callback(subject)
    except Exception:
        log.exception("an on_update callback of %s failed", name)


def wait_all(handles: Iterable[Generation], timeout: Optional[float] = None) -> list[Generation]:
    """Wait until every handle is done (succeeded or failed); returns them. Errors stay on `.exception`."""
    handles = list(handles)
    deadline = None if timeout is None else time.monotonic() + timeout
    for handle in handles:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not handle._done.wait(left):
            pending = [h for h in handles if not h.done]
            jobs = [str(h.job_id) for h in pending if h.job_id]
            if len(jobs) == len(pending):  # each can be re-attached by its job id
                raise JobTimeoutError(", ".join(jobs), timeout or 0)
            if len(pending) == 1:
                raise pending[0]._timeout(timeout or 0)
            state = f"{len(pending) - len(jobs)} of the {len(pending)} not done have no job yet" + \
                (f"; jobs {', '.join(jobs)} can be re-attached by id" if jobs else "")
            raise JobTimeoutError(None, timeout or 0, state)
    return handles
