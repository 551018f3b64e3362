"""Captions through the ledger: each one paid once, recorded per image content and caption settings.

A caption is written to the history (`sending`) before its request leaves, and `done` with its text once
answered, so any later attempt (a re-run, a second `caption_images`, a training after an upload failed) reuses
it. An answer lost on the way (no answer, 5xx, not JSON) is `unknown`: it may have been charged, so it is said so
and never asked again by itself; the image is captioned by hand (`captions={...}`) or trained without one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from .._errors import APIConnectionError, APIError, ServerError, StorageError
from .._generation import parse_cost
from .._history import CaptionRecord
from .._http import Transport
from .._local_images import LocalImage
from ._ledger import Ledger

log = logging.getLogger("scenario_nb")


class CaptionLost(APIConnectionError):
    """A caption's answer was lost: it may have been charged; it is recorded as such and not asked again."""


class Captioner:
    """Prices and makes captions, one request per image, all in flight at once, each through the ledger."""

    def __init__(self, http: Transport, ledger: Ledger) -> None:
        self._http = http
        self._ledger = ledger

    def price(self, images: list[LocalImage], details_level: str) -> float:
        """Captioning the images not captioned yet: one image's dry-run price times their count (nothing spent)."""
        todo = [i for i in images if self._row(i, details_level) is None]
        if not todo:
            return 0.0
        data = self._http.request("POST", "/generate/caption", params={"dryRun": "true"},
                                  json_body={"images": [todo[0].data_url()], "detailsLevel": details_level})
        return float(data.get("creativeUnitsCost") or 0) * len(todo)

    def caption_all(self, images: list[LocalImage], details_level: str) -> tuple[list[str], list[str]]:
        """Each image's caption, in order (recorded ones reused, the rest asked for at once), and the names of
        those whose answer was lost, now or before (their caption is ""). The first lost answer of this call
        raises `CaptionLost` once the others are answered and recorded."""
        lost: list[str] = []
        with ThreadPoolExecutor(max_workers=min(16, len(images)), thread_name_prefix="scenario-caption") as pool:
            futures = [pool.submit(self._one, image, details_level) for image in images]
        texts: list[str] = []
        errors: list[BaseException] = []
        for image, future in zip(images, futures, strict=True):
            error = future.exception()
            if error is not None:
                errors.append(error)
                texts.append("")
                continue
            text = future.result()
            if text is None:
                lost.append(image.name)
            texts.append(text or "")
        if errors:
            raise errors[0]
        return texts, lost

    def _row(self, image: LocalImage, details_level: str) -> Optional[CaptionRecord]:
        rows = self._ledger.history.captions(self._ledger.backend_id, _digest(image))
        return next((r for r in rows if r.details_level == details_level), None)

    def _one(self, image: LocalImage, details_level: str) -> Optional[str]:
        """One image's caption: recorded (reused), lost before (None), or asked for now, once."""
        try:
            row = self._row(image, details_level)
        except StorageError as exc:
            raise StorageError(f"{exc}; no caption was asked for") from None
        if row is not None:
            return row.caption if row.status == "done" else None
        now = time.time()
        record = CaptionRecord(self._ledger.backend_id, _digest(image), details_level, "sending", name=image.name,
                               created_at=now, updated_at=now)
        try:
            self._ledger.history.record_caption(record)
        except StorageError as exc:
            raise StorageError(f"{exc}; no caption was asked for") from None
        try:
            data = self._http.request("POST", "/generate/caption",
                                      json_body={"images": [image.data_url()], "detailsLevel": details_level})
        except (APIConnectionError, ServerError) as exc:
            self._save(record, status="unknown")
            raise CaptionLost(f"the answer to captioning {image.name} was lost ({exc}): it may have been charged. "
                              f"It is not asked again: a new attempt reuses the captions made and leaves "
                              f"{image.name} without one (pass captions={{...}} to write it)") from None
        except APIError:  # refused: nothing made, nothing charged
            self._ledger.history.forget_caption(record.backend_id, record.image_sha256, details_level)
            raise
        text = str((data.get("captions") or [""])[0] or "")
        cost = data.get("creativeUnitsCost")
        self._save(record, status="done", caption=text, cost=parse_cost(cost))
        return text

    def _save(self, record: CaptionRecord, **changes: object) -> None:
        """After sending: a failed write is logged by the history's error, the caption is used all the same."""
        for name, value in changes.items():
            setattr(record, name, value)
        record.updated_at = time.time()
        try:
            self._ledger.history.record_caption(record)
        except StorageError as exc:
            log.warning("the caption of %s is not in the history: %s", record.name, exc)


def _digest(image: LocalImage) -> str:
    return hashlib.sha256(image.data).hexdigest()
