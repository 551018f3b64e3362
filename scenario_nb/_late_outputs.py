"""Final outputs that reach a cell after it ended are sent once more under the next cell.

The kernel sends what the engine's threads display under the cell that ran last. A frontend that keeps every
message (JupyterLab, Notebook) shows it at once. One that keeps only the running cell's messages (nbclient, so
papermill and `nbconvert --execute`) drops whatever arrives once that cell has ended, and the notebook it saves
shows a `--no-wait` output stuck at "queued". So a final output sent while no cell runs is sent again when the
next cell starts, under that cell: the first kind of frontend draws the same thing twice, the second keeps it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Callable, Optional

log = logging.getLogger("scenario_nb")
_by_shell: "weakref.WeakKeyDictionary[Any, LateOutputs]" = weakref.WeakKeyDictionary()
_made = threading.Lock()


class LateOutputs:
    """Knows whether a cell of one shell runs (its `pre_run_cell` and `post_run_cell` events) and keeps the final
    outputs sent in between for the next cell."""

    def __init__(self, shell: Any) -> None:
        self._lock = threading.Lock()
        self._running = True  # made by a cell
        self._pending: list[Callable[[], None]] = []
        shell.events.register("pre_run_cell", self._cell_starts)
        shell.events.register("post_run_cell", self._cell_ended)

    def send(self, show: Callable[[], None], show_again: Callable[[], None]) -> None:
        """`show()` now and, if no cell runs now, `show_again()` when the next cell starts. Shown under the
        lock, so a cell cannot end between the showing and the check."""
        with self._lock:
            show()
            if not self._running:
                self._pending.append(show_again)

    def _cell_starts(self, info: Any = None) -> None:
        with self._lock:
            self._running = True
            pending, self._pending = self._pending, []
        for show_again in pending:
            try:
                show_again()
            except Exception:  # a broken view must not break the user's cell; the log goes to the terminal
                log.exception("a final output could not be shown again")

    def _cell_ended(self, result: Any = None) -> None:
        with self._lock:
            self._running = False


def late_outputs() -> Optional[LateOutputs]:
    """The running kernel's; made by a cell (the first live view), so a cell runs. None outside a kernel: a
    terminal prints each output once, whenever it comes."""
    from IPython import get_ipython
    shell = get_ipython()
    if getattr(shell, "kernel", None) is None:
        return None
    with _made:
        if shell not in _by_shell:
            _by_shell[shell] = LateOutputs(shell)
        return _by_shell[shell]
