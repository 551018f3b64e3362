"""scenario_nb: generate images from your Scenario models inside Jupyter.

    %load_ext scenario_nb          then  %%scenario MODEL  with the prompt as the cell body
    scenario_nb.Panel()            a widget panel on the same client, poller and history
    ScenarioClient().generate(...) the Python API: returns a live Generation at once

Exceptions are documented in one place: `scenario_nb._errors`. Set `SCENARIO_NB_LOG_LEVEL=DEBUG` to see
every API call (method, path, status, time) on the process's stderr (the terminal running Jupyter, never a
notebook output); credentials and signed URLs are never logged.
"""

import logging as _logging
import os as _os
import sys as _sys

from ._client import CostEstimate, ScenarioClient
from ._errors import (APIConnectionError, APIError, APITimeoutError, AuthenticationError, BadRequestError,
                      ConfigurationError, DownloadFailedError, InputError, JobFailedError, JobTimeoutError,
                      NotFoundError, PermissionDeniedError, RateLimitError, ScenarioError, ServerError,
                      StorageError, SubmitFailedError)
from ._generation import Generation, wait_all
from ._models import Model, ModelInput

from ._version import __version__ as __version__  # re-exported

if _os.environ.get("SCENARIO_NB_LOG_LEVEL"):
    _handler = _logging.StreamHandler(_sys.__stderr__)
    _handler.setFormatter(_logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    _logging.getLogger("scenario_nb").addHandler(_handler)
    _logging.getLogger("scenario_nb").setLevel(_os.environ["SCENARIO_NB_LOG_LEVEL"].upper())

__all__ = [
    "client", "ScenarioClient", "Generation", "CostEstimate", "Model", "ModelInput", "wait_all", "Panel",
    "load_ipython_extension", "unload_ipython_extension",
    "ScenarioError", "ConfigurationError", "InputError", "StorageError", "APIError", "BadRequestError",
    "AuthenticationError", "PermissionDeniedError", "NotFoundError", "RateLimitError", "ServerError",
    "APIConnectionError", "APITimeoutError", "SubmitFailedError", "JobFailedError", "JobTimeoutError",
    "DownloadFailedError",
]


def client() -> ScenarioClient:
    """The shared client behind the magics and the panel (cloud with credentials, else the sandbox)."""
    from ._session import get_session
    return get_session().client


def __getattr__(name):
    if name == "Panel":  # ipywidgets is imported only when the panel is used
        from ._panel import Panel
        return Panel
    raise AttributeError(f"module 'scenario_nb' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """`%load_ext scenario_nb`: register the `%scenario` / `%%scenario` magics."""
    from ._magics import load
    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext scenario_nb`: jobs keep running; their history stays."""
