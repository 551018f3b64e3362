"""The completer: a succeeded job's outputs resolved, downloaded and stored, then its handle ended.

Runs on the fetch lane, so a burst of downloads never holds up seeing the next success. Each asset read and
download is one GET, never retried in place: a failure is tried again later, whole, when the transport's
backoff policy says (never before a server's Retry-After).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._errors import (APIConnectionError, DownloadFailedError, NotFoundError, PermissionDeniedError,
                       RateLimitError, ScenarioError, ServerError, StorageError)
from .._generation import Generation, Output, kind_of
from .._history import JobRecord
from .._http import Transport
from ._lanes import Lanes
from ._ledger import Ledger
from ._live import Settings

if TYPE_CHECKING:
    from .._store import FileStore

log = logging.getLogger("scenario_nb")

URL_RENEWALS = 3  # fresh signed URLs asked for when the asset origin refuses one (expired)


def _seed(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _asset_text(outputs: list[Output]) -> Optional[str]:
    """The answer of a text model from its text assets (contract §10b), several answers a blank line apart."""
    texts = [o.path.read_text(encoding="utf-8", errors="replace") for o in outputs
             if (o.kind == "text" or o.mime_type.startswith("text/")) and o.path.is_file()]
    return "\n\n".join(texts) if texts else None


class Completer:
    """Stores every output of a succeeded job (images, videos, 3D, text) and ends its handle; knows where
    stored outputs are."""

    def __init__(self, http: Transport, store: Callable[[], "FileStore"], lanes: Lanes, ledger: Ledger,
                 settings: Settings) -> None:
        self._http = http
        self._store_factory = store
        self._lanes = lanes
        self._ledger = ledger
        self._settings = settings

    def complete(self, handle: Generation, job: dict, attempt: int = 0) -> None:
        """Resolve, download and store every output (images, videos, 3D, text), then mark the handle done."""
        meta = job.get("metadata") or {}
        wanted: dict[str, Optional[str]] = {a: None for a in meta.get("assetIds") or [] if isinstance(a, str)}
        if not wanted:  # the guide's shape: every image a URL
            for index, image in enumerate((job.get("result") or {}).get("images") or []):
                if isinstance(image, dict) and image.get("url"):
                    wanted[f"{handle.job_id}-{index}"] = image["url"]
        for node in meta.get("flow") or []:
            for asset in (node.get("assets") or []) if isinstance(node, dict) else []:
                if isinstance(asset, dict) and asset.get("assetId") and not meta.get("assetIds"):
                    wanted.setdefault(asset["assetId"], None)
        output = meta.get("output")
        text = output.get("text") if isinstance(output, dict) and isinstance(output.get("text"), str) else \
            output if isinstance(output, str) else None
        if text is None and output:
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
                wait = self._http.backoff.delay(attempt, getattr(exc, "retry_after", None),
                                                cap=self._settings.ceiling)
                self._lanes.schedule(handle, wait, lambda h: self.complete(h, job, attempt + 1), lane="fetch")
                return
            handle._set(outputs=[], text=_asset_text(outputs) or text)
            self._ledger.end(handle, DownloadFailedError(handle.job_id or "", exc), status="success")
            return
        except ScenarioError as exc:  # paid for, not fetched: the error says how to fetch again
            handle._set(outputs=[], text=_asset_text(outputs) or text)
            self._ledger.end(handle, DownloadFailedError(handle.job_id or "", exc), status="success")
            return
        handle._set(outputs=outputs, seeds=seeds, text=_asset_text(outputs) or text)
        self._ledger.end(handle, None, status="success")

    def _fetch(self, key: str, url: Optional[str]) -> tuple[Output, Any]:
        """One output stored locally: (Output, its seed). A refused signed URL is renewed from the API."""
        store = self._store_factory()
        if url is not None:  # the guide's shape: a URL and nothing else
            if not store.has(key):
                store.put(key, self._http.download_once(url), "image/png")
            return Output(key, "image", "image/png", store.path_for(key)), None
        # Each asked once: a failure is tried again later, whole.
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

    # -- Outputs already stored --------------------------------------------------------------------------
    def stored_outputs(self, record: JobRecord) -> list[Output]:
        """The outputs a history row names, where the file store keeps them (rows of schema 1: PNGs)."""
        store = self._store_factory()
        mimes = record.mime_types or ["image/png"] * len(record.asset_ids)
        return [Output(a, kind_of(m), m, store.path_for(a, m)) for a, m in zip(record.asset_ids, mimes, strict=True)]

    def outputs_stored(self, record: JobRecord) -> bool:
        """Whether a successful row's outputs are all on disk (then it can be shown with no request)."""
        return record.status == "success" and (bool(record.asset_ids) or record.text is not None) and \
            all(o.path.is_file() for o in self.stored_outputs(record))
