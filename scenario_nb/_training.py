"""`Training`: a live handle on one custom-model training.

Like `Generation`, a `Training` is state plus a small public API; the engine (`_engine/_trainings.py`) is
the only thing that changes it: it follows `GET /models/{id}` on its poll lane and records every change in
the history. The training set is read and checked before anything is sent in `_local_images.py`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

from ._errors import InputError, TrainingFailedError, TrainingTimeoutError
from ._generation import call_safely
from ._local_images import LocalImage
from ._thumbnails import thumbnail_uri

if TYPE_CHECKING:

    from ._models import Model


# The contract's trainable types (§12b.1). Edit LoRAs train on before/after pairs, which train() does not build.
STANDARD_TYPES = ("flux.2-dev-lora", "flux.2-klein-4b-lora", "flux.2-klein-9b-lora", "flux.2-klein-base-4b-lora",
                  "flux.2-klein-base-9b-lora", "qwen-image-lora", "qwen-image-2512-lora", "zimage-lora",
                  "zimage-turbo-lora", "zimage-de-turbo-lora", "flux.1-lora", "flux.1-krea-lora",
                  "flux.1-kontext-lora")
EDIT_TYPES = ("flux.2-dev-edit-lora", "flux.2-klein-4b-edit-lora", "flux.2-klein-9b-edit-lora",
              "flux.2-klein-base-4b-edit-lora", "flux.2-klein-base-9b-edit-lora", "qwen-image-edit-lora",
              "qwen-image-edit-2509-lora", "qwen-image-edit-2511-lora")
TERMINAL = ("trained", "failed", "training-canceled", "not-started")
STAGE_WORDS = {"captioning": "captioning", "uploading": "uploading images", "starting": "starting",
               "pending": "pending", "queued-for-train": "queued", "starting-train": "starting",
               "running-train": "training"}
CANCEL_WORDS = {
    "requested": "cancel requested: the training ends as training-canceled shortly (no refund is promised)",
    "refused": "Scenario refused to cancel this training",
    "finished": "already finished: nothing to cancel",
    "unavailable": "could not ask Scenario to cancel it right now (rate limit or network); it keeps training",
}


class Captions(dict):
    """Editable captions `{filename: caption}`: change any value, then pass it as `train(..., captions=...)`.

    Shown as a table with each image's thumbnail, so the captions can be read against the pictures.
    """

    def __init__(self, captions: dict, thumbnails: Optional[dict] = None, cost: Optional[float] = None,
                 lost: Optional[list] = None) -> None:
        super().__init__(captions)
        self._thumbnails = dict(thumbnails or {})
        self.cost = cost
        self.lost = list(lost or [])  # images whose caption's answer was lost (it may have been charged): ""

    def __repr__(self) -> str:
        return "Captions(" + super().__repr__() + ")"

    def _repr_html_(self) -> str:
        from ._html import captions_html
        return captions_html(self, self._thumbnails)


@dataclass
class TrainingPlan:
    """A training checked by the client, handed to the engine: the model's name and type, the images read and
    checked, the captions ("auto", None or {filename: caption}) and the training parameters."""

    name: str
    type: str
    images: list[LocalImage]
    captions: Union[str, dict, None]
    parameters: dict = field(default_factory=dict)
    force: bool = False


# -- The handle ------------------------------------------------------------------------------------------

class TrainingOwner(Protocol):
    """What a training handle needs from the engine that keeps it current."""

    base_url: str

    def cancel_training(self, training: "Training") -> str: ...

    def training_model(self, training: "Training") -> "Model": ...


class DetachedTraining:
    """The owner of a training built from plain values: nothing follows it, cancels it or asks the API."""

    base_url = ""

    def cancel_training(self, training: "Training") -> str:
        if training.done:
            training._set(note="already finished: nothing to cancel")
            return "finished"
        training._set(note="nothing follows this handle (it was built from plain values); cancel it with "
                           "client.training(model_id).cancel()")
        return "unavailable"

    def training_model(self, training: "Training") -> "Model":
        raise InputError(f"this training handle was built from plain values; client.model({training.model_id!r}) "
                         f"asks the API for the model")


@dataclass
class TrainingImage:
    """One image of a training set: its file name, its asset id once uploaded, its caption and a local copy."""

    name: str
    asset_id: Optional[str] = None
    caption: str = ""
    path: Optional[Path] = None
    width: Optional[int] = None
    height: Optional[int] = None
    data: Optional[bytes] = field(default=None, repr=False)  # the bytes as read, when there is no file to read
    _thumb: Optional[str] = field(default=None, repr=False, init=False)

    def thumbnail(self, size: int = 96) -> Optional[str]:
        """A small JPEG data URI (None when no local copy is known), made once."""
        if self._thumb is None:
            source = self.data if self.data is not None else (self.path if self.path and self.path.is_file()
                                                                else None)
            self._thumb = thumbnail_uri(source, size)
        return self._thumb

    def as_dict(self) -> dict:
        return {"name": self.name, "asset_id": self.asset_id, "caption": self.caption}


class Training:
    """One training of a custom model (a LoRA): status, stage, progress, remaining time, cost.

    Returned by `client.train(...)` once the training has started (or `client.training(model_id)`); the
    client's engine keeps it current from its poll lane. `wait()` blocks only the caller; Ctrl-C stops the
    waiting, never the training. Built from plain values (no owner), it is a record nothing follows:
    `Training(model_id="model_1", name="potions", type="flux.1-lora", status="trained")`; a final status
    (trained, failed, training-canceled, not-started) makes it done at once.
    """

    def __init__(self, owner: Optional[TrainingOwner] = None, *, model_id: str, name: str, type: str,
                 images: Optional[list[TrainingImage]] = None, parameters: Optional[dict] = None,
                 status: str = "new", job_id: Optional[str] = None, cost: Optional[float] = None,
                 error: Optional[str] = None) -> None:
        self._owner: TrainingOwner = owner if owner is not None else DetachedTraining()
        self.model_id = model_id
        self.name = name
        self.type = type
        self.images: list[TrainingImage] = list(images or [])
        self.parameters = dict(parameters or {})
        self.job_id: Optional[str] = job_id
        self.status = status
        self.stage = ""
        self.position: Optional[int] = None
        self.progress = 0.0
        self._remaining: Optional[float] = None
        self._remaining_seen = 0.0
        self._percent = False  # the server's progress is on a 0..100 scale (seen once, kept)
        self.cost: Optional[float] = cost
        self.error: Optional[str] = error
        self.hint: Optional[str] = None
        self.note = ""
        self.exception: Optional[BaseException] = None
        self.created_at = time.time()
        self.started_at: Optional[float] = None
        self.start_sent_at: Optional[float] = None  # set when the start may have reached the server
        self.finished_at: Optional[float] = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[["Training"], None]] = []
        if owner is None and status in TERMINAL:  # as the engine would have left it
            self.progress = 1.0 if status == "trained" else 0.0
            self._finish()
            self._settle()

    # -- What users read ---------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._owner.base_url

    @property
    def done(self) -> bool:
        """Finished (trained, failed, canceled or never started) and recorded in the history."""
        return self.finished_at is not None

    @property
    def ok(self) -> bool:
        return self.done and self.status == "trained"

    @property
    def remaining(self) -> Optional[float]:
        """Seconds left by the server's last estimate (counted down since it was read), None when unknown."""
        with self._lock:
            if self._remaining is None or self.done:
                return None
            return max(0.0, self._remaining - (time.monotonic() - self._remaining_seen))

    @property
    def captions(self) -> dict:
        return {i.name: i.caption for i in self.images}

    def stage_words(self) -> str:
        if self.done:
            return {"trained": "trained", "failed": "failed", "training-canceled": "canceled",
                    "not-started": "never started"}.get(self.status, self.status)
        if self.status == "unknown":
            return "start sent, answer lost: following the model to learn whether it started"
        if self.status == "waiting":
            return "waiting for a training slot (starts by itself)"
        words = STAGE_WORDS.get(self.stage, self.stage or self.status)
        if self.stage == "queued-for-train" and self.position:
            words += f" (position {self.position})"
        return words

    def state_words(self) -> list[str]:
        """Where it is, in words: the stage, the progress while it trains, the time left, the cost."""
        words = [self.stage_words()]
        if not self.done and self.stage == "running-train":
            words.append(f"{self.progress:.0%}")
        left = self.remaining
        if left is not None:
            words.append(f"about {eta_words(left)} left")
        if self.cost is not None:
            words.append(f"{self.cost:g} CU")
        return words

    def summary(self) -> str:
        """One line (two with an error or a note): name, model, type, stage, progress, ETA, cost."""
        parts = [self.name, self.model_id, self.type, *self.state_words()]
        parts.append(f"{len(self.images)} image{'s' * (len(self.images) != 1)}")
        text = " · ".join(str(p) for p in parts if p)
        if self.exception is not None:
            text += f"\n{self.exception}"
        elif self.note:
            text += f"\n{self.note}"
        return text

    def __repr__(self) -> str:
        return f"<Training {self.model_id} {self.name!r} {self.type} {self.stage_words()}>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ._display import training_bundle
        return training_bundle(self)

    def _ipython_display_(self) -> None:
        """Shown in a notebook: live while it trains (the engine's updates redraw it), as is once ended."""
        from IPython.display import display

        from ._display import show_training
        if self.done:
            data, metadata = self._repr_mimebundle_()
            display(data, raw=True, metadata=metadata)
        else:
            show_training(self, wait=False)

    def provenance(self) -> dict:
        return {"model_id": self.model_id, "name": self.name, "type": self.type, "job_id": self.job_id,
                "status": self.status, "stage": self.stage, "progress": self.progress, "cost": self.cost,
                "parameters": self.parameters, "images": [i.as_dict() for i in self.images],
                "error": self.error, "hint": self.hint, "backend": self.backend}

    # -- What users do -----------------------------------------------------------------------------
    def wait(self, timeout: Optional[float] = None) -> "Training":
        """Block until the training ends; returns self when trained, else raises `TrainingFailedError`
        (failed, canceled, never started). Ctrl-C (or `timeout`) stops the waiting, not the training."""
        if not self._done.wait(timeout):
            raise TrainingTimeoutError(self.model_id, self.name, timeout or 0)
        if self.exception is not None:
            raise self.exception
        return self

    def cancel(self) -> str:
        """Ask Scenario to stop the training: "requested", "refused", "finished" or "unavailable"; `.note`
        says it in plain words. No refund is promised for a canceled training."""
        return self._owner.cancel_training(self)

    def model(self) -> "Model":
        """The model as the API has it now; once trained, pass it to `client.generate(model, prompt)` (it
        runs through its base model)."""
        return self._owner.training_model(self)

    def on_update(self, callback: Callable[["Training"], None]) -> "Training":
        """Call `callback(self)` on every change, from the engine's thread (and once right away). Callbacks
        may set widget values; they must not print or display."""
        with self._lock:
            self._callbacks.append(callback)
        self._call(callback)
        return self

    # -- Kept current by the engine (the same layer; nothing else calls these) -------------------------
    def _apply_model(self, model: dict) -> bool:
        """Take a fresh model object from the API; returns whether anything shown changed."""
        with self._lock:
            before = (self.status, self.stage, round(self.progress, 3), self.position, self.job_id)
            self.status = str(model.get("status") or self.status)
            self.job_id = model.get("jobId") or self.job_id
            self.name = model.get("name") or self.name
            progress = model.get("trainingProgress") or {}
            if isinstance(progress, dict) and progress.get("stage"):
                self.stage = str(progress["stage"])
                self.position = progress.get("position") if isinstance(progress.get("position"), int) else None
                value = progress.get("progress")
                left = progress.get("remainingTimeMs")
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.progress = self._fraction(float(value), left)
                if isinstance(left, (int, float)) and not isinstance(left, bool):
                    self._remaining, self._remaining_seen = max(0.0, left / 1000), time.monotonic()
                else:
                    self._remaining = None
                started = progress.get("startedAt")
                if isinstance(started, (int, float)):
                    self.started_at = started / 1000
            if self.status == "trained":
                self.progress, self.stage, self._remaining = 1.0, "", None
            elif self.status in TERMINAL:
                self.stage, self._remaining = "", None
            after = (self.status, self.stage, round(self.progress, 3), self.position, self.job_id)
        return before != after

    def _fraction(self, value: float, left: Any) -> float:
        """The server's progress as 0..1, whichever scale it uses (contract §12b.4, §12e: not stated). A value
        over 1 is a percentage, and so is every later one; a first 1 with time still left is 1 %, not done."""
        if value > 1 or (value == 1 and isinstance(left, (int, float)) and left > 10_000):
            self._percent = True
        return max(0.0, min(1.0, value / 100 if self._percent else value))

    def _set(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def _finish(self) -> None:
        """Ended: the exception `wait()` raises is set from the status. Waiters are released by `_settle`."""
        with self._lock:
            if self.status != "trained" and self.exception is None:
                self.exception = TrainingFailedError(self.model_id, self.name, self.job_id, self.error or "",
                                                     self.hint or "", self.status)
            self.finished_at = self.finished_at or time.time()

    def _settle(self) -> None:
        self._done.set()

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            self._call(callback)

    def _call(self, callback: Callable[["Training"], None]) -> None:
        call_safely(callback, self, f"training {self.model_id}")


def eta_words(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


__all__ = ["Training", "TrainingImage", "Captions", "STANDARD_TYPES", "EDIT_TYPES"]
