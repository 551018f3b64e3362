"""scenario_nb: generate images from your Scenario models inside Jupyter.

    %load_ext scenario_nb          then  %%scenario MODEL  with the prompt as the cell body
    scenario_nb.Panel()            a widget panel on the same client, engine and history
    ScenarioClient().generate(...) the Python API: returns a live Generation at once
    scenario_nb.grid(prompt, vary={"seed": [1, 2], "model": [...]})   a live, labelled grid of tiles

Exceptions are documented in one place: `scenario_nb._errors`. Problems found in the background (a job
that could not be recorded, a failing callback) are logged by the `scenario_nb` logger to the process's
stderr (the terminal running Jupyter, never a notebook cell); a job's own output shows its own errors. Set
`SCENARIO_NB_LOG_LEVEL=DEBUG` to see every API call (method, path, status, time) there too; credentials
and signed URLs are never logged.
"""

import logging as _logging
import os as _os
import sys as _sys
from typing import TYPE_CHECKING

from ._errors import (APIConnectionError, APIError, APITimeoutError, AuthenticationError, BadRequestError,
                      ConfigurationError, ConflictError, DownloadFailedError, InputError, JobFailedError,
                      JobTimeoutError, NotFoundError, OutcomeUnknownError, PermissionDeniedError, RateLimitError,
                      ScenarioError, ServerError, StorageError, SubmitFailedError, TrainingFailedError,
                      TrainingTimeoutError, UnprocessableEntityError)
from ._generation import Generation, Output, wait_all
from ._training import Captions, Training, TrainingImage
from ._models import Model, ModelInput
from ._version import __version__

if TYPE_CHECKING:
    from ._client import CostEstimate, ScenarioClient
    from ._grid import Grid, grid
    from ._panel import Panel

__all__ = [
    "__version__", "client", "ScenarioClient", "Generation", "Output", "CostEstimate", "Model", "ModelInput",
    "wait_all", "Training", "TrainingImage", "Captions", "grid", "Grid", "Panel", "load_ipython_extension",
    "unload_ipython_extension",
    "ScenarioError", "ConfigurationError", "InputError", "StorageError", "APIError", "BadRequestError",
    "AuthenticationError", "PermissionDeniedError", "NotFoundError", "ConflictError", "UnprocessableEntityError",
    "RateLimitError", "ServerError", "APIConnectionError", "APITimeoutError", "SubmitFailedError",
    "OutcomeUnknownError", "JobFailedError", "JobTimeoutError", "DownloadFailedError", "TrainingFailedError",
    "TrainingTimeoutError",
]

for _name in __all__:  # errors show as scenario_nb.NotFoundError, not scenario_nb._errors.NotFoundError
    _obj = globals().get(_name)
    if isinstance(_obj, type) and issubclass(_obj, ScenarioError):
        _obj.__module__ = __name__

def _terminal():
    """The process's real stderr (the terminal running Jupyter). In a kernel that captures file descriptor 2
    into whatever cell is running, that is the copy ipykernel keeps of the original descriptor."""
    original = getattr(_sys.stderr, "_original_stdstream_copy", None)
    if isinstance(original, int):
        return open(original, "w", buffering=1, closefd=False)
    return _sys.__stderr__


_log = _logging.getLogger("scenario_nb")
if not _log.handlers:
    _handler = _logging.StreamHandler(_terminal())  # never whatever cell happens to be running
    _handler.setFormatter(_logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    _log.addHandler(_handler)
    _log.setLevel((_os.environ.get("SCENARIO_NB_LOG_LEVEL") or "WARNING").upper())
    _log.propagate = False


def client() -> "ScenarioClient":
    """The shared client behind the magics and the panel (cloud with credentials, else the sandbox)."""
    from ._session import get_session
    return get_session().client


def __getattr__(name: str):
    # Imported on first use, so `%load_ext scenario_nb` stays light: the client brings the HTTP stack
    # (requests, urllib3), the panel brings ipywidgets (~300 ms).
    if name in ("ScenarioClient", "CostEstimate"):
        from . import _client
        return getattr(_client, name)
    if name in ("grid", "Grid"):
        from . import _grid
        return getattr(_grid, name)
    if name == "Panel":
        from ._panel import Panel
        return Panel
    raise AttributeError(f"module 'scenario_nb' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """`%load_ext scenario_nb`: register the `%scenario` / `%%scenario` magics."""
    from ._magics import load
    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext scenario_nb`: remove the magics and stop following jobs (they keep running on the
    server; the history knows them, and the next `%load_ext` follows them on)."""
    from ._magics import unload
    unload(ipython)
