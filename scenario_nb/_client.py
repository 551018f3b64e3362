"""`ScenarioClient`: the one client every front door (Python, magics, panel) shares.

It holds the credentials, the one pooled transport, the local state (file store, history) and the engine, and is
composed of its parts, each in a module of its own: the models catalog, generation requests, jobs and assets,
workflows, and the training front.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ._client_generate import GenerationRequests
from ._client_jobs import JobsAndAssets
from ._client_models import CatalogCache, ModelCatalog
from ._client_training import TrainingFront
from ._client_workflows import WorkflowRuns
from ._engine import Clock, Engine, lane_sizes
from ._estimate import CostEstimate
from ._generation import Generation
from ._history import History
from ._http import TIMEOUT, Credentials, Transport, mask

if TYPE_CHECKING:
    from ._store import FileStore

__all__ = ["CostEstimate", "ScenarioClient", "default_home"]  # CostEstimate: `scenario_nb` hands it on from here

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


class ScenarioClient(ModelCatalog, GenerationRequests, JobsAndAssets, WorkflowRuns, TrainingFront):
    """Talks to the Scenario API (or anything that answers like it) with one pooled session.

    Credentials come from the arguments, else `SCENARIO_API_KEY` / `SCENARIO_API_SECRET` /
    `SCENARIO_API_URL`, else the official SDK's `SCENARIO_SDK_API_KEY` / `SCENARIO_SDK_API_SECRET` /
    `SCENARIO_BASE_URL`. Generations return live `Generation` handles that the client's engine keeps current.
    `clock`: what the engine schedules by (the system's; a test passes one it moves, as it does the sandbox's).
    """

    def __init__(self, api_key: Optional[str] = None, api_secret: Optional[str] = None,
                 base_url: Optional[str] = None, *, home: Union[str, os.PathLike, None] = None,
                 history_path: Union[str, os.PathLike, None] = None, backend_id: Optional[str] = None,
                 max_retries: int = 4, timeout: tuple[float, float] = TIMEOUT, clock: Optional[Clock] = None) -> None:
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
                              backend_id=self.backend_id, clock=clock)

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
