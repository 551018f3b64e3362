"""The engine's clock: every due time, arrival and sample its scheduling reads comes from one object.

The system's clock by default. A test hands the engine (and the sandbox) a clock it moves itself, so what the
scheduler decides at a given moment does not depend on how busy the machine is: the clock is told the task
queues it must wait on (`watch`), and a waiting worker waits through it (`wait`). Not yet on it: the transport's
in-place retry waits and its 429 gates (`_backoff`), which read the system's clock (so a test that drives this
clock raises no 429).
"""

from __future__ import annotations

import threading
import time
from typing import Any


class Clock:
    """The system's clocks: `time()` for dates (shared with the server's), `monotonic()` for intervals."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float) -> None:
        """Wait on `condition` (held by the caller) until notified, or `timeout` seconds of this clock."""
        condition.wait(timeout)

    def watch(self, lanes: Any) -> None:
        """The engine's task queues (`Lanes.idle_until`), for a clock that moves only when they are idle; the
        system's clock moves anyway."""
