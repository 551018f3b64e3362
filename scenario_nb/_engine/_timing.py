"""When each job is worth asking about: the duration model, cold cohorts (scouts and followers), the next delay.

Each job is polled near its predicted completion rather than on a fixed beat: from the model's recent
server-side durations (their 70th percentile: asking a little late costs less than asking twice), else the
job's own progress rate, else a probe never more than ~20 % late. Jobs sent together finish together: when
the first of a model's jobs finishes, its siblings are due at once; once the model's duration is known, each
sibling is due when that says (one job's jitter moves none of the others).

Cold start. With no duration known for a model, jobs sent together would each probe at random to find out
when they end. Instead a few of each cohort (same model, sent within COHORT_SECONDS) are scouts and probe for
all; the others (followers) wait: a scout's progress rate tells them when to ask, a scout's success wakes
them, and meanwhile they ask at the ceiling cadence, so a job is never left unasked. A scout that ends
without success hands over to a follower at once.

This module decides; it never asks the server nor schedules anything (the poller does).
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict, deque
from typing import Any, Callable, Optional

from .._errors import ScenarioError
from .._generation import Generation, parse_time
from .._history import WORKBENCH_KINDS, History
from ._live import LiveRequests, Settings

SCOUTS = 2  # jobs of a cold cohort (a model's duration unknown) that probe for all of it
COHORT_SECONDS = 10.0  # jobs of one model sent this close together are one cohort
FINISHING_QUANTILE = 0.9  # finalizing is short and varies: asking just after it ends beats asking twice
TEACHES = 0.1  # progress from which a scout's rate is worth passing on (just after it starts, it is noise)


SKEW_ASSUMED = 10.0  # seconds this machine's clock may be ahead of the server's, until an answer says how far
SKEW_MARGIN = 0.5  # on top of a learned bound: timestamps in ms, and the bound's own rounding


class ServerClock:
    """How far this machine's clock is ahead of the server's, at most. A server timestamp was stamped before the
    answer carrying it arrived, so arrival minus stamp bounds it: closely for a job our request just created (its
    creation answer: the offset plus the answer's way back), loosely for any other job (a poll, a listing: its
    stamps may be old). The close ones say how far (until one came, SKEW_ASSUMED is assumed); the loose ones can
    only say less. Recent answers only: clocks drift.

    It bounds in time which job a lost answer may have made: none the server created before the request's
    intent was recorded."""

    def __init__(self, size: int = 32) -> None:
        self._created: deque = deque(maxlen=size)  # arrival minus the createdAt of a job our request just made
        self._seen: deque = deque(maxlen=size)  # arrival minus the newest stamp of any job in an answer
        self._lock = threading.Lock()

    def created(self, job: dict, arrived: float) -> None:
        """The answer that created this job (our request's) arrived at `arrived`, our clock."""
        stamp = parse_time(job.get("createdAt")) if isinstance(job, dict) else None
        if stamp is not None:
            with self._lock:
                self._created.append(arrived - stamp)
        self.saw(job, arrived)

    def saw(self, job: dict, arrived: float) -> None:
        """A job object in an answer that arrived at `arrived`: its newest timestamp (creation, last status)."""
        if not isinstance(job, dict):
            return
        stamps = [parse_time(job.get("createdAt")), parse_time(job.get("updatedAt"))]
        stamps += [parse_time(h.get("date")) for h in job.get("statusHistory") or [] if isinstance(h, dict)]
        known = [t for t in stamps if t is not None]
        if known:
            with self._lock:
                self._seen.append(arrived - max(known))

    def ahead_at_most(self) -> float:
        """Seconds this machine's clock is ahead of the server's, at most (as learned, else assumed)."""
        with self._lock:
            measured = min(self._created) + SKEW_MARGIN if self._created else SKEW_ASSUMED
            return min(measured, min(self._seen) + SKEW_MARGIN) if self._seen else measured

    def earliest_job(self, intent_at: float) -> float:
        """The server time before which no job can be the request whose intent was recorded at `intent_at`."""
        return intent_at - self.ahead_at_most()


class DurationModel:
    """Recent server-side durations per model, to predict when a job will finish."""

    def __init__(self, size: int = 32) -> None:
        self._seen: dict[str, deque] = defaultdict(lambda: deque(maxlen=size))
        self._lock = threading.Lock()

    def add(self, model_id: str, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._seen[model_id].append(seconds)

    def seed(self, model_id: str, durations: list) -> None:
        with self._lock:
            if model_id not in self._seen:
                self._seen[model_id].extend(d for d in durations if d > 0)

    def quantile(self, model_id: str, q: float) -> Optional[float]:
        with self._lock:
            seen = sorted(self._seen.get(model_id, ()))
        return seen[min(len(seen) - 1, int(q * len(seen)))] if seen else None


def server_duration(history: list) -> Optional[float]:
    """Seconds from the first status to success, by the server's own clock."""
    times = [parse_time(h.get("date")) for h in history if isinstance(h, dict)]
    ends = [parse_time(h.get("date")) for h in history if isinstance(h, dict) and h.get("status") == "success"]
    known = [t for t in times if t]
    if not known or not ends or not ends[-1]:
        return None
    return ends[-1] - min(known)


def phase_start(handle: Generation, status: str) -> Optional[float]:
    """When the job first had this status, on our clock (None if it has not had it, or no date)."""
    for entry in handle.status_history:
        if entry.get("status") == status:
            t = parse_time(entry.get("date"))
            return None if t is None else t + handle.server_offset
    return None


def _sent(handle: Generation) -> float:
    return handle.sent_at or handle.submitted_at


class PollTiming:
    """Predicts when each live job ends, from what its model's jobs and its cohort have shown."""

    def __init__(self, live: LiveRequests, settings: Settings, *, history: Callable[[], History],
                 backend_id: str) -> None:
        self._live = live
        self._settings = settings
        self._history_factory = history
        self._backend_id = backend_id
        self.durations = DurationModel()
        self._finishing = DurationModel()  # per model: seconds from `finalizing` to `success`, by the server
        self._lock = threading.Lock()
        self._scouts: dict[str, float] = {}  # request id of a job probing for its cold cohort -> its phase
        self._learned: dict[str, float] = {}  # a scout's request id -> its predicted end, seconds after sending
        self._seeded: set = set()

    # -- What a poll's answer teaches --------------------------------------------------------------------
    def learn_success(self, handle: Generation) -> Optional[float]:
        """A job succeeded: learn how long its model's jobs take (and finalize), and its cohort stops scouting.
        Returns how long after their own start its siblings are due (None: this job's duration is unknown)."""
        duration = server_duration(handle.status_history)
        success, finalizing = phase_start(handle, "success"), phase_start(handle, "finalizing")
        if success is not None and finalizing is not None:
            self._finishing.add(handle.run_model_id, success - finalizing)
        with self._lock:  # its cohort now knows the duration: no more scouting
            self._scouts.pop(handle.request_id, None)
            self._learned.pop(handle.request_id, None)
        if not duration:
            return None
        known = self.durations.quantile(handle.run_model_id, self._settings.target_quantile)
        self.durations.add(handle.run_model_id, duration)
        # Siblings are due when this one ended, or when the model's jobs usually end if that is later: once that
        # is known, one job's jitter is no reason to ask all the others early.
        return duration if known is None else max(duration, known)

    def sibling_dues(self, finished: Generation, duration: float) -> list[tuple[Generation, float]]:
        """Jobs of the same model sent about when this one was are due about now: each (job, when it has run
        as long as the finished one), unless its own progress tells it better."""
        live = self._live
        siblings = live.matching(lambda h: h is not finished and not h.done and bool(h.job_id) and
                                 h.run_model_id == finished.run_model_id and not live.is_completing(h.request_id))
        finishing = self._finishing.quantile(finished.run_model_id, FINISHING_QUANTILE)  # once, not per sibling
        siblings = [h for h in siblings if live.last_sample(h.request_id) is None or
                    self.progress_end(h, finishing) is None]
        return [(s, self.started(s) + duration) for s in siblings]

    def follower_dues(self, scout: Generation) -> list[tuple[Generation, float]]:
        """A scout that knows when it will end tells its waiting followers when to ask: each (follower, due)."""
        with self._lock:
            if scout.request_id not in self._scouts:
                return []
        end = self.progress_end(scout)
        if end is None or scout.progress < TEACHES:
            return []
        with self._lock:
            self._learned[scout.request_id] = end - _sent(scout)
            scouts = set(self._scouts)
        live = self._live
        followers = live.matching(lambda h: h is not scout and not h.done and bool(h.job_id) and
                                  h.run_model_id == scout.run_model_id and h.request_id not in scouts and
                                  not live.is_completing(h.request_id))
        if self.durations.quantile(scout.run_model_id, 0.5) is not None:
            return []  # a success already taught everyone
        return [(f, due) for f in followers if (due := self._cohort_end(f)) is not None]

    def replace_scout(self, gone: Generation) -> list[Generation]:
        """A scout ended without a success: the earliest-sent followers that take its place (they probe at once)."""
        with self._lock:
            if gone.request_id not in self._scouts:
                return []
            self._scouts.pop(gone.request_id, None)
            self._learned.pop(gone.request_id, None)
            scouts = set(self._scouts)
        live = self._live
        followers = sorted(live.matching(lambda h: h is not gone and not h.done and bool(h.job_id) and
                                         h.run_model_id == gone.run_model_id and h.request_id not in scouts and
                                         not live.is_completing(h.request_id)), key=_sent)
        new_scouts = []
        for follower in followers:
            if self._role(follower) != "scout":
                break
            new_scouts.append(follower)
        return new_scouts

    # -- When to ask ---------------------------------------------------------------------------------
    def next_delay(self, handle: Generation) -> float:
        """How long until this job is worth asking about again."""
        floor, ceiling = self._settings.floor, self._settings.ceiling
        now = self._settings.clock.time()
        if handle.status == "finalizing":  # outputs are being stored: moments away (as long as it usually takes)
            end = self.progress_end(handle)
            if end is None:  # how long is not known yet: its cohort's scouts take turns asking
                return self._scout_turn(handle)
            return floor if end <= now + floor else min(ceiling, end - now)
        if handle.run_model_id not in self._seeded:
            self._seed_from_history(handle.run_model_id)
        predictions = []
        sent = _sent(handle)  # a request held here by the rate limit starts when sent
        typical = self.durations.quantile(handle.run_model_id, self._settings.target_quantile)
        follower = typical is None and self._role(handle) == "follower"
        if typical is not None:  # durations are the server's, from the job's creation
            predictions.append(self.started(handle) + typical)
        for predicted in (self.progress_end(handle), self._cohort_end(handle) if follower else None):
            if predicted is not None:
                predictions.append(predicted)
        if not predictions:
            if follower:  # its scouts probe for it; it asks now and then in case they cannot
                return ceiling
            # A scout: never more than ~20 % late. Each probes at its own random share of that, so scouts sent
            # together probe at different moments.
            return min(ceiling, max(floor, 0.2 * (now - sent) * random.uniform(0.3, 1.0)))
        ahead = [t for t in predictions if t > now + floor]
        if ahead:
            phase = self._scouts.get(handle.request_id, 0.0) if typical is None else 0.0
            return min(ceiling, min(ahead) - now + phase)
        overdue = max(0, self._live.polls(handle.request_id) - 1)
        return min(ceiling, floor * 1.25 ** min(overdue, 12))

    def started(self, handle: Generation) -> float:
        """When the server created this job, on our clock: its first status, else its creation answer's arrival
        (that answer has no status history yet), else when it was sent. Not simply when it was sent: a burst of
        requests queues at the server, and a job asked about by its sending time is asked just before it ends,
        then a floor later."""
        created = phase_start(handle, "queued") if handle.server_offset else None
        if created is None:
            created = self._live.created(handle.request_id)
        return created if created is not None else _sent(handle)

    def progress_end(self, handle: Generation, finishing: Any = "learned") -> Optional[float]:
        """When this job will end, from its own progress: its rate while in progress, or how long this model's
        jobs take to finalize (None before it has one). `finishing`: that length, if the caller has it."""
        if finishing == "learned":
            finishing = self._finishing.quantile(handle.run_model_id, FINISHING_QUANTILE)
        if handle.status == "finalizing":
            started = phase_start(handle, "finalizing")
            return None if started is None or finishing is None else started + finishing + 0.05
        sample = self._live.last_sample(handle.request_id)
        started = phase_start(handle, "in-progress")
        if handle.status == "in-progress" and sample and 0 < handle.progress < 1 and started is not None \
                and sample[0] > started:
            rate = handle.progress / (sample[0] - started)  # then it finalizes
            return sample[0] + (1 - handle.progress) / rate + (0.2 if finishing is None else finishing + 0.05)
        return None

    def _role(self, handle: Generation) -> str:
        """'scout' or 'follower' in its cold cohort (asked only while the model's duration is unknown)."""
        with self._lock:
            if handle.request_id in self._scouts:
                return "scout"
            sent = _sent(handle)
            near = 0
            for request_id in list(self._scouts):
                scout = self._live.get(request_id)
                if scout is None or scout.done:  # ended: its place is free
                    self._scouts.pop(request_id, None)
                    self._learned.pop(request_id, None)
                elif scout.run_model_id == handle.run_model_id and abs(_sent(scout) - sent) <= COHORT_SECONDS:
                    near += 1
            if near < SCOUTS:  # scouts sent together ask out of step: one sees the success soon after it comes
                self._scouts[handle.request_id] = self._settings.floor * near / SCOUTS
                return "scout"
            return "follower"

    def _cohort_end(self, handle: Generation) -> Optional[float]:
        """When a follower is worth asking about, from its scouts' progress (a little after they expect to
        end: their own success wakes it sooner)."""
        sent = _sent(handle)
        offsets = []
        with self._lock:
            for request_id in self._scouts:
                scout = self._live.get(request_id)
                if request_id in self._learned and scout is not None and \
                        scout.run_model_id == handle.run_model_id and abs(_sent(scout) - sent) <= COHORT_SECONDS:
                    offsets.append(self._learned[request_id])
        if not offsets:
            return None
        offset = min(offsets)
        return sent + offset + 2 * self._settings.floor + 0.05 * offset

    def _scout_turn(self, handle: Generation) -> float:
        """The delay before a scout asks again while its job finalizes for an unknown time: a floor at least,
        and out of step with the other scouts' next asks (floor / SCOUTS apart), so the cohort asks every
        floor / SCOUTS and the first success is seen that much sooner. Others ask at the floor."""
        floor = self._settings.floor
        clock = self._settings.clock.monotonic()
        due = clock + floor
        others = []
        with self._lock:
            if handle.request_id not in self._scouts:
                return floor
            gap = floor / SCOUTS
            for request_id in self._scouts:
                scout, scout_due = self._live.get(request_id), self._live.due(request_id)
                if request_id != handle.request_id and scout_due is not None and scout is not None and \
                        scout.run_model_id == handle.run_model_id:
                    others.append(scout_due)
        for other in sorted(others):
            if abs(due - other) < gap:
                due = other + gap
        return due - clock

    def _seed_from_history(self, model_id: str) -> None:
        """Durations of this model's past successes on this backend (local clock: a slight overestimate)."""
        self._seeded.add(model_id)
        try:
            rows = self._history_factory().recent(200, backend_id=self._backend_id)
        except ScenarioError:
            return
        self.durations.seed(model_id, [(r.finished_at or 0) - (r.sent_at or r.created_at) for r in rows
                                       if r.status == "success" and r.finished_at and r.kind not in WORKBENCH_KINDS and
                                       model_id in (r.model_id, r.base_model_id)][:32])
