"""`ScenarioClient`: the one client every front door (Python, magics, panel) shares.

It holds the credentials, the one pooled transport, the local state (file store, history) and the engine, and is
composed of its parts, each in a module of its own: the models catalog, generation requests, jobs and assets,
workflows, and the training front.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._client_generate import GenerationRequests
from ._client_jobs import JobsAndAssets
from ._client_models import CatalogCache, ModelCatalog
from ._client_workflows import WorkflowRuns
from ._engine import Engine, lane_sizes
from ._estimate import CostEstimate
from ._errors import InputError, NotFoundError, ScenarioError
from ._generation import Generation
from ._history import History
from ._http import TIMEOUT, Credentials, Transport, mask
from ._models import Model
from ._training import EDIT_TYPES, STANDARD_TYPES, Captions, LocalImage, Training, TrainingPlan, load_images

if TYPE_CHECKING:
    from ._store import FileStore

SIDE_BY_SIDE = 16  # the most requests one call of this client sends at once (captions)


def default_home() -> Path:
    """Where history and images live: $SCENARIO_NB_HOME, else ~/.scenario_nb."""
    return Path(os.environ.get("SCENARIO_NB_HOME") or Path.home() / ".scenario_nb")


class LocalState:
    """One home's file store and history, each opened on first use (so a history that cannot be opened refuses
    the first request that needs it, not the making of the client)."""

    def __init__(self, home: Path, history_path: Path) -> None:
        self.home, self.history_path = home, history_path
        self._lock = threading.RLock()
        self._store: Optional["FileStore"] = None
        self._history: Optional[History] = None

    def store(self) -> "FileStore":
        with self._lock:
            if self._store is None:
                from ._store import FileStore
                self._store = FileStore(self.home)
            return self._store

    def history(self) -> History:
        with self._lock:
            if self._history is None:
                self._history = History(self.history_path)
            return self._history


class ScenarioClient(ModelCatalog, GenerationRequests, JobsAndAssets, WorkflowRuns):
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
        self._local = LocalState(self.home, self.history_path)
        self._cache = CatalogCache()
        # The engine is handed the openers of the history and the store, so it holds no reference to the client.
        self._engine = Engine(self._http, history=self._local.history, store=self._local.store,
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
        return self._local.store()

    @property
    def history(self) -> History:
        """The history (and write-ahead ledger); opened on first use, so a broken one refuses a request."""
        return self._local.history()

    def set_polling(self, *, floor: Optional[float] = None, job_timeout: Optional[float] = None,
                    search_seconds: Optional[float] = None, start_grace: Optional[float] = None) -> None:
        """Shortest interval between two polls of one job, when to stop watching a job, how long to look
        for the job of a request whose answer was lost (seconds; the API lists new jobs late, so at least 60),
        and how long a model still at `new` after a training start whose answer was lost proves nothing."""
        if floor is not None:
            self._engine.floor = floor
        if job_timeout is not None:
            self._engine.job_timeout = job_timeout
        if search_seconds is not None:
            self._engine.search_seconds = search_seconds
        if start_grace is not None:
            self._engine.start_grace = start_grace

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
            training.on_update(self._cache.forget_when_trained)
        return handles

    def close(self) -> None:
        """Stop following and release connections; jobs keep running on the server, and the history
        holds everything the next client needs to follow them on."""
        self._engine.close()
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._engine.closed

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

    def caption_images(self, images: Any, *, details_level: str = "action",
                       max_cost: Optional[float] = None) -> Captions:
        """Caption a training set through the API (all in flight at once): an editable `{filename: caption}`
        table. Change any caption, then pass it to `train(..., captions=table)`. Captions cost a few CU each;
        `max_cost` refuses before spending when their price is over it."""
        return self._engine.caption_images(load_images(images), details_level, max_cost)

    def train(self, name: str, images: Any, *, type: Optional[str] = None,
              captions: Union[str, dict, None] = "auto", parameters: Optional[dict] = None, dry_run: bool = False,
              max_cost: Optional[float] = None, confirm: Optional[Callable[[CostEstimate], Any]] = None,
              force: bool = False) -> Union[Training, CostEstimate]:
        """Train a LoRA on a folder (or a list of paths or Pillow images); returns its live `Training`.

        Everything is checked before anything is sent or paid (the images, the type, the name, then the
        parameters by the server's own dry run). Then: the price (`dry_run=True` returns it and removes the
        throwaway model; a price over `max_cost` is refused, nothing spent; `confirm(estimate)` is called with
        it before anything is paid, and stops the training by raising), captions (`"auto"`: one caption
        per image through the API, all at once; a dict `{filename: caption}`; None: none), the upload, and the
        start of the training. The training is in the history before it starts; a new kernel follows it on.
        `type` defaults to the most common trainable LoRA type in the catalog.

        Training is idempotent per name: a training of this name already under way (here, in another kernel,
        or waiting for a slot) or done is returned and followed, nothing paid again; a draft of this name (an
        untrained model this project made) is reused, its uploaded images kept. `force=True` makes a second
        model of the same name deliberately.
        """
        name = (name or "").strip() if isinstance(name, str) else ""
        if not name:
            raise InputError("a training needs a name for its model, e.g. client.train(\"Potion Icons\", folder)")
        if len(name) > 64:
            raise InputError(f"the model name is {len(name)} characters; Scenario takes at most 64")
        model_type = self._training_type(type)
        if parameters is not None and not isinstance(parameters, dict):
            raise InputError("parameters is a dict such as {\"nbEpochs\": 4}")
        loaded = load_images(images)
        plan = TrainingPlan(name, model_type, loaded, self._caption_plan(captions, loaded), dict(parameters or {}),
                            force=bool(force))
        try:
            result = self._engine.train(plan, dry_run=dry_run, max_cost=max_cost, confirm=confirm)
        finally:
            self._cache.forget()  # a model may have been made
        if isinstance(result, Training):
            result.on_update(self._cache.forget_when_trained)
        return result

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
        handle.on_update(self._cache.forget_when_trained)
        return handle

    def drafts(self) -> list[Model]:
        """Untrained models this project made (a training stopped before its start, a lost answer, a model that
        could not be removed): `train` of the same name reuses one; `delete_draft` removes one."""
        return [Model.parse(m) for m in self._engine.drafts()]

    def delete_draft(self, model: str) -> Model:
        """Remove one draft, by name or id (only an untrained model this project made); returns what it was."""
        removed = Model.parse(self._engine.delete_draft(model))
        self._cache.forget(removed.id)
        return removed

    def recorded_captions(self) -> list:
        """This backend's paid captions as the history holds them (`CaptionRecord`: image digest, settings,
        state `done` / `unknown` / `sending`, caption, cost), newest first."""
        return self.history.captions(self.backend_id)

    def resume_training(self, model: str) -> Training:
        """Start now a training that waits for a slot (a start refused with 429 keeps its model and images and
        is started again by itself); by model id or name. Returns its live handle, whatever its state."""
        handle = self.training(model)
        self._engine.resume_training(handle)
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
