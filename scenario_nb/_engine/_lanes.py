"""The engine's worker threads: a few per lane, each running that lane's tasks when they fall due.

Lanes keep one kind of work from holding up another: polls (and searches) on "poll", output downloads on
"fetch", creation requests on "send". Threads are started on demand and leave after a minute of nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from typing import Any, Callable, Optional

from ._live import Settings

log = logging.getLogger("scenario_nb")


class Lanes:
    """Timed tasks `task(handle[, token])` on worker threads, by lane; a task that raises is run again later."""

    def __init__(self, sizes: dict[str, int], settings: Settings) -> None:
        self._sizes = sizes
        self._settings = settings
        self._lock = threading.Lock()
        self._wakeups = {lane: threading.Condition(self._lock) for lane in sizes}
        self._queues: dict[str, list] = {lane: [] for lane in sizes}  # heaps of (due, seq, task, handle, token)
        self._seq = itertools.count()
        self._threads: dict[str, list[threading.Thread]] = {lane: [] for lane in sizes}
        self._stopped = False
        self._running = 0  # tasks under way (for `idle_until`)
        self._clock = settings.clock
        self._clock.watch(self)

    def schedule(self, handle: Any, delay: float, task: Callable, token: Any = None, *, lane: str = "poll") -> None:
        """Run `task(handle)` (or `task(handle, token)`) on `lane` in `delay` seconds; nothing once closed."""
        with self._lock:
            if self._stopped:
                return
            heapq.heappush(self._queues[lane], (self._clock.monotonic() + delay, next(self._seq), task, handle, token))
            threads = self._threads[lane] = [t for t in self._threads[lane] if t.is_alive()]
            if len(threads) < self._sizes[lane]:
                thread = threading.Thread(target=self._work, args=(lane,), name=f"scenario-engine-{lane}",
                                          daemon=True)  # daemon: exit never waits for a request
                threads.append(thread)
                thread.start()
            self._wakeups[lane].notify()

    def close(self) -> None:
        """Drop every task and let the workers go; nothing is scheduled from now on."""
        with self._lock:
            self._stopped = True
            for lane, queue in self._queues.items():
                queue.clear()
                self._wakeups[lane].notify_all()

    @property
    def closed(self) -> bool:
        return self._stopped

    def idle_until(self) -> Optional[float]:
        """None while a task runs or is due; else when (clock.monotonic()) the next one is due, inf for none.
        A clock that a test moves asks this before moving on."""
        with self._lock:
            if self._running:
                return None
            due = min((queue[0][0] for queue in self._queues.values() if queue), default=float("inf"))
            return None if due <= self._clock.monotonic() else due

    def _work(self, lane: str) -> None:
        """A worker of one lane: take its earliest due task, run it, repeat; exit after a minute of nothing."""
        queue, wakeup = self._queues[lane], self._wakeups[lane]
        idle_since = self._clock.monotonic()
        while True:
            with self._lock:
                while True:
                    if self._stopped:
                        return
                    now = self._clock.monotonic()
                    if queue and queue[0][0] <= now:
                        _, _, task, handle, token = heapq.heappop(queue)
                        self._running += 1
                        break
                    if not queue and now - idle_since > 60:
                        self._threads[lane] = [t for t in self._threads[lane] if t is not threading.current_thread()]
                        return
                    self._clock.wait(wakeup, queue[0][0] - now if queue else 60)
            try:
                task(handle, token) if token is not None else task(handle)
            except Exception as exc:  # never lose a job to a bug or an odd answer: try again later
                log.warning("%s on %s; trying again", exc, getattr(handle, "job_id", None))
                if handle is not None and not handle.done:
                    self.schedule(handle, self._settings.ceiling, task, token, lane=lane)
            finally:
                with self._lock:
                    self._running -= 1
            idle_since = self._clock.monotonic()
