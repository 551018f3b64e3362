"""One poller per client: a scheduler thread plus a small worker pool, whatever the number of jobs.

Each job is polled near its predicted completion rather than on a fixed beat. The prediction uses what
this poller has seen of the model's durations (server-side, from `statusHistory`), else the job's own
progress rate, else a short doubling probe; the interval stays between a floor and a ceiling. A 429
holds every request until its `Retry-After` (the transport's shared gate). A job is finished (assets
resolved, downloaded, stored, history written) before its handle is marked done.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ._errors import (APIConnectionError, APIError, DownloadFailedError, JobFailedError, JobTimeoutError,
                      NotFoundError, ScenarioError, ServerError, StorageError)
from ._generation import Generation, parse_time

log = logging.getLogger("scenario_nb")


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
        """Start from what earlier sessions saw (the history), once per model."""
        with self._lock:
            if model_id not in self._seen:
                self._seen[model_id].extend(d for d in durations if d > 0)

    def quantile(self, model_id: str, q: float) -> Optional[float]:
        with self._lock:
            seen = sorted(self._seen.get(model_id, ()))
        if not seen:
            return None
        return seen[min(len(seen) - 1, int(q * len(seen)))]


def server_duration(history: list) -> Optional[float]:
    """Seconds from the first status to success, by the server's own clock."""
    times = [parse_time(h.get("date")) for h in history if isinstance(h, dict)]
    ends = [parse_time(h.get("date")) for h in history if isinstance(h, dict) and h.get("status") == "success"]
    times = [t for t in times if t]
    if not times or not ends or not ends[-1]:
        return None
    return ends[-1] - min(times)


class Poller:
    """Tracks every in-flight handle of one client."""

    def __init__(self, client, *, floor: float = 0.25, ceiling: float = 5.0, job_timeout: float = 3600.0,
                 workers: int = 8, target_quantile: float = 0.6) -> None:
        self.client = client
        self.floor, self.ceiling = floor, ceiling
        self.job_timeout = job_timeout
        self.target_quantile = target_quantile
        self.durations = DurationModel()
        self._cond = threading.Condition()
        self._queue: list = []  # heap of (due, seq, task, handle)
        self._seq = itertools.count()
        self._handles: dict[str, Generation] = {}
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scenario-poll")
        self._thread: Optional[threading.Thread] = None
        self.cpu_seconds: dict[str, float] = defaultdict(float)  # thread CPU per task kind (benchmarks)
        self._throttled: deque = deque()
        self._completing: set = set()  # handles whose outputs are being downloaded
        self._seeded: set = set()  # models whose durations were looked up in the history
        self._draining = False
        self._tracked_at: dict[int, float] = {}
        self._polls: dict[int, int] = defaultdict(int)
        self._samples: dict[int, tuple] = {}

    # -- Public ------------------------------------------------------------------------------------
    def track(self, handle: Generation) -> None:
        """Follow a created job until it ends."""
        with self._cond:
            if handle.job_id:
                self._handles[handle.job_id] = handle
            self._tracked_at.setdefault(id(handle), time.monotonic())
        self._schedule(handle, self._next_delay(handle), self._poll)

    def queue_submit(self, handle: Generation) -> None:
        """Send a throttled request (a 429 created no job) once the rate limit allows, in order."""
        with self._cond:
            self._throttled.append(handle)
            start, self._draining = not self._draining, True
        if start:
            self._schedule(None, self.client._http.gate.remaining(), self._drain)

    def queue_reconcile(self, handle: Generation) -> None:
        self._schedule(handle, 0.0, self._reconcile)

    def poll_soon(self, handle: Generation) -> None:
        self._schedule(handle, 0.0, self._poll)

    def forget(self, handle: Generation) -> None:
        with self._cond:
            if handle in self._throttled:
                self._throttled.remove(handle)
            self._queue = [e for e in self._queue if e[3] is not handle]
            heapq.heapify(self._queue)

    def handle_for(self, job_id: str) -> Optional[Generation]:
        with self._cond:
            return self._handles.get(job_id)

    def in_flight(self) -> list[Generation]:
        with self._cond:
            return [h for h in self._handles.values() if not h.done]

    @property
    def threads(self) -> int:
        return 1 + self._pool._max_workers

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- Scheduling --------------------------------------------------------------------------------
    def _schedule(self, handle: Optional[Generation], delay: float, task: Callable) -> None:
        with self._cond:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), task, handle))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="scenario-poller", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            started = time.thread_time()
            with self._cond:
                while not self._stopped:
                    if not self._queue:
                        self._cond.wait()  # nothing in flight: sleep until something is tracked
                        continue
                    wait = self._queue[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                due = []
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    due.append(heapq.heappop(self._queue))
                self.cpu_seconds["schedule"] += time.thread_time() - started
            for _, _, task, handle in due:
                try:
                    self._pool.submit(self._guarded, task, handle)
                except RuntimeError:  # pool shut down
                    return

    def _guarded(self, task: Callable, handle: Generation) -> None:
        started = time.thread_time()
        try:
            task(handle)
        except Exception as exc:  # never lose a job to a bug or an unexpected answer: try again later
            log.warning("scenario_nb: %s on %s; will retry", exc, getattr(handle, "job_id", None))
            self._schedule(handle, self.ceiling, task)
        finally:
            name = getattr(task, "func", task).__name__.strip("_")
            with self._cond:
                self.cpu_seconds[name] += time.thread_time() - started

    def _next_delay(self, handle: Generation) -> float:
        """How long until this job is worth asking about again."""
        now = time.time()
        polls = self._polls[id(handle)]
        predictions = []
        if handle.run_model_id not in self._seeded:
            self._seed_from_history(handle.run_model_id)
        typical = self.durations.quantile(handle.run_model_id, self.target_quantile)
        if typical is not None:
            predictions.append(handle.submitted_at + typical)
        sample = self._samples.get(id(handle))
        started = self._phase_start(handle, "in-progress")
        if handle.status == "in-progress" and sample and 0 < handle.progress < 1 and started is not None \
                and sample[0] > started:
            rate = handle.progress / (sample[0] - started)
            predictions.append(sample[0] + (1 - handle.progress) / rate + 0.2)
        if handle.status == "finalizing":  # outputs are being stored: moments away
            return self.floor
        if not predictions:  # nothing known yet: never more than ~20 % late
            return min(self.ceiling, max(self.floor, 0.2 * (now - handle.submitted_at)))
        ahead = [t for t in predictions if t > now + self.floor]
        if ahead:
            return min(self.ceiling, min(ahead) - now)
        overdue = max(0, polls - 1)
        return min(self.ceiling, self.floor * 1.25 ** min(overdue, 12))

    def _seed_from_history(self, model_id: str) -> None:
        """Durations of this model's past successes on this backend (local clock: a slight overestimate)."""
        self._seeded.add(model_id)
        try:
            rows = self.client.history.recent(200, backend_url=self.client.base_url)
        except ScenarioError:
            return
        self.durations.seed(model_id, [r.finished_at - r.created_at for r in rows if r.status == "success" and
                                       r.finished_at and model_id in (r.model_id, r.base_model_id)][:32])

    def _phase_start(self, handle: Generation, status: str) -> Optional[float]:
        for entry in handle.status_history:
            if entry.get("status") == status:
                t = parse_time(entry.get("date"))
                return None if t is None else t + handle.server_offset
        return None

    # -- Tasks (run on the worker pool) --------------------------------------------------------------
    def _poll(self, handle: Generation) -> None:
        if handle.done or handle.job_id is None or id(handle) in self._completing:
            return
        started = self._tracked_at.get(id(handle), time.monotonic())
        if time.monotonic() - started > self.job_timeout:
            self._release(handle)
            handle._finish(JobTimeoutError(handle.job_id, self.job_timeout))
            return
        self._polls[id(handle)] += 1
        try:
            job = self.client.get_job(handle.job_id)
        except NotFoundError:
            self._release(handle)
            handle._finish(JobFailedError(handle.job_id, "the API no longer knows this job",
                                          "it may belong to another project or a sandbox that was stopped"),
                           status="failure")
            return
        except (APIConnectionError, ServerError, APIError) as exc:
            log.info("scenario_nb: poll of %s failed (%s); retrying", handle.job_id, exc)
            self._schedule(handle, min(self.ceiling, self.floor * 2 ** min(self._polls[id(handle)], 4)),
                           self._poll)
            return
        handle._apply(job)
        self._samples[id(handle)] = (time.time(), handle.progress)
        status = handle.status
        if status == "success":
            duration = server_duration(handle.status_history)
            if duration:
                self.durations.add(handle.run_model_id, duration)
            with self._cond:
                self._completing.add(id(handle))
            self._schedule(handle, 0.0, functools.partial(self._complete, job=job))
        elif status in ("failure", "canceled"):
            self._release(handle)
            handle._finish(JobFailedError(handle.job_id, handle.error or "", handle.hint or "", status))
        else:
            self._schedule(handle, self._next_delay(handle), self._poll)

    def _complete(self, handle: Generation, job: dict) -> None:
        """Resolve, download and store every output, then mark the handle done."""
        meta = job.get("metadata") or {}
        asset_ids = [a for a in meta.get("assetIds") or [] if isinstance(a, str)]
        urls: dict[str, Optional[str]] = {a: None for a in asset_ids}
        if not asset_ids:  # the quick-start guide's shape: result.images[].url
            for index, image in enumerate((job.get("result") or {}).get("images") or []):
                if isinstance(image, dict) and image.get("url"):
                    urls[f"{handle.job_id}-{index}"] = image["url"]
            for node in meta.get("flow") or []:
                for asset in node.get("assets") or [] if isinstance(node, dict) else []:
                    if isinstance(asset, dict) and asset.get("assetId"):
                        urls.setdefault(asset["assetId"], None)
        store = self.client.store
        files, seeds = [], []
        try:
            for key, url in urls.items():
                if url is None:
                    asset = self.client.asset(key)
                    seeds.append((asset.get("metadata") or {}).get("seed"))
                    if not store.has(key):
                        self._store_download(key, lambda: self.client.download_asset(key, asset.get("url")))
                elif not store.has(key):
                    self._store_download(key, lambda: self.client._http.download(url))
                files.append(store.path_for(key))
        except (APIConnectionError, ServerError) as exc:
            log.info("scenario_nb: downloading %s failed (%s); retrying", handle.job_id, exc)
            self._schedule(handle, self.ceiling, functools.partial(self._complete, job=job))
            return
        except ScenarioError as exc:  # paid for but not fetched: the error says how to fetch it again
            self._release(handle)
            handle.asset_ids = list(urls)
            handle._finish(DownloadFailedError(handle.job_id, exc), status="success")
            return
        handle.asset_ids = list(urls)
        handle.files = files
        handle.seeds = [_seed(s) for s in seeds]
        self._release(handle)
        handle._finish(None, status="success")

    def _store_download(self, key: str, fetch: Callable[[], bytes]) -> None:
        """Download and store; a corrupt file is fetched once more before giving up."""
        try:
            self.client.store.put(key, fetch())
        except StorageError as exc:
            if "not a valid image" not in str(exc):
                raise
            self.client.store.put(key, self.client.download_asset(key) if key.startswith("asset_") else fetch())

    def _drain(self, _=None) -> None:
        """Resubmit throttled requests one by one, oldest first, pausing while the rate gate is closed."""
        while True:
            with self._cond:
                if not self._throttled:
                    self._draining = False
                    return
                handle = self._throttled[0]
            wait = self.client._http.gate.remaining()
            if wait > 0:
                self._schedule(None, wait, self._drain)
                return
            outcome = "done" if handle.done else None
            if outcome is None:
                try:
                    outcome = self.client.submit(handle, background=False)
                except ScenarioError as exc:
                    handle._finish(exc, status="failure")
            if outcome == "throttled":
                self._schedule(None, self.client._http.gate.remaining() or self.floor, self._drain)
                return
            with self._cond:
                if self._throttled and self._throttled[0] is handle:
                    self._throttled.popleft()

    def _reconcile(self, handle: Generation, attempts: int = 4) -> None:
        """A generation request's answer was lost: adopt the job it created, if any."""
        for attempt in range(attempts):
            try:
                if self.client.reconcile(handle):
                    return
            except ScenarioError as exc:
                log.info("scenario_nb: reconciling failed (%s); retrying", exc)
            time.sleep(0.5 * (attempt + 1))
        handle._finish(self.client.nothing_created(handle), status="failure")

    def _release(self, handle: Generation) -> None:
        with self._cond:
            self._completing.discard(id(handle))
        self._tracked_at.pop(id(handle), None)
        self._polls.pop(id(handle), None)
        self._samples.pop(id(handle), None)


def _seed(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
