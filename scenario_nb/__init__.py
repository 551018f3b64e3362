"""scenario_nb: generate images from your Scenario models inside Jupyter.

The public surface is what `__all__` lists; everything in a module whose name starts with `_` may change.

Front doors
    %load_ext scenario_nb              the `%scenario` / `%%scenario MODEL` magics (`load_ipython_extension`;
                                       `%unload_ext` calls `unload_ipython_extension`)
    scenario_nb.client()               the shared client behind the magics and the panel
    ScenarioClient(key, secret)        a client of your own: `.generate(...)` returns a live Generation at once
    scenario_nb.Panel(client=...)      a widget panel (ipywidgets is imported on the first call)
    scenario_nb.grid(prompt, vary={"seed": [1, 2], "model": [...]})   a live, labelled grid of tiles (a Grid)
    wait_all(handles, timeout)         wait for many generations
    scenario_nb.sandbox                a local imitation of the API (a subpackage, imported on its own)

Results (each can be built from plain values, without a client: `Generation(model_id=..., prompt=...,
status="success", outputs=[...])`)
    Generation, Output                 one request and its job; one stored output
    Training, TrainingImage, Captions  one training of a custom model; its images; a {file: caption} table
    Model, ModelInput, CostEstimate    a model and its inputs; a dry-run price

Errors: `scenario_nb.errors` holds them all, its docstring is the tree. `ScenarioError` and its direct
subclasses (the families) are in `__all__`; every error is also importable as `scenario_nb.<Name>`.

Problems found in the background (a job that could not be recorded, a failing callback) are logged by the
`scenario_nb` logger to the process's stderr (the terminal running Jupyter, never a notebook cell); a job's
own output shows its own errors. Set `SCENARIO_NB_LOG_LEVEL=DEBUG` to see every API call (method, path,
status, time) there too; credentials and signed URLs are never logged.
"""

import logging as _logging
import os as _os
import sys as _sys
from typing import TYPE_CHECKING, Any, Optional

from . import errors
from .errors import *  # noqa: F403 (every error stays importable as scenario_nb.<Name>, as it always was)
from .errors import (APIConnectionError, APIError, ConfigurationError, InputError, JobFailedError,
                     OutcomeUnknownError, ScenarioError, StorageError, SubmitFailedError)  # the families
from ._generation import Generation, Output, wait_all
from ._training import Captions, Training, TrainingImage
from ._models import Model, ModelInput
from ._version import __version__

if TYPE_CHECKING:
    from ._client import CostEstimate, ScenarioClient
    from ._grid import Grid, grid
    from ._panel import Panel as PanelWidget

__all__ = [
    # front doors
    "client", "ScenarioClient", "Panel", "grid", "wait_all", "load_ipython_extension", "unload_ipython_extension",
    # results
    "Generation", "Output", "Grid", "Training", "TrainingImage", "Captions", "Model", "ModelInput", "CostEstimate",
    # errors: every one in `errors`; here the families, which are what `except` usually wants
    "errors", "ScenarioError", "ConfigurationError", "InputError", "StorageError", "APIError", "APIConnectionError",
    "SubmitFailedError", "OutcomeUnknownError", "JobFailedError",
    "__version__",
]


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
    # (requests, urllib3). The panel brings ipywidgets (~300 ms), so `Panel` is a function that imports it
    # when called: a name in `__all__` is resolved by `import *`, and that must not import ipywidgets.
    if name in ("ScenarioClient", "CostEstimate"):
        from . import _client
        return getattr(_client, name)
    if name in ("grid", "Grid"):
        from . import _grid
        return getattr(_grid, name)
    raise AttributeError(f"module 'scenario_nb' has no attribute {name!r}")


def Panel(model: Optional[str] = None, client: Optional["ScenarioClient"] = None, **layout: Any) -> "PanelWidget":
    """The widget panel (an ipywidgets VBox): model, prompt, settings, cost, live jobs and a gallery.

    On `client` when given (nothing else is started), else on the shared session's client; `model`
    preselects a model. ipywidgets is imported on the first call, so `import scenario_nb` (and `import *`)
    stays light.
    """
    from ._panel import Panel as PanelWidget
    return PanelWidget(model, client=client, **layout)


def load_ipython_extension(ipython) -> None:
    """`%load_ext scenario_nb`: register the `%scenario` / `%%scenario` magics."""
    from ._magics import load
    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext scenario_nb`: remove the magics and stop following jobs (they keep running on the
    server; the history knows them, and the next `%load_ext` follows them on)."""
    from ._magics import unload
    unload(ipython)
