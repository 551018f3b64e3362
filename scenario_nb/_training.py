"""`Training`: a live handle on one custom-model training, and the local checks of a training set.

Like `Generation`, a `Training` is state plus a small public API; the engine (`_engine/_trainings.py`) is
the only thing that changes it: it follows `GET /models/{id}` on its poll lane and records every change in
the history. The training set is loaded and checked here, before anything is sent or paid: a folder, a list
of paths or Pillow images, each a real image at least `MIN_SIDE` pixels a side, `MIN_IMAGES`–`MAX_IMAGES`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Union

from ._errors import InputError, TrainingFailedError, TrainingTimeoutError
from ._generation import call_safely
from ._thumbnails import thumbnail_uri

if TYPE_CHECKING:
    from PIL.Image import Image

    from ._models import Model


# The contract's trainable types (§12b.1). Edit LoRAs train on before/after pairs, which train() does not build.
STANDARD_TYPES = ("flux.2-dev-lora", "flux.2-klein-4b-lora", "flux.2-klein-9b-lora", "flux.2-klein-base-4b-lora",
                  "flux.2-klein-base-9b-lora", "qwen-image-lora", "qwen-image-2512-lora", "zimage-lora",
                  "zimage-turbo-lora", "zimage-de-turbo-lora", "flux.1-lora", "flux.1-krea-lora",
                  "flux.1-kontext-lora")
EDIT_TYPES = ("flux.2-dev-edit-lora", "flux.2-klein-4b-edit-lora", "flux.2-klein-9b-edit-lora",
              "flux.2-klein-base-4b-edit-lora", "flux.2-klein-base-9b-edit-lora", "qwen-image-edit-lora",
              "qwen-image-edit-2509-lora", "qwen-image-edit-2511-lora")
MIN_IMAGES, MAX_IMAGES = 5, 50  # the guide recommends 5–15 images; 50 at most
MIN_SIDE = 1024  # px per side; the dataset score warns "Width and height must be larger than 1024" below it
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
ImageSource = Union[str, os.PathLike, "Image"]


# -- The training set, checked locally -------------------------------------------------------------------

@dataclass
class LocalImage:
    """One training image read and checked here: its file name, bytes (PNG/JPEG/WebP) and size."""

    name: str
    data: bytes = field(repr=False)
    mime: str
    width: int
    height: int

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


def _encode(image: "Image") -> tuple[bytes, str]:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), "image/png"


def _read_one(source: Any, index: int) -> LocalImage:
    from PIL import Image, UnidentifiedImageError
    if isinstance(source, Image.Image):
        name = Path(getattr(source, "filename", "") or "").name or f"image-{index + 1:02d}.png"
        if not name.lower().endswith(".png"):
            name = Path(name).stem + ".png"
        data, mime = _encode(source)
        return LocalImage(name, data, mime, source.width, source.height)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"training images are a folder, a list of file paths or Pillow images, not "
                         f"{type(source).__name__}")
    path = Path(source).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read training image {path}: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.load()
                fmt, size = (probe.format or "").upper(), probe.size
                if fmt not in ("PNG", "JPEG", "WEBP"):
                    data, mime = _encode(probe)
                else:
                    mime = Image.MIME[fmt]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path.name} is too large: {too_large_words(data)}; resize it (training images "
                         f"need only 1024 px or so) or remove it from the training set") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{path.name} is not an image (training images must be PNG, JPEG or WebP files); "
                         f"remove it from the training set") from None
    return LocalImage(path.name, data, mime, size[0], size[1])


def too_large_words(data: bytes) -> str:
    """Why Pillow refuses an image as a decompression bomb, in numbers, read from its header alone."""
    from PIL import Image, UnidentifiedImageError
    limit = f"Pillow opens at most {(Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Image.DecompressionBombError as exc:  # over twice the limit: refused before its size is known
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            return (f"{int(pixels[1]) / 1e6:.0f} megapixels" if pixels else "too many pixels") + f"; {limit}"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return f"too many pixels; {limit}"
    return f"{width} × {height} pixels ({width * height / 1e6:.0f} megapixels; {limit})"


def load_images(images: Union[ImageSource, Iterable[ImageSource]]) -> list[LocalImage]:
    """Read and check a training set: a folder (its files, hidden ones skipped), paths or Pillow images.

    Raises one `InputError` line for an empty or missing folder, a file that is not an image (named), too few
    or too many images, an image smaller than `MIN_SIDE` a side, two images with one name or the same pixels.
    """
    from PIL import Image
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder of training images" +
                             (" (it is a file: pass a folder, or a list of paths)" if folder.is_file() else ""))
        sources: list = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not sources:
            raise InputError(f"the folder {folder} holds no images; put {MIN_IMAGES}–15 images of at least "
                             f"{MIN_SIDE}×{MIN_SIDE} px in it")
    elif isinstance(images, Image.Image):
        sources = [images]
    else:
        try:
            sources = list(images)
        except TypeError:
            raise InputError("training images are a folder, a list of file paths or Pillow images") from None
        if not sources:
            raise InputError(f"no training images given; pass a folder or {MIN_IMAGES}–15 images")
    if len(sources) > MAX_IMAGES:
        raise InputError(f"too many training images: {len(sources)}, the most a training takes is {MAX_IMAGES} "
                         f"(5–15 is what Scenario recommends)")
    loaded = [_read_one(source, index) for index, source in enumerate(sources)]
    if len(loaded) < MIN_IMAGES:
        raise InputError(f"too few training images: {len(loaded)}; a LoRA needs at least {MIN_IMAGES} "
                         f"(5–15 is what Scenario recommends)")
    small = [i for i in loaded if min(i.width, i.height) < MIN_SIDE]
    if small:
        first = small[0]
        more = f" and {len(small) - 1} more" if len(small) > 1 else ""
        raise InputError(f"{first.name}{more} too small: {first.width}×{first.height} px; training images need at "
                         f"least {MIN_SIDE} px on each side")
    names: dict = {}
    digests: dict = {}
    for image in loaded:
        if image.name in names:
            raise InputError(f"two training images are named {image.name}; give them different names")
        names[image.name] = image
        digest = hashlib.sha256(image.data).hexdigest()
        if digest in digests:
            raise InputError(f"{image.name} and {digests[digest]} are the same image; keep one")
        digests[digest] = image.name
    return loaded


class Captions(dict):
    """Editable captions `{filename: caption}`: change any value, then pass it as `train(..., captions=...)`.

    Shown as a table with each image's thumbnail, so the captions can be read against the pictures.
    """

    def __init__(self, captions: dict, thumbnails: Optional[dict] = None, cost: Optional[float] = None) -> None:
        super().__init__(captions)
        self._thumbnails = dict(thumbnails or {})
        self.cost = cost

    def __repr__(self) -> str:
        return "Captions(" + super().__repr__() + ")"

    def _repr_html_(self) -> str:
        from ._html import captions_html
        return captions_html(self, self._thumbnails)


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
        self.cost: Optional[float] = cost
        self.error: Optional[str] = error
        self.hint: Optional[str] = None
        self.note = ""
        self.exception: Optional[BaseException] = None
        self.created_at = time.time()
        self.started_at: Optional[float] = None
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
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.progress = max(0.0, min(1.0, value / 100 if value > 1 else float(value)))
                left = progress.get("remainingTimeMs")
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


__all__ = ["Training", "TrainingImage", "Captions", "LocalImage", "load_images", "STANDARD_TYPES", "EDIT_TYPES"]
