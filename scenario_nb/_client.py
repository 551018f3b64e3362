"""`ScenarioClient`: the one client every front door (Python, magics, panel) shares."""

from __future__ import annotations

import base64
import difflib
import hashlib
import io
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Union

from ._engine import Engine, lane_sizes
from ._errors import (APIError, BadRequestError, InputError, NotFoundError, PermissionDeniedError, RateLimitError,
                      ScenarioError, StorageError, SubmitFailedError)
from ._generation import Generation, prompt_of
from ._history import History
from ._http import TIMEOUT, Credentials, Transport, mask
from ._models import Model, validate_inputs
from ._paging import paged
from ._training import (EDIT_TYPES, STANDARD_TYPES, Captions, LocalImage, Training, TrainingImage, load_images,
                        thumbnail_uri, too_large_words)

if TYPE_CHECKING:
    from PIL import Image as _PILImage

    from ._store import FileStore

ImageLike = Union[bytes, str, os.PathLike, "_PILImage.Image"]
SIDE_BY_SIDE = 16  # the most requests one call of this client sends at once (captions)

# Where each recorded LoRA type runs (contract §12b.6). Other types are found in the catalog.
KNOWN_BASES = {
    "flux.1-lora": "model_bfl-flux-1-dev", "flux.1-composition": "model_bfl-flux-1-dev",
    "flux.2-dev-lora": "model_bfl-flux-2-dev", "flux.2-dev-edit-lora": "model_bfl-flux-2-dev",
    "flux.1-kontext-lora": "model_flux-kontext-editing",
    "qwen-image-edit-2511-lora": "model_qwen-image-edit-2511",
    "zimage-lora": "model_z-image", "zimage-turbo-lora": "model_z-image", "zimage-de-turbo-lora": "model_z-image",
}


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
    `SCENARIO_BASE_URL`. Generations return live `Generation` handles that the client's engine keeps current.
    """

    def __init__(self, api_key: Optional[str] = None, api_secret: Optional[str] = None,
                 base_url: Optional[str] = None, *, home: Union[str, os.PathLike, None] = None,
                 history_path: Union[str, os.PathLike, None] = None, backend_id: Optional[str] = None,
                 max_retries: int = 4, timeout: tuple[float, float] = TIMEOUT) -> None:
        self._credentials = Credentials.resolve(api_key, api_secret, base_url)
        # One connection for each engine thread and each of the most calls this client makes side by side.
        self._http = Transport(self._credentials, max_retries=max_retries, timeout=timeout,
                               pool_size=sum(lane_sizes().values()) + SIDE_BY_SIDE)
        self.home = Path(home).expanduser() if home else default_home()
        self.history_path = Path(history_path).expanduser() if history_path else self.home / "history.sqlite"
        # Which backend a history row belongs to: the URL and a digest of the key (never the key itself).
        self.backend_id = backend_id or f"{self.base_url}#" + hashlib.sha256(
            self._credentials.api_key.encode()).hexdigest()[:12]
        self._lock = threading.RLock()
        self._models: dict[str, Model] = {}
        self._catalog: Optional[list[Model]] = None
        self._own: Optional[tuple[float, list[Model]]] = None
        self._base_for_type: dict[str, Model] = {}
        self._runnable: Optional[list[Model]] = None
        self._store: Optional["FileStore"] = None
        self._history: Optional[History] = None
        self._engine = Engine(self._http, history=lambda: self.history, store=lambda: self.store,
                              backend_id=self.backend_id)

    def __repr__(self) -> str:
        return f"ScenarioClient(base_url={self.base_url!r}, api_key={mask(self._credentials.api_key)!r})"

    @property
    def base_url(self) -> str:
        return self._credentials.base_url

    @property
    def api_key_masked(self) -> str:
        return mask(self._credentials.api_key)

    # -- Local state: file store, history (opened on first use), engine ------------------------------
    @property
    def store(self) -> "FileStore":
        with self._lock:
            if self._store is None:
                from ._store import FileStore
                self._store = FileStore(self.home)
            return self._store

    @property
    def history(self) -> History:
        """The history (and write-ahead ledger); opened on first use, so a broken one refuses a request."""
        with self._lock:
            if self._history is None:
                self._history = History(self.history_path)
            return self._history

    def set_polling(self, *, floor: Optional[float] = None, job_timeout: Optional[float] = None,
                    search_seconds: Optional[float] = None) -> None:
        """Shortest interval between two polls of one job, when to stop watching a job, and how long to look
        for the job of a request whose answer was lost (seconds; the API lists new jobs late, so at least 60)."""
        if floor is not None:
            self._engine.floor = floor
        if job_timeout is not None:
            self._engine.job_timeout = job_timeout
        if search_seconds is not None:
            self._engine.search_seconds = search_seconds

    @property
    def polling(self) -> dict:
        """The engine's settings: `floor` (seconds between two polls of a job, at least) and `job_timeout`."""
        return {"floor": self._engine.floor, "job_timeout": self._engine.job_timeout,
                "search_seconds": self._engine.search_seconds}

    def in_flight(self) -> list[Generation]:
        """Every request of this client not finished yet: queued here, being sent, or running."""
        return self._engine.in_flight()

    def waiting(self) -> list[Generation]:
        """Requests held here by the rate limit: not sent yet, nothing charged."""
        return self._engine.waiting()

    def recover(self) -> list[Generation]:
        """Follow on every unfinished request the history holds for this backend (once per client):
        jobs an earlier kernel left running, and requests whose answer was lost; trainings too (see
        `trainings()`)."""
        handles = self._engine.recover()
        for training in self._engine.recover_trainings():
            training.on_update(self._forget_when_done)
        return handles

    def close(self) -> None:
        """Stop following and release connections; jobs keep running on the server, and the history
        holds everything the next client needs to follow them on."""
        self._engine.close()
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._engine.closed

    # -- Models ----------------------------------------------------------------------------------
    def _paged(self, path: str, key: str, params: dict) -> Iterator[dict]:
        return paged(self._http.get, path, key, params)

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

    def _runnable_catalog(self) -> list[Model]:
        """The public models that can run (type `custom`), listed with the API's own type filter, cached."""
        with self._lock:
            if self._runnable is not None:
                return self._runnable
        found = [m for m in self.models(public=True, types="custom") if m.runnable]
        with self._lock:
            self._runnable = found
        return found

    def base_model_for(self, model: Model) -> Model:
        """The platform model that runs a trained LoRA or composition of this type (cached per type).

        The recorded base for the type first (contract §12b.6); else the public runnable models whose id,
        name or `compliantModelIds` hint names the type's family; else the rest of the catalog, in its order.
        The winner is the first whose `model`/`model_array` input lists the type in `modelTypes`.
        """
        with self._lock:
            if model.type in self._base_for_type:
                return self._base_for_type[model.type]
        family = _family(model.type)
        hints = {_family(str(s)) for s in model.raw.get("compliantModelIds") or []} | {family}
        known = KNOWN_BASES.get(model.type)
        runnable = self._runnable_catalog()
        named = [m for m in runnable if m.id != known and
                 any(h and (h in _family(m.id) or h in _family(m.name)) for h in hints)]
        rest = [m for m in runnable if m not in named and m.id != known]
        for candidate in ([known] if known else []) + [m.id for m in named] + [m.id for m in rest][:60]:
            try:
                full = self.model(candidate)
            except (NotFoundError, PermissionDeniedError):
                continue
            if any(i.type in ("model", "model_array") and model.type in i.model_types for i in full.inputs):
                with self._lock:
                    self._base_for_type[model.type] = full
                return full
        raise InputError(f"no public base model accepts {model.type} models like {model.name}; "
                         f"pass base_model= with a model that does")

    def route(self, model: Model, base_model: Optional[str] = None, *, scaled: bool = False) -> tuple[Model, dict]:
        """The runnable model and the extra inputs that run `model` (itself, or a LoRA via its base).

        `scaled`: the caller sets the LoRA's scale, so the LoRA goes in the base's LoRA list (a single
        `modelId` slot takes no scale)."""
        if model.runnable:
            return model, {}
        if not model.trained:
            raise InputError(f"model {model.name} is {model.status}, not trained yet; it cannot generate")
        base = self.find_model(base_model) if base_model else self.base_model_for(model)
        single = None if scaled else next((i for i in base.inputs if i.type == "model" and
                                           model.type in i.model_types), None)
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
        """Resolve and validate a request locally: (requested model, model to run, body).

        `model` is a Model, an id, or a name (as `find_model` takes it: exact or a unique prefix)."""
        requested = model if isinstance(model, Model) else self.find_model(model)
        scale = inputs.get("lorasScale")
        runnable, extra = self.route(requested, base_model, scaled=scale is not None)
        body = dict(inputs)
        if prompt is not None:
            body[runnable.prompt_name] = prompt
        body.update(extra)
        if scale is not None and "lorasScale" in extra:  # the caller's scale, not the default 1
            body["lorasScale"] = scale
        return requested, runnable, validate_inputs(runnable, body)

    def estimate(self, model: Union[str, Model], prompt: Optional[str] = None, *,
                 base_model: Optional[str] = None, **inputs: Any) -> CostEstimate:
        """Price a request with a dry run (HTTP 269): nothing is created or spent."""
        requested, runnable, body = self.prepare(model, prompt, base_model=base_model, **inputs)
        data = self._http.request("POST", f"/generate/custom/{runnable.id}", params={"dryRun": "true"},
                                  json_body=body)
        return CostEstimate.parse(data, requested.id, body)

    def generate(self, model: Union[str, Model], prompt: Optional[str] = None, *,
                 base_model: Optional[str] = None, source: str = "api", **inputs: Any) -> Generation:
        """Start a generation and return its live `Generation` handle as soon as the request is answered.

        `model` (and `base_model`) is a name ("FLUX.2 dev", or a unique start of one) or an id. `inputs` are
        the model's own input names (`aspectRatio`, `numOutputs`, `seed`, ...). A trained LoRA or composition
        runs through the base model that accepts it. The request is written to the
        history before it is sent (a history that cannot be written refuses it: `StorageError`, nothing
        sent). Price it first with `estimate()`. `source` labels the request in the history (the front doors
        use "magic", "panel", "grid"; your own label is kept as given).
        """
        return self._engine.submit(self._handle(model, prompt, base_model, source, inputs))

    def generate_many(self, model: Union[str, Model], prompts: Iterable[str], *, base_model: Optional[str] = None,
                      source: str = "api", **inputs: Any) -> list[Generation]:
        """One generation per prompt, all sent side by side; returns when each request has an answer.

        Every request is validated before any is sent, and each is recorded before it leaves (as with
        `generate`). Much faster than a loop of `generate()` for a batch: the requests overlap.
        """
        handles = [self._handle(model, prompt, base_model, source, inputs) for prompt in prompts]
        return self._engine.submit_many(handles)

    def _handle(self, model: Union[str, Model], prompt: Optional[str], base_model: Optional[str], source: str,
                inputs: dict) -> Generation:
        """A new, validated, not yet sent handle."""
        requested, runnable, body = self.prepare(model, prompt, base_model=base_model, **inputs)
        return Generation(self._engine, model_id=requested.id, run_model_id=runnable.id,
                          base_model_id=None if runnable.id == requested.id else runnable.id,
                          inputs=body, source=source, model_name=requested.name, prompt_name=runnable.prompt_name)

    def previous(self, model: Union[str, Model], body: dict) -> Optional[Generation]:
        """The identical request already sent from this machine to this backend, if any, as a live handle.

        Anything but a failed, canceled or never-created request counts: in flight, queued, unknown, timed
        out, succeeded with outputs stored (shown from the store), or succeeded but not fetched (fetched
        again). Used by re-run safety: it never sends a new generation.
        """
        model_id = (model if isinstance(model, Model) else self.find_model(model)).id
        key = History.request_key(model_id, prompt_of(body), body)
        live = self._engine.live_handle(request_key=key)
        if live is not None:
            return live
        record = self.history.find_reusable(key, self.backend_id)
        if record is None:
            return None
        if self._engine.outputs_stored(record):
            return self._engine.finished_handle(record)
        try:
            return self._engine.follow_record(record)
        except NotFoundError:  # the backend no longer knows it (e.g. an earlier embedded sandbox)
            return None

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
        params = {"status": status, "types": _csv(types), "workflowId": workflow_id,
                  "createdAfter": created_after, "pageSize": min(limit or 100, 100)}
        for row in self._paged("/jobs", "jobs", params):
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
        """A finished job whose outputs are all in the local store, from the history (no request made; any
        backend's), else None."""
        try:
            record = self.history.get(job_id)
        except StorageError:
            return None
        live = self._engine.live_handle(job_id=job_id)
        if record is not None and (live is None or live.ok) and self._engine.outputs_stored(record):
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

    # -- Workflows ---------------------------------------------------------------------------------
    def workflows(self) -> list[dict]:
        """Your workflows (every page)."""
        return list(self._paged("/workflows", "workflows", {"pageSize": 50}))

    def workflow(self, workflow_id: str) -> Model:
        """A workflow with its `inputs` parsed like a model's (so it validates the same way)."""
        raw = self._http.get(f"/workflows/{workflow_id}")["workflow"]
        return Model.parse({**raw, "type": "workflow", "custom": True, "status": raw.get("status")})

    def _ready_workflow(self, workflow_id: str, inputs: dict) -> tuple[Model, dict]:
        workflow = self.workflow(workflow_id)
        if workflow.status not in ("ready", ""):
            raise InputError(f"workflow {workflow.name} is {workflow.status}; only ready workflows can run")
        return workflow, validate_inputs(workflow, inputs)

    def estimate_workflow(self, workflow_id: str, **inputs: Any) -> CostEstimate:
        """Price a workflow run with a dry run: nothing is created or spent."""
        _, body = self._ready_workflow(workflow_id, inputs)
        data = self._http.request("PUT", f"/workflows/{workflow_id}/run", params={"dryRun": "true"}, json_body=body)
        return CostEstimate.parse(data, workflow_id, body)

    def run_workflow(self, workflow_id: str, *, source: str = "api", **inputs: Any) -> Generation:
        """Run a workflow (`PUT /workflows/{id}/run`); returns a `Generation` for its job."""
        workflow, body = self._ready_workflow(workflow_id, inputs)
        handle = Generation(self._engine, model_id=workflow_id, run_model_id=workflow_id, inputs=body,
                            source=source, kind="workflow", model_name=workflow.name)
        return self._engine.submit(handle)

    # -- Training custom models ------------------------------------------------------------------------
    def training_types(self) -> list[str]:
        """The LoRA types `train()` takes, the most common in the catalog (public and yours) first."""
        counts: dict = {}
        try:
            for model in self.public_models() + self._own_models():
                if model.type in STANDARD_TYPES:
                    counts[model.type] = counts.get(model.type, 0) + 1
        except ScenarioError:
            pass
        return sorted(STANDARD_TYPES, key=lambda t: (-counts.get(t, 0), STANDARD_TYPES.index(t)))

    def _training_type(self, model_type: Optional[str]) -> str:
        if model_type is None:
            return self.training_types()[0]
        wanted = str(model_type).strip()
        if wanted in EDIT_TYPES:
            raise InputError(f"{wanted} is an edit LoRA: it trains on before/after pairs, which train() does not "
                             f"build yet; train a standard LoRA such as {self.training_types()[0]}")
        if wanted not in STANDARD_TYPES:
            close = difflib.get_close_matches(wanted, STANDARD_TYPES, n=2, cutoff=0.6)
            tip = f"did you mean {' or '.join(close)}?" if close else f"one of {', '.join(STANDARD_TYPES)}"
            raise InputError(f"unknown training type {wanted!r}; {tip}")
        return wanted

    @staticmethod
    def _caption_plan(captions: Any, images: list[LocalImage]) -> Union[str, dict, None]:
        """"auto", None, or {name: caption} checked against the training set's file names."""
        if captions is None or (isinstance(captions, str) and captions.strip().lower() == "none"):
            return None
        if isinstance(captions, str):
            if captions.strip().lower() == "auto":
                return "auto"
            raise InputError(f"captions is \"auto\", None or a dict {{filename: caption}}, not {captions!r}")
        if not isinstance(captions, dict):
            raise InputError("captions is \"auto\", None or a dict {filename: caption} (e.g. from "
                             "client.caption_images)")
        names = [i.name for i in images]
        for key, value in captions.items():
            if key not in names:
                raise InputError(f"captions names {key!r}, which is not one of the training images "
                                 f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
            if not isinstance(value, str):
                raise InputError(f"the caption of {key} must be text, not {type(value).__name__}")
        return {name: str(captions.get(name, "")).strip() for name in names}

    def _caption_price(self, images: list[LocalImage], details_level: str) -> float:
        """Captioning every image: one image's dry-run price times the count (nothing is spent)."""
        data = self._http.request("POST", "/generate/caption", params={"dryRun": "true"},
                                  json_body={"images": [images[0].data_url()], "detailsLevel": details_level})
        return float(data.get("creativeUnitsCost") or 0) * len(images)

    def _caption_all(self, images: list[LocalImage], details_level: str) -> list[str]:
        """One caption per image through `POST /generate/caption`, every request in flight at once."""
        def one(image: LocalImage) -> str:
            data = self._http.request("POST", "/generate/caption",
                                      json_body={"images": [image.data_url()], "detailsLevel": details_level})
            captions = data.get("captions") or [""]
            return str(captions[0] or "")
        with ThreadPoolExecutor(min(SIDE_BY_SIDE, len(images)), thread_name_prefix="scenario-caption") as pool:
            return list(pool.map(one, images))

    def caption_images(self, images: Any, *, details_level: str = "action",
                       max_cost: Optional[float] = None) -> Captions:
        """Caption a training set through the API (all in flight at once): an editable `{filename: caption}`
        table. Change any caption, then pass it to `train(..., captions=table)`. Captions cost a few CU each;
        `max_cost` refuses before spending when their price is over it."""
        loaded = load_images(images)
        if max_cost is not None:
            price = self._caption_price(loaded, details_level)
            if price > max_cost:
                raise InputError(f"refused: captioning {len(loaded)} images is estimated at {price:g} CU, over "
                                 f"max_cost {max_cost:g}; nothing was spent")
        texts = self._caption_all(loaded, details_level)
        return Captions({i.name: t for i, t in zip(loaded, texts, strict=True)},
                        {i.name: thumbnail_uri(i.data) for i in loaded})

    def train(self, name: str, images: Any, *, type: Optional[str] = None,
              captions: Union[str, dict, None] = "auto", parameters: Optional[dict] = None, dry_run: bool = False,
              max_cost: Optional[float] = None,
              _confirm: Optional[Callable[[CostEstimate], None]] = None) -> Union[Training, CostEstimate]:
        """Train a LoRA on a folder (or a list of paths or Pillow images); returns its live `Training`.

        Everything is checked before anything is sent or paid (the images, the type, the name, then the
        parameters by the server's own dry run). Then: the price (`dry_run=True` returns it and removes the
        throwaway model; a price over `max_cost` is refused, nothing spent), captions (`"auto"`: one caption
        per image through the API, all at once; a dict `{filename: caption}`; None: none), the upload, and the
        start of the training. The training is in the history before it starts; a new kernel follows it on.
        `type` defaults to the most common trainable LoRA type in the catalog.
        """
        name = (name or "").strip() if isinstance(name, str) else ""
        if not name:
            raise InputError("a training needs a name for its model, e.g. client.train(\"Potion Icons\", folder)")
        if len(name) > 64:
            raise InputError(f"the model name is {len(name)} characters; Scenario takes at most 64")
        model_type = self._training_type(type)
        if parameters is not None and not isinstance(parameters, dict):
            raise InputError("parameters is a dict such as {\"nbEpochs\": 4}")
        params = dict(parameters or {})
        loaded = load_images(images)
        plan = self._caption_plan(captions, loaded)
        taken = next((m for m in self.models() if m.name.strip().lower() == name.lower()), None)
        if taken is not None:
            raise InputError(f"you already have a model named {name!r} ({taken.id}, {taken.status}); pick "
                             f"another name")
        model_id = self._http.request("POST", "/models", json_body={"name": name, "type": model_type})["model"]["id"]
        with self._lock:
            self._own = None
        handle = Training(self._engine, model_id=model_id, name=name, type=model_type, parameters=params,
                          images=[TrainingImage(i.name, width=i.width, height=i.height, data=i.data) for i in loaded])
        phase = "prepare"  # until the training is asked to start, any exit removes the model
        try:
            try:
                data = self._http.request("PUT", f"/models/{model_id}/train",
                                          params={"dryRun": "true", "trainingImagesCount": len(loaded)},
                                          json_body={"parameters": params})
            except BadRequestError as exc:
                raise InputError(f"Scenario refused this training: {exc.reason}; nothing was created or "
                                 f"charged") from None
            estimate = CostEstimate.parse(data, model_id, {"parameters": params, "images": len(loaded)})
            if plan == "auto":
                price = self._caption_price(loaded, "action")
                estimate.details["caption"] = price
                estimate.creative_units += price
            if dry_run:
                self._abandon(handle, InputError("dry run"), recorded=False)  # the throwaway model goes
                return estimate
            if max_cost is not None and estimate.creative_units > max_cost:
                raise InputError(f"refused: this training is estimated at {estimate}, over max_cost {max_cost:g}; "
                                 f"nothing was spent")
            if _confirm is not None:
                _confirm(estimate)
            self._engine.record_training(handle, before_sending=True)  # write-ahead: the model exists
            self._prepare_training(handle, loaded, plan)
            phase = "start"
            try:
                self._engine.start_training(handle, params)
            except (RateLimitError, BadRequestError, APIError) as exc:
                raise SubmitFailedError(f"Scenario refused to start the training of {name}: {exc.reason}; "
                                        f"nothing was charged for it and the model was removed") from None
            phase = "started"
        except BaseException as exc:
            if phase == "start" and not isinstance(exc, (SubmitFailedError, StorageError)):
                self._engine.follow_training(handle)  # interrupted while starting: its status will tell
                raise
            self._abandon(handle, exc, recorded=phase != "prepare" or self._recorded(handle))
            raise
        handle.on_update(self._forget_when_done)
        return handle

    def _recorded(self, handle: Training) -> bool:
        try:
            return self.history.training(handle.model_id) is not None
        except StorageError:
            return False

    def _prepare_training(self, handle: Training, loaded: list[LocalImage], plan: Union[str, dict, None]) -> None:
        """Captions (asked for all at once), then the upload (side by side), then each caption on its image."""
        if plan == "auto":
            handle._set(stage="captioning")
            handle._notify()
            texts = self._caption_all(loaded, "action")
        else:
            texts = [(plan or {}).get(i.name, "") if isinstance(plan, dict) else "" for i in loaded]
        for image, text in zip(handle.images, texts, strict=True):
            image.caption = text
        handle._set(stage="uploading")
        self._engine.record_training(handle, before_sending=True)
        handle._notify()

        def upload(pair: tuple) -> None:
            image, local = pair
            answer = self._http.request("POST", f"/models/{handle.model_id}/training-images",
                                        json_body={"name": local.name, "data": local.data_url()})
            found = answer.get("trainingImage")
            found = found[0] if isinstance(found, list) and found else found
            image.asset_id = (found or {}).get("id")
            if image.asset_id:
                try:
                    image.path = self.store.put(image.asset_id, local.data, local.mime)
                except StorageError as exc:  # a local copy only serves the thumbnails
                    handle._set(note=f"no local copy of {local.name}: {exc}")
            if image.asset_id and image.caption:
                self._http.request("PUT", f"/assets/{image.asset_id}", json_body={"description": image.caption})

        with ThreadPoolExecutor(max_workers=min(8, len(loaded)), thread_name_prefix="scenario-upload") as pool:
            list(pool.map(upload, zip(handle.images, loaded, strict=True)))
        self._engine.record_training(handle, before_sending=True)

    def _abandon(self, handle: Training, exc: BaseException, *, recorded: bool) -> None:
        """Remove a model whose training was never started (best effort), and say so in the history."""
        try:
            self._http.request("DELETE", f"/models/{handle.model_id}")
        except ScenarioError as error:
            log_line = f"could not remove the untrained model {handle.model_id}: {error}"
            handle._set(note=log_line)
        if recorded:
            reason = str(exc) if isinstance(exc, ScenarioError) else ("interrupted" if isinstance(
                exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
            handle._set(status="not-started", stage="", error=reason)
            handle._finish()
            self._engine.record_training(handle)
            handle._settle()

    def _forget_when_done(self, handle: Training) -> None:
        """A model that just finished training: drop the cached copy so it routes as trained."""
        if handle.done:
            with self._lock:
                self._models.pop(handle.model_id, None)
                self._own = None

    def training(self, model: str) -> Training:
        """Re-attach to a training by model id (or by the name of one of this backend's trainings): the one
        live handle, followed to the end while it trains."""
        model = (model or "").strip()
        if not model:
            raise InputError("no model given; client.trainings() lists them")
        model_id = model
        if not model.startswith("model_"):
            rows = [r for r in self.history.trainings(self.backend_id) if r.name.lower() == model.lower()]
            model_id = rows[0].model_id if rows else self.find_model(model).id
        handle = self._engine.reattach_training(model_id)
        handle.on_update(self._forget_when_done)
        return handle

    def trainings(self) -> list[Training]:
        """This backend's trainings, newest first: every one in the history (those still training are
        followed on) and any the API lists as training that this machine never saw."""
        self._engine.recover_trainings()
        handles: list[Training] = []
        seen: set = set()
        for record in self.history.trainings(self.backend_id):
            seen.add(record.model_id)
            live = self._engine.live_training(record.model_id)
            if live is not None:
                handles.append(live)
            elif not record.in_flight:
                handles.append(self._engine.finished_training(record))
            else:
                try:
                    handles.append(self._engine.reattach_training(record.model_id))
                except NotFoundError:
                    continue
        try:
            for model in self.models(status="training"):
                if model.id not in seen:
                    handles.append(self._engine.reattach_training(model.id))
        except ScenarioError:
            pass
        return handles

    def trainings_in_flight(self) -> list[Training]:
        """Trainings this client is following that have not ended."""
        return self._engine.trainings_in_flight()


def _csv(value: Union[str, Iterable[str], None]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)
