"""The one shared session behind both front doors: one client, one engine, one history.

With credentials in the environment it talks to the real API; without them it uses the embedded sandbox
(beside the package, imported only here) and says so in one visible line. That sandbox is one world per home:
a server of its own that every kernel of the same SCENARIO_NB_HOME shares and that keeps its models, trainings,
jobs and assets on disk (`scenario_nb.sandbox._world`), so what one notebook trains another runs. Credentials put in the
environment later (a Colab secret copied into `os.environ`) are picked up by the next call.

Switching backend never strands work: the old session is retired, not closed. Its handles keep their own
client until their jobs end, and `session_for(backend_id)` still finds it for `%scenario job`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

from ._client import ScenarioClient, default_home
from ._env import DEFAULT_BASE_URL, credentials_from_env

SANDBOX_BACKEND_ID = "embedded-sandbox"  # one identity across kernels, so re-run safety survives a restart

_lock = threading.Lock()
_session: Optional["Session"] = None
_retired: list["Session"] = []


class Session:
    """Holds the shared client and, when no credentials are set, the embedded sandbox."""

    def __init__(self, *, history_path: Optional[str] = None, force_sandbox: bool = False) -> None:
        self.history_path = history_path
        self.force_sandbox = force_sandbox
        self.current_model: Optional[str] = None  # set by %scenario use; the panel preselects it
        self.sandbox: Any = None
        self.env = credentials_from_env()
        self.announced = True  # False: a front door should show `notice` (the backend changed under the user)
        key, secret, url = self.env
        if key and secret and not force_sandbox:
            self.client = ScenarioClient(history_path=history_path)
            self.backend = "cloud" if url.rstrip("/") == DEFAULT_BASE_URL else "custom"
        else:
            # Only the session ever starts the sandbox; the client never imports it. One world per home: every
            # kernel of this home shares its models, trainings, jobs and assets (kept on disk by the sandbox).
            from .sandbox import _world
            job_seconds = float(os.environ.get("SCENARIO_NB_SANDBOX_JOB_SECONDS", "3"))
            train_seconds = float(os.environ.get("SCENARIO_NB_SANDBOX_TRAIN_SECONDS", "30"))
            self.sandbox = _world.connect(default_home(), job_seconds=job_seconds,
                                          job_jitter=min(1.0, job_seconds / 4), train_seconds=train_seconds)
            self.client = ScenarioClient(self.sandbox.api_key, self.sandbox.api_secret, self.sandbox.url,
                                         history_path=history_path, backend_id=SANDBOX_BACKEND_ID)
            self.backend = "sandbox"
        threading.Thread(target=self._recover, name="scenario-recover", daemon=True).start()

    def _recover(self) -> None:
        try:
            self.client.recover()
        except Exception:  # a broken history is reported when something is sent; never here
            pass

    @property
    def notice(self) -> str:
        """The one line that says where generations go and whether they cost anything."""
        if self.backend == "sandbox":
            why = "switched by %scenario sandbox" if self.force_sandbox else \
                "no SCENARIO_API_KEY/SCENARIO_API_SECRET set"
            return (f"scenario_nb: embedded sandbox at {self.client.base_url} ({why}): local placeholder "
                    f"images, nothing is charged")
        where = "Scenario cloud" if self.backend == "cloud" else "custom API URL"
        return (f"scenario_nb: {where} at {self.client.base_url} with key {self.client.api_key_masked}: "
                f"generations spend your creative units")

    def stale(self) -> bool:
        """The environment's credentials changed since this session started (and it follows them)."""
        return not self.force_sandbox and credentials_from_env() != self.env

    def sandbox_gone(self) -> bool:
        """The home's sandbox server this session used has stopped (killed, or the machine restarted)."""
        return self.sandbox is not None and not self.sandbox.alive()

    def close(self) -> None:
        self.client.close()
        if self.sandbox is not None:
            self.sandbox.stop()  # this kernel no longer uses the world; it stops once no kernel does


def get_session(**options: Any) -> Session:
    """The process-wide session: created on first use, and again when the environment's credentials change."""
    global _session
    with _lock:
        current = _session
    if current is not None and (current.stale() or current.sandbox_gone()):
        session = replace_session(history_path=current.history_path,
                                  force_sandbox=current.force_sandbox)
        session.announced = False
        return session
    with _lock:
        if _session is None:
            _session = Session(**options)
        return _session


def current_session() -> Optional[Session]:
    """The session if one was started (without starting one)."""
    with _lock:
        return _session


def replace_session(**options: Any) -> Session:
    """Start over (`%scenario sandbox`, new credentials, a new history path); the old one is retired."""
    global _session
    new = Session(**options)
    with _lock:
        old, _session = _session, new
        if old is not None:
            _retired.append(old)
    if old is not None:
        threading.Thread(target=_close_when_idle, args=(old,), name="scenario-retire", daemon=True).start()
    return new


def session_for(backend_id: str) -> Optional[Session]:
    """The current or a retired session still running on that backend."""
    with _lock:
        for session in ([_session] if _session else []) + _retired[::-1]:
            if session.client.backend_id == backend_id and not session.client.closed:
                return session
    return None


def _close_when_idle(session: Session, poll: float = 0.5) -> None:
    """A retired session keeps following its jobs; it closes (and its sandbox stops) once none is left."""
    while session.client.in_flight():
        time.sleep(poll)
    session.close()
    with _lock:
        if session in _retired:
            _retired.remove(session)


def reset_sandbox_world() -> str:
    """Empty this home's embedded-sandbox world (its server keeps running if one does); says what went."""
    from .sandbox import _world
    home = default_home()
    return f"sandbox world of {home}: {_world.reset(home)}"


def reset() -> None:
    """Close every session now (tests, and `%unload_ext`)."""
    global _session
    with _lock:
        sessions = ([_session] if _session else []) + _retired
        _session = None
        _retired.clear()
    for session in sessions:
        session.close()
