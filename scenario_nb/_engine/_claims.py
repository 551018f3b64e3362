"""Claims on a training's name: written to the history before the first paid step, so one kernel prepares it.

Before anything is paid for a training (the model, captions, uploads, the start), its row is written as
`preparing`, owned by this process (`host:pid`), in one transaction that fails if another live process already
prepares a training of that name on this backend. A second kernel then waits (one line said once) until the
first one's row moves on: started, it follows that training; stopped before its start, it takes over the model
(a draft) and its paid captions. A claim is held while its process lives and its heartbeat is fresh: a kernel
that died (its pid is gone, or it was silent for `CLAIM_STALE` s) holds nothing, and the next `train` of the name
takes its claim over. `force=True` claims without waiting (a second model on purpose).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Optional

from .._history_trainings import TrainingRecord
from ._ledger import Ledger, this_process

log = logging.getLogger("scenario_nb")

CLAIM_STALE = 60.0  # seconds without a heartbeat after which a claim holds nothing
HEARTBEAT = 10.0  # seconds between two heartbeats of a claim being prepared
WAIT_STEP = 0.25  # seconds between two looks at another process's claim


def holds(row: TrainingRecord) -> bool:
    """Whether a `preparing` row still holds its name: its heartbeat is fresh and (on this host) its pid lives."""
    if time.time() - (row.updated_at or 0.0) > CLAIM_STALE:
        return False
    host, _, pid = (row.owner or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and os.name == "posix":
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


class Claim:
    """This process's claim on a name: moved to the model once it exists, beating while it is prepared."""

    def __init__(self, ledger: Ledger, row_id: str) -> None:
        self._ledger = ledger
        self.row_id = row_id
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._beating, name="scenario-claim", daemon=True)
        self._beat.start()

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self._ledger.history.touch_training(self.row_id, time.time())
            except Exception as exc:  # a missed beat is not fatal: the next one may pass
                log.info("claim heartbeat of %s failed: %s", self.row_id, exc)

    def moved(self, model_id: str) -> None:
        """The claim's row now names its model (write-ahead: before any caption or upload is paid)."""
        if model_id != self.row_id:
            self._ledger.history.move_training(self.row_id, model_id)
            self.row_id = model_id

    def drop(self) -> None:
        """Nothing was paid under this claim (attached elsewhere, refused, a dry run): its row goes."""
        self.stop()
        try:
            self._ledger.history.forget_training(self.row_id)
        except Exception as exc:
            log.info("claim %s could not be removed: %s", self.row_id, exc)

    def stop(self) -> None:
        self._stop.set()


def claim(ledger: Ledger, name: str, model_type: str, *, force: bool) -> Claim:
    """Claim `name` on this backend, waiting while another live process prepares a training of it."""
    now = time.time()
    row = TrainingRecord(model_id=f"claim_{uuid.uuid4().hex[:20]}", backend_id=ledger.backend_id,
                         backend_url=ledger.base_url, name=name, type=model_type, status="preparing",
                         stage="claimed", created_at=now, updated_at=now, owner=this_process())
    said: Optional[str] = None
    while True:
        row.updated_at = time.time()
        holder = ledger.history.claim_training(row, None if force else holds)
        if holder is None:
            return Claim(ledger, row.model_id)
        if said != holder.model_id:
            said = holder.model_id
            # the caller's own thread (a cell's): the line shows where the train was asked for
            print(f"{name} is being prepared by another process ({holder.owner}): waiting for it, then following "
                  f"its training (a claim whose process is gone, or silent for {CLAIM_STALE:.0f} s, is taken over)",
                  file=sys.stderr, flush=True)
        time.sleep(WAIT_STEP)
