"""`ScenarioClient`: the one client every front door (Python, magics, panel) shares."""

from __future__ import annotations

import base64
import difflib
import io
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from ._errors import (APIError, DownloadFailedError, InputError, NotFoundError, PermissionDeniedError,
                      RateLimitError, StorageError, SubmitFailedError)
from ._http import Credentials, Transport, UncertainSubmit, mask
from ._models import Model, validate_inputs

ImageLike = Union[bytes, str, os.PathLike, "PIL.Image.Image"]  # noqa: F821
URL_RENEWALS = 3  # fresh signed URLs asked for when the asset origin refuses one (expired)


def default_home() -> Path:
    """Where history and images live: $SCENARIO_NB_HOME, else ~/.scenario_nb."""
    return Path(os.environ.get("SCENARIO_NB_HOME") or Path.home() / ".scenario_nb")


@dataclass
class CostEstimate:
    """The answer to a dry run (HTTP 269): what a request would cost, with nothing spent."""

    creative_units: float
    discount: float = 0.0
    details: dict = field(default_factory=dict)
    model_id: str = ""
    inputs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, data: dict, model_id: str = "", inputs: Optional[dict] = None) -> "CostEstimate":
        return cls(float(data.get("creativeUnitsCost") or 0), float(data.get("creativeUnitsDiscount") or 0),
                   dict(data.get("costDetails") or {}), model_id, dict(inputs or {}))

    def __str__(self) -> str:
        details = ", ".join(f"{k} {v:g}" for k, v in self.details.items())
        return f"{self.creative_units:g} CU" + (f" ({details})" if details else "")

    def __repr__(self) -> str:
        return f"<CostEstimate {self}>"

    def _repr_markdown_(self) -> str:
        return f"**Estimated cost:** {self} — dry run, nothing was spent."


def _family(text: str) -> str:
    """'flux.2-dev-lora' and 'model_bfl-flux-2-dev' both give 'flux2dev': a hint for base-model search."""
    text = re.sub(r"(-edit)?-(lora|composition)$", "", text.lower())
    return re.sub(r"[^a-z0-9]", "", text.replace("model_", "").replace("bfl", ""))


class ScenarioClient:
    """Talks to the Scenario API (or anything that answers like it) with one pooled session.

    Credentials come from the arguments, else `SCENARIO_API_KEY` / `SCENARIO_API_SECRET` /
    `SCENARIO_API_URL`, else the official SDK's `SCENARIO_SDK_API_KEY` / `SCENARIO_SDK_API_SECRET` /
    `SCENARIO_BASE_URL`. Generations return live `Generation` handles tracked by one shared poller.
    """

    def __init__(self, api_key: Optional[str] = None, api_secret: Optional[str] = None,
                 base_url: Optional[str] = None, *, home: Union[str, os.PathLike, None] = None,
                 history_path: Union[str, os.PathLike, None] = None, max_retries: int = 4,
                 timeout: tuple[float, float] = (5.0, 60.0)) -> None:
        self._credentials = Credentials.resolve(api_key, api_secret, base_url)
        self._http = Transport(self._credentials, max_retries=max_retries, timeout=timeout)
        self.home = Path(home) if home else default_home()
        self.history_path = Path(history_path) if history_path else self.home / "history.sqlite"
        self._lock = threading.RLock()
        self._models: dict[str, Model] = {}
        self._catalog: Optional[list[Model]] = None
        self._own: Optional[tuple[float, list[Model]]] = None
        self._base_for_type: dict[str, Model] = {}
        self._known_job_ids: set[str] = set()
        self._store = None
        self._history = None
        self._poller = None

    def __repr__(self) -> str:
        return f"ScenarioClient(base_url={self.base_url!r}, api_key={mask(self._credentials.api_key)!r})"

    @property
    def base_url(self) -> str:
        return self._credentials.base_url

    @property
    def api_key_masked(self) -> str:
        return mask(self._credentials.api_key)

    # -- Local state: file store, history, poller (created on first use) ---------------------------
    @property
    def store(self):
        with self._lock:
            if self._store is None:
                from ._store import FileStore
                self._store = FileStore(self.home)
            return self._store

    @property
    def history(self):
        with self._lock:
            if self._history is None:
                from ._history import History
                self._history = History(self.history_path)
            return self._history

    @property
    def poller(self):
        with self._lock:
            if self._poller is None:
                from ._poller import Poller
                self._poller = Poller(self)
            return self._poller

    def close(self) -> None:
        """Stop the poller and release connections; jobs keep running on the server."""
        if self._poller is not None:
            self._poller.stop()
        self._http.close()

    # -- Models ----------------------------------------------------------------------------------
    def _paged(self, path: str, key: str, params: dict) -> Iterator[dict]:
        params = {k: v for k, v in params.items() if v is not None}
        seen: set = set()
        while True:
            data = self._http.get(path, **params)
            yield from (item for item in data.get(key) or [] if isinstance(item, dict))
            token = data.get("nextPaginationToken")
            if not token:
                return
            if token in seen:
                raise APIError(f"the API repeated pagination token on {path}", status_code=500)
            seen.add(token)
            params["paginationToken"] = token

    def models(self, *, public: bool = False, status: Optional[str] = None,
               types: Union[str, Iterable[str], None] = None, tags: Union[str, Iterable[str], None] = None,
               query: Optional[str] = None, page_size: Optional[int] = None) -> list[Model]:
        """Every model (all pages): your own by default, the public catalog with `public=True`.

        `query` keeps models whose name or id contains it (case-insensitive).
        """
        params = {"privacy": "public" if public else "private", "status": status, "pageSize": page_size,
                  "types": _csv(types), "tags": _csv(tags)}
        found = [Model.parse(row) for row in self._paged("/models", "models", params)]
        if query:
            q = query.lower()
            found = [m for m in found if q in m.name.lower() or q in m.id.lower()]
        return found

    def model(self, model_id: str, *, refresh: bool = False) -> Model:
        """One model with its `inputs` parsed (cached per client)."""
        with self._lock:
            cached = self._models.get(model_id)
        if cached is not None and not refresh:
            return cached
        model = Model.parse(self._http.get(f"/models/{model_id}")["model"])
        with self._lock:
            self._models[model_id] = model
        return model

    def find_model(self, text: str) -> Model:
        """A model by id, exact name, or unique name prefix; one clear line on a miss."""
        text = text.strip()
        if text.startswith("model_"):
            try:
                return self.model(text)
            except NotFoundError:
                raise InputError(f"model {text} not found; list your models with %scenario models") from None
        candidates = self._own_models() + self.public_models()
        exact = [m for m in candidates if m.name.lower() == text.lower()]
        if len(exact) == 1 or (exact and len({m.id for m in exact}) == 1):
            return self.model(exact[0].id)
        prefix = [m for m in candidates if m.name.lower().startswith(text.lower())]
        if len({m.id for m in prefix}) == 1:
            return self.model(prefix[0].id)
        if prefix:
            names = ", ".join(f"{m.name} ({m.id})" for m in prefix[:6])
            raise InputError(f"{text!r} matches several models: {names}; use more of the name or the id")
        close = difflib.get_close_matches(text, [m.name for m in candidates], n=3, cutoff=0.5)
        tip = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            "; list them with %scenario models"
        raise InputError(f"no model named {text!r}{tip}")

    def _own_models(self, max_age: float = 60.0) -> list[Model]:
        """Your models for name lookups, re-listed at most once a minute (a cell should not pay a round trip)."""
        with self._lock:
            cached = self._own
        if cached is None or time.monotonic() - cached[0] > max_age:
            cached = (time.monotonic(), self.models())
            with self._lock:
                self._own = cached
        return cached[1]

    def public_models(self) -> list[Model]:
        """The public catalog of runnable models (cached per client)."""
        with self._lock:
            if self._catalog is not None:
                return self._catalog
        catalog = self.models(public=True)
        with self._lock:
            self._catalog = catalog
        return catalog

    def base_model_for(self, model: Model) -> Model:
        """The platform model that runs a trained LoRA or composition of this type.

        Found from the public catalog: the first runnable model with a `model`/`model_array` input whose
        `modelTypes` accepts the type, looking first at models whose id names the same family.
        """
        with self._lock:
            if model.type in self._base_for_type:
                return self._base_for_type[model.type]
        family = _family(model.type)
        runnable = [m for m in self.public_models() if m.runnable]
        runnable.sort(key=lambda m: family not in _family(m.id) and family not in _family(m.name))
        for candidate in runnable[:40]:
            try:
                full = self.model(candidate.id)
            except (NotFoundError, PermissionDeniedError):
                continue
            if any(i.type in ("model", "model_array") and model.type in i.model_types for i in full.inputs):
                with self._lock:
                    self._base_for_type[model.type] = full
                return full
        raise InputError(f"no public base model accepts {model.type} models like {model.name}; "
                         f"pass base_model= with a model that does")

    def route(self, model: Model, base_model: Optional[str] = None) -> tuple[Model, dict]:
        """The runnable model and the extra inputs that run `model` (itself, or a LoRA via its base)."""
        if model.runnable:
            return model, {}
        if model.status not in ("trained", ""):
            raise InputError(f"model {model.name} is {model.status}, not trained yet; it cannot generate")
        base = self.model(base_model) if base_model else self.base_model_for(model)
        single = next((i for i in base.inputs if i.type == "model" and model.type in i.model_types), None)
        if single is not None:
            return base, {single.name: model.id}
        many = next((i for i in base.inputs if i.type == "model_array" and
                     (not i.model_types or model.type in i.model_types)), None)
        if many is None:
            raise InputError(f"base model {base.name} takes no LoRA input for {model.type}")
        loras = base.ui_config.get("lorasComponent") or {}
        scale_name = loras.get("scaleInput") or "lorasScale"
        extra: dict = {many.name: [model.id]}
        if base.input(scale_name) is not None:
            extra[scale_name] = [1.0]
        return base, extra

    # -- Generation --------------------------------------------------------------------------------
    def prepare(self, model: Union[str, Model], prompt: Optional[str] = None, *,
                base_model: Optional[str] = None, **inputs: Any) -> tuple[Model, Model, dict]:
        """Resolve and validate a request locally: (requested model, model to run, body)."""
        requested = model if isinstance(model, Model) else self.model(model)
        runnable, extra = self.route(requested, base_model)
        body = dict(inputs)
        if prompt is not None:
            body["prompt"] = prompt
        body.update(extra)
        return requested, runnable, validate_inputs(runnable, body)

    def estimate(self, model: Union[str, Model], prompt: Optional[str] = None, **inputs: Any) -> CostEstimate:
        """Price a request with a dry run (HTTP 269): nothing is created or spent."""
        requested, runnable, body = self.prepare(model, prompt, **inputs)
        _, data = self._http.request("POST", f"/generate/custom/{runnable.id}", params={"dryRun": "true"},
                                     json_body=body)
        return CostEstimate.parse(data, requested.id, body)

    def generate(self, model: Union[str, Model], prompt: Optional[str] = None, *, dry_run: bool = False,
                 base_model: Optional[str] = None, source: str = "api", **inputs: Any):
        """Start a generation and return its live `Generation` handle as soon as the job exists.

        `inputs` are the model's own input names (`aspectRatio`, `numOutputs`, `seed`, ...). A trained
        LoRA or composition id runs through a base model found in the public catalog. `dry_run=True`
        returns a `CostEstimate` instead and spends nothing.
        """
        if dry_run:
            return self.estimate(model, prompt, base_model=base_model, **inputs)
        from ._generation import Generation
        requested, runnable, body = self.prepare(model, prompt, base_model=base_model, **inputs)
        handle = Generation(self, model_id=requested.id, run_model_id=runnable.id,
                            base_model_id=None if runnable.id == requested.id else runnable.id,
                            inputs=body, source=source, model_name=requested.name)
        self.submit(handle)
        return handle

    def submit(self, handle, *, background: bool = True) -> str:
        """POST the handle's request once: "created", "throttled" or "uncertain".

        A 429 (or a rate gate still closed from one) creates nothing: with `background` the poller
        sends it later, in order, so the caller never waits. A lost answer is reconciled by the poller.
        """
        path = (f"/workflows/{handle.run_model_id}/run" if handle.kind == "workflow"
                else f"/generate/custom/{handle.run_model_id}")
        method = "PUT" if handle.kind == "workflow" else "POST"
        wait = self._http.gate.remaining()
        try:
            if wait > 0:
                raise RateLimitError("waiting for the rate limit", retry_after=wait)
            _, data = self._http.request(method, path, json_body=handle.inputs, submit=True, retries=0)
        except RateLimitError as exc:
            handle._throttled(exc.retry_after)
            if background:
                self.poller.queue_submit(handle)
            return "throttled"
        except UncertainSubmit as exc:
            handle._uncertain(exc.sent_at)
            self.poller.queue_reconcile(handle)
            return "uncertain"
        self._created(handle, data)
        return "created"

    def _created(self, handle, data: dict) -> None:
        job = data.get("job") or {}
        job_id = job.get("jobId") or job.get("id")
        if not job_id:
            raise APIError("the API created no job id in its answer", status_code=500, body=data)
        cost = data.get("creativeUnitsCost")
        with self._lock:
            self._known_job_ids.add(job_id)
        handle._attach(job_id, job, cost)
        self.poller.track(handle)

    def reconcile(self, handle) -> bool:
        """After a lost answer, find the job our request may have created and adopt it.

        Looks at jobs created since shortly before the request left, for the same model and inputs, not
        already owned by another handle. Returns True when adopted.
        """
        since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(handle._sent_at - 120))
        for row in self._paged("/jobs", "jobs", {"createdAfter": since, "pageSize": 100}):
            job_id = row.get("jobId") or row.get("id")
            meta = row.get("metadata") or {}
            echoed = meta.get("input") or {}
            with self._lock:
                if job_id in self._known_job_ids:
                    continue
            same_model = echoed.get("modelId") in (handle.run_model_id, None) or \
                meta.get("workflowId") == handle.run_model_id
            if same_model and all(echoed.get(k) == v for k, v in handle.inputs.items()):
                self._created(handle, {"job": row})
                return True
        return False

    def nothing_created(self, handle) -> SubmitFailedError:
        return SubmitFailedError(
            f"the request for {handle.model_name} got no answer and no job was created from it: nothing was "
            f"charged; run it again")

    # -- Jobs --------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> dict:
        """The raw job object (`GET /jobs/{id}`)."""
        return self._http.get(f"/jobs/{job_id}")["job"]

    def jobs(self, *, status: Optional[str] = None, types: Union[str, Iterable[str], None] = None,
             workflow_id: Optional[str] = None, created_after: Optional[str] = None,
             limit: Optional[int] = None) -> list[dict]:
        """Jobs, newest first, across every page (or the first `limit`)."""
        out = []
        params = {"status": status, "types": _csv(types), "workflowId": workflow_id,
                  "createdAfter": created_after, "pageSize": min(limit or 100, 100)}
        for row in self._paged("/jobs", "jobs", params):
            out.append(row)
            if limit and len(out) >= limit:
                break
        return out

    def job(self, job_id: str):
        """Re-attach to any job by id: a live `Generation` that finishes and downloads its images."""
        from ._generation import Generation
        handle = self.poller.handle_for(job_id)
        if handle is not None and not isinstance(handle.exception, DownloadFailedError):
            return handle  # else: paid for, not yet fetched; a fresh handle fetches again
        record = None
        try:
            record = self.history.get(job_id)
        except StorageError:
            pass
        job = self.get_job(job_id)
        meta = job.get("metadata") or {}
        inputs = dict(meta.get("input") or (record.inputs if record else {}))
        run_model = inputs.get("modelId") or (record.model_id if record else "") or meta.get("workflowId") or ""
        handle = Generation(self, model_id=record.model_id if record else run_model, run_model_id=run_model,
                            base_model_id=record.base_model_id if record else None,
                            inputs={k: v for k, v in inputs.items() if k != "modelId"},
                            source=record.source if record else "api",
                            kind="workflow" if job.get("jobType") == "workflow" else "generation")
        handle._attach(job_id, job, record.cost if record else None, new=False)
        with self._lock:
            self._known_job_ids.add(job_id)
        self.poller.track(handle)
        return handle

    def cancel(self, job_id: str) -> dict:
        """Ask the server to cancel a job (it becomes `canceled` shortly after)."""
        return self._http.request("POST", f"/jobs/{job_id}/action", json_body={"action": "cancel"})[1]["job"]

    # -- Assets ------------------------------------------------------------------------------------
    def asset(self, asset_id: str) -> dict:
        """The asset record, with a fresh signed `url`."""
        return self._http.get(f"/assets/{asset_id}")["asset"]

    def download_asset(self, asset_id: str, url: Optional[str] = None) -> bytes:
        """The asset's bytes. A refused (expired) signed URL is renewed from the API, up to URL_RENEWALS times."""
        url = url or self.asset(asset_id)["url"]
        for _ in range(URL_RENEWALS):
            try:
                return self._http.download(url)
            except (PermissionDeniedError, NotFoundError):
                url = self.asset(asset_id)["url"]
        return self._http.download(url)

    def fetch_asset(self, asset_id: str) -> Path:
        """Make sure the asset is in the local file store; returns its path."""
        store = self.store
        if not store.has(asset_id):
            store.put(asset_id, self.download_asset(asset_id))
        return store.path_for(asset_id)

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
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
                fmt = (probe.format or "png").lower()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            what = "is too large (decompression bomb)" if isinstance(exc, Image.DecompressionBombError) \
                else "is not an image Pillow can read"
            raise InputError(f"{name or 'the upload'} {what}; upload a PNG, JPEG or WebP") from None
        name = name or f"upload.{fmt}"
        body = {"name": name, "image": base64.b64encode(data).decode()}
        return self._http.request("POST", "/assets", json_body=body)[1]["asset"]["id"]

    # -- Workflows ---------------------------------------------------------------------------------
    def workflows(self) -> list[dict]:
        """Your workflows (every page)."""
        return list(self._paged("/workflows", "workflows", {"pageSize": 50}))

    def workflow(self, workflow_id: str) -> Model:
        """A workflow with its `inputs` parsed like a model's (so it validates the same way)."""
        raw = self._http.get(f"/workflows/{workflow_id}")["workflow"]
        return Model.parse({**raw, "type": "workflow", "custom": True, "status": raw.get("status")})

    def run_workflow(self, workflow_id: str, *, dry_run: bool = False, source: str = "api", **inputs: Any):
        """Run a workflow (`PUT /workflows/{id}/run`); returns a `Generation` for its job."""
        from ._generation import Generation
        workflow = self.workflow(workflow_id)
        if workflow.status not in ("ready", ""):
            raise InputError(f"workflow {workflow.name} is {workflow.status}; only ready workflows can run")
        body = validate_inputs(workflow, inputs)
        if dry_run:
            _, data = self._http.request("PUT", f"/workflows/{workflow_id}/run", params={"dryRun": "true"},
                                         json_body=body)
            return CostEstimate.parse(data, workflow_id, body)
        handle = Generation(self, model_id=workflow_id, run_model_id=workflow_id, inputs=body, source=source,
                            kind="workflow", model_name=workflow.name)
        self.submit(handle)
        return handle


def _csv(value: Union[str, Iterable[str], None]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)
