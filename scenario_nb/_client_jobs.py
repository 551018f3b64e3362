"""The client's jobs and assets: any job by id (raw, listed, or re-attached as a live `Generation`, from the local
store when its outputs are there), cancel, an asset's record or file, and image uploads for img2img inputs."""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Union

from ._engine import Engine
from ._errors import InputError, StorageError
from ._generation import Generation
from ._history import History
from ._http import Transport
from ._paging import joined, paged
from ._local_images import too_large_words

if TYPE_CHECKING:
    from PIL import Image as _PILImage

    from ._store import FileStore

ImageLike = Union[bytes, str, os.PathLike, "_PILImage.Image"]


class JobsAndAssets:
    """Part of `ScenarioClient`: what it reads of the rest of the client is declared here."""

    _http: Transport
    _engine: Engine

    if TYPE_CHECKING:  # the client's read-only properties
        @property
        def history(self) -> History: ...

        @property
        def store(self) -> "FileStore": ...

    # -- Jobs --------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> dict:
        """The raw job object (`GET /jobs/{id}`)."""
        return self._http.get(f"/jobs/{job_id}")["job"]

    def jobs(self, *, status: Optional[str] = None, types: Union[str, Iterable[str], None] = None,
             workflow_id: Optional[str] = None, created_after: Optional[str] = None,
             limit: Optional[int] = None) -> list[dict]:
        """Jobs, newest first, across every page (or the first `limit`).

        The API takes `created_after` only without `status`, `types` and `workflow_id`.
        """
        if created_after and (status or types or workflow_id):
            raise InputError("jobs(): the API takes created_after only without status, types and workflow_id; "
                             "filter the results yourself, or drop created_after")
        out = []
        params = {"status": status, "types": joined(types), "workflowId": workflow_id,
                  "createdAfter": created_after, "pageSize": min(limit or 100, 100)}
        for row in paged(self._http.get, "/jobs", "jobs", params):
            out.append(row)
            if limit and len(out) >= limit:
                break
        return out

    def job(self, job_id: str) -> Generation:
        """Re-attach to any job by id: a live `Generation` that finishes and stores its outputs.

        A handle that timed out or could not fetch its outputs is taken back and followed again.
        """
        job_id = job_id.strip()
        if not job_id:
            raise InputError("no job id given; %scenario history lists them")
        return self.stored_job(job_id) or self._engine.reattach(job_id)

    def stored_job(self, job_id: str) -> Optional[Generation]:
        """A finished job whose outputs are all in the local store (no request made; any backend's), else
        None: this kernel's own handle when it has one (its `wait()` returns once the cells showing it are
        updated; a copy's would not wait for them), else one rebuilt from the history."""
        live = self._engine.live_handle(job_id=job_id)
        if live is not None:
            return live if live.ok else None
        try:
            record = self.history.get(job_id)
        except StorageError:
            return None
        if record is not None and self._engine.outputs_stored(record):
            return self._engine.finished_handle(record)
        return None

    def cancel(self, job_id: str) -> str:
        """Ask Scenario to cancel a job; returns the outcome (see `Generation.cancel`)."""
        return self.job(job_id).cancel()

    # -- Assets ------------------------------------------------------------------------------------
    def asset(self, asset_id: str) -> dict:
        """The asset record, with a fresh signed `url`."""
        return self._http.get(f"/assets/{asset_id}")["asset"]

    def fetch_asset(self, asset_id: str) -> Path:
        """Make sure an asset (any kind) is in the local file store; returns its path."""
        asset_id = asset_id.strip()
        if not asset_id:
            raise InputError("no asset id given")
        asset = self.asset(asset_id)
        mime = str(asset.get("mimeType") or "image/png")
        if not self.store.has(asset_id, mime):
            self.store.put(asset_id, self._http.download(asset["url"]), mime)
        return self.store.path_for(asset_id, mime)

    def upload_image(self, image: ImageLike, name: Optional[str] = None) -> str:
        """Upload an image (bytes, a path, or a PIL image) and return its asset id, for img2img inputs."""
        from PIL import Image, UnidentifiedImageError
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
            name = name or path.name
        elif isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        elif isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            data = buf.getvalue()
        else:
            raise InputError("upload_image takes bytes, a file path or a PIL image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    probe.verify()
                    fmt = (probe.format or "png").lower()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{name or 'the upload'} is too large: {too_large_words(data)}; resize it "
                             f"(e.g. to 2048 px) and upload it again") from None
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise InputError(f"{name or 'the upload'} is not an image Pillow can read; upload a PNG, JPEG or "
                             f"WebP") from None
        name = name or f"upload.{fmt}"
        body = {"name": name, "image": base64.b64encode(data).decode()}
        return self._http.request("POST", "/assets", json_body=body)["asset"]["id"]
