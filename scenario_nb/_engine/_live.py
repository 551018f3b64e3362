"""What the engine's parts share: its settings, and the requests in flight with each one's poll bookkeeping.

`LiveRequests` is a leaf: it calls nothing else while it holds its lock (predicates given to `matching` may
only read handles and this object), so any part may call it while holding its own lock.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

from .._generation import Generation
from ._clock import Clock

SEARCH_SECONDS = 75.0  # how long a lost answer's job is looked for in GET /jobs before it is called unknown


@dataclass
class Settings:
    """The engine's timings, one object shared by its parts (the client changes some at any time)."""

    floor: float = 0.25  # seconds between two polls of one job, at least
    ceiling: float = 5.0  # seconds between two polls of one job, at most
    job_timeout: float = 3600.0  # when to stop watching a job
    search_seconds: float = SEARCH_SECONDS
    target_quantile: float = 0.7  # of a model's recent durations: when its jobs are asked about
    start_grace: float = 120.0  # after a start that may have been sent, how long a model at `new` proves nothing
    clock: Clock = field(default_factory=Clock)  # what every part's scheduling reads the time from


class LiveRequests:
    """The requests not finished yet (by request id and by job id), the jobs known to belong to a request, and
    for each request followed: its current poll (token, due time), when it was tracked and created, how often
    it was asked, its last progress sample, and whether a poll or a completion is under way."""

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self._clock = clock or Clock()
        self._lock = threading.RLock()
        self._live: dict[str, Generation] = {}  # request id -> handle, while in flight
        self._by_job: "weakref.WeakValueDictionary[str, Generation]" = weakref.WeakValueDictionary()
        self._known_jobs: set[str] = set()
        self._seq = itertools.count()
        self._tokens: dict[str, int] = {}  # request id -> the one poll task that counts
        self._due: dict[str, float] = {}  # request id -> when (monotonic) that poll is due
        self._tracked_at: dict[str, float] = {}
        self._created: dict[str, float] = {}  # request id -> when its creation answer arrived (clock.time())
        self._polls: dict[str, int] = defaultdict(int)
        self._samples: dict[str, tuple] = {}  # request id -> (clock.time(), progress) of its last poll
        self._asking: set = set()  # request ids with a poll on the wire: a wake-up never sends a second
        self._completing: set = set()  # request ids whose success was seen: completed once, never polled again

    # -- Handles -----------------------------------------------------------------------------------
    def add(self, handle: Generation) -> None:
        with self._lock:
            self._live[handle.request_id] = handle

    def get(self, request_id: str) -> Optional[Generation]:
        with self._lock:
            return self._live.get(request_id)

    def for_job(self, job_id: str) -> Optional[Generation]:
        """The handle that followed this job here, while anything still holds it (finished or not)."""
        with self._lock:
            return self._by_job.get(job_id)

    def bind_job(self, job_id: str, handle: Generation) -> None:
        """This job is the handle's: known from now on, and the handle is live."""
        with self._lock:
            self._known_jobs.add(job_id)
            self._by_job[job_id] = handle
            self._live[handle.request_id] = handle

    def knows_job(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._known_jobs

    def know_job(self, job_id: str) -> None:
        """This job belongs to a request (of another kernel, perhaps): never adopt it for another."""
        with self._lock:
            self._known_jobs.add(job_id)

    def matching(self, wanted: Callable[[Generation], bool]) -> list[Generation]:
        """The live handles `wanted` accepts, in the order they became live."""
        with self._lock:
            return [h for h in self._live.values() if wanted(h)]

    def in_flight(self) -> list[Generation]:
        return self.matching(lambda h: not h.done)

    # -- Following: one poll that counts per request ---------------------------------------------------------
    def track(self, request_id: str) -> None:
        """Start the job-timeout clock of a request (once: a new poll keeps it)."""
        with self._lock:
            self._tracked_at.setdefault(request_id, self._clock.monotonic())

    def tracked_for(self, request_id: str) -> float:
        """Seconds since the request was first tracked."""
        with self._lock:
            return self._clock.monotonic() - self._tracked_at.get(request_id, self._clock.monotonic())

    def new_poll(self, request_id: str, delay: float) -> int:
        """The token of the request's next poll, due in `delay` seconds; any earlier poll no longer counts."""
        with self._lock:
            token = self._tokens[request_id] = next(self._seq)
            self._due[request_id] = self._clock.monotonic() + delay
            return token

    def due(self, request_id: str) -> Optional[float]:
        """When (monotonic) the request's next poll is due, if one is."""
        with self._lock:
            return self._due.get(request_id)

    def start_asking(self, handle: Generation, token: Optional[int]) -> bool:
        """Whether this poll should ask now: it still counts, the job is followed and not completing, and no
        other poll of it is on the wire (then it is marked as on the wire until `done_asking`)."""
        with self._lock:
            if token is not None and self._tokens.get(handle.request_id) != token:
                return False  # a newer poll was scheduled for it
            if handle.done or handle.job_id is None or handle.request_id in self._completing:
                return False
            if handle.request_id in self._asking:
                return False  # the poll already on the wire answers for this one too
            self._asking.add(handle.request_id)
            return True

    def done_asking(self, request_id: str) -> None:
        with self._lock:
            self._asking.discard(request_id)

    def count_poll(self, request_id: str) -> int:
        """One more poll of the request; returns how many it has had."""
        with self._lock:
            self._polls[request_id] += 1
            return self._polls[request_id]

    def polls(self, request_id: str) -> int:
        with self._lock:
            return self._polls.get(request_id, 0)

    def claim_answer(self, request_id: str, success: bool) -> bool:
        """Whether a poll's answer still counts (no other poll saw this job succeed); a success is claimed: the
        first poll to see it completes the job, and none is sent again."""
        with self._lock:
            if request_id in self._completing:
                return False
            if success:
                self._completing.add(request_id)
            return True

    def is_completing(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._completing

    def sample(self, request_id: str, progress: float) -> None:
        """The progress a poll just saw, and when."""
        with self._lock:
            self._samples[request_id] = (self._clock.time(), progress)

    def last_sample(self, request_id: str) -> Optional[tuple]:
        with self._lock:
            return self._samples.get(request_id)

    def note_created(self, request_id: str, arrived: float) -> None:
        """When the answer that created the request's job arrived (clock.time())."""
        with self._lock:
            self._created[request_id] = arrived

    def created(self, request_id: str) -> Optional[float]:
        with self._lock:
            return self._created.get(request_id)

    def forget(self, request_id: str) -> None:
        """The request ended: no longer live, and its poll bookkeeping is dropped (a re-attached handle
        starts afresh). Its job stays known."""
        with self._lock:
            self._live.pop(request_id, None)
            self._tokens.pop(request_id, None)
            self._due.pop(request_id, None)
            self._tracked_at.pop(request_id, None)
            self._created.pop(request_id, None)
            self._polls.pop(request_id, None)
            self._samples.pop(request_id, None)
            self._completing.discard(request_id)
