"""The one shared session behind both front doors: one client, one poller, one history.

With credentials in the environment it talks to the real API; without them it starts the embedded
sandbox (beside the package, imported only here) and says so in one visible line.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Optional

from ._client import ScenarioClient
from ._http import DEFAULT_BASE_URL, credentials_from_env

_lock = threading.Lock()
_session: Optional["Session"] = None


class Session:
    """Holds the shared client and, when no credentials are set, the embedded sandbox."""

    def __init__(self, *, history_path: Optional[str] = None, force_sandbox: bool = False) -> None:
        self.history_path = history_path
        self.current_model: Optional[str] = None  # set by %scenario use; the panel preselects it
        self.sandbox = None
        key, secret, url = credentials_from_env()
        if key and secret and not force_sandbox:
            self.client = ScenarioClient(history_path=history_path)
            self.backend = "cloud" if url.rstrip("/") == DEFAULT_BASE_URL else "custom"
        else:
            from . import sandbox  # only the session ever starts the sandbox; the client never imports it
            job_seconds = float(os.environ.get("SCENARIO_NB_SANDBOX_JOB_SECONDS", "3"))
            # A fresh seed per kernel: history and file store are shared by every kernel, so job and asset
            # ids must never repeat across sandboxes (a repeated asset id would show another kernel's image).
            self.sandbox = sandbox.start(job_seconds=job_seconds, job_jitter=min(1.0, job_seconds / 4),
                                         seed=secrets.randbelow(2 ** 31))
            self.client = ScenarioClient(self.sandbox.api_key, self.sandbox.api_secret, self.sandbox.url,
                                         history_path=history_path)
            self.backend = "sandbox"

    @property
    def notice(self) -> str:
        """The one line that says where generations go."""
        if self.backend == "sandbox":
            return (f"scenario_nb: no SCENARIO_API_KEY/SCENARIO_API_SECRET set, so using the embedded sandbox at "
                    f"{self.client.base_url} (local placeholder images, nothing is charged)")
        where = "Scenario cloud" if self.backend == "cloud" else "custom API URL"
        return f"scenario_nb: using the {where} at {self.client.base_url} (key {self.client.api_key_masked})"

    def close(self) -> None:
        self.client.close()
        if self.sandbox is not None:
            self.sandbox.stop()


def get_session(**options) -> Session:
    """The process-wide session, created on first use."""
    global _session
    with _lock:
        if _session is None:
            _session = Session(**options)
        return _session


def replace_session(**options) -> Session:
    """Start over (e.g. `%scenario sandbox`, or a new history path); in-flight jobs stay in history."""
    global _session
    with _lock:
        old, _session = _session, Session(**options)
    if old is not None:
        old.close()
    return _session
