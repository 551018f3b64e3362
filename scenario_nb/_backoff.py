"""The one backoff policy: how long to wait before asking again, and the waits servers asked for.

Every wait the package computes asks one `Backoff` (each client's transport holds one): urllib3's in-place
read retries, the creation gate after a 429, job polls, output reads and downloads, training polls and
uploads. Its rule: `base × 2^attempt`, capped, jittered (×0.75 to ×1.25 by default), and never shorter than the
server's `Retry-After`. It also remembers every `Retry-After` a URL was answered with, so that no code path
(a sooner poll for a sibling job, a retried download) asks that URL again before the server said it may.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Optional


class Backoff:
    """Waits between attempts, and the 'not before' times servers gave per URL (thread-safe)."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, jitter: float = 0.5) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}  # URL -> monotonic time before which it is not asked again

    def delay(self, attempt: int, retry_after: Optional[float] = None, *, base: Optional[float] = None,
              cap: Optional[float] = None, jitter: Optional[float] = None) -> float:
        """Seconds to wait after failure number `attempt + 1` (attempt 0: the first): the server's
        `retry_after` when it is longer than ours. A call site may scale it (`base`, `cap`) to its own pace."""
        base = self.base if base is None else base
        cap = self.cap if cap is None else cap
        spread = self.jitter if jitter is None else jitter
        ours = min(cap, base * 2.0 ** min(max(attempt, 0), 30)) * (1 - spread / 2 + spread * random.random())
        return max(ours, retry_after or 0.0)

    def hold(self, url: str, retry_after: Optional[float]) -> None:
        """The server answered this URL with `Retry-After`: nobody asks it again sooner."""
        if not retry_after or retry_after <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._held) > 1000:  # forget the ones that passed
                self._held = {u: t for u, t in self._held.items() if t > now}
            self._held[url] = max(self._held.get(url, 0.0), now + retry_after)

    def held(self, url: str) -> float:
        """Seconds before this URL may be asked again (0: now)."""
        with self._lock:
            until = self._held.get(url)
        return max(0.0, until - time.monotonic()) if until else 0.0


class CreationGate:
    """'Not before' time for creating jobs, shared by every sender of one client.

    A 429 without `Retry-After` (the real API's concurrency 429s carry none) closes it for the policy's backoff:
    about 1 s, 2 s, 4 s … capped at 30 s, with jitter, growing while 429s keep coming and reset by the first
    job created.
    """

    CAP = 30.0

    def __init__(self, backoff: Optional[Backoff] = None) -> None:
        self._backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._streak = 0
        self._refused_at = 0.0  # when the last 429 came back (wall clock, as `sent_at`)

    def refused(self, retry_after: Optional[float], sent_at: Optional[float] = None) -> float:
        """Record a 429; returns how long the gate stays closed. A 429 answering a request sent before the
        previous 429 came back (requests sent side by side) is the same refusal: the backoff does not grow."""
        with self._lock:
            if sent_at is None or sent_at >= self._refused_at:
                self._streak += 1
            self._refused_at = time.time()
            if retry_after is None:
                retry_after = self._backoff.delay(self._streak - 1, base=1.0, cap=self.CAP)
            self._not_before = max(self._not_before, time.monotonic() + retry_after)
            return retry_after

    def created(self) -> None:
        with self._lock:
            self._streak = 0

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - time.monotonic())
