"""Measurements taken from outside the package: the sandbox's request log and this process's CPU clocks.

The package keeps no benchmark hooks. What the client sent is read from the sandbox's own log (what
arrived, when), and what the engine cost is this process's CPU minus the CPU of the thread that called it.
"""

from __future__ import annotations

import bisect
import resource
import threading
import time
from datetime import datetime

GENERATE = "/generate/custom/"
BACKOFF_FLOOR, BACKOFF_CAP = 0.75, 30.0  # the client's own backoff after a 429 without Retry-After: ≥ 0.75 × 2^k
IN_TRANSIT = 0.05  # a POST already on its way when a 429 was answered is not a violation
AMBIGUOUS = 0.1  # a 429 logged this soon after two requests may have answered either: left out


def server_times(history: list) -> tuple[float, float]:
    """(first status, success) of a job, by the server's clock (the same machine's clock here)."""
    dates = {h["status"]: datetime.fromisoformat(h["date"].replace("Z", "+00:00")).timestamp() for h in history}
    return min(dates.values()), dates["success"]


def first_poll_after(log: list, job_id: str, success: float) -> float:
    """When the client first asked about this job once it had succeeded (seconds after the success)."""
    path = f"/jobs/{job_id}"
    return min((r["time"] for r in log if r["method"] == "GET" and r["path"].endswith(path)
                and r["time"] >= success), default=float("nan")) - success


def early_posts(log: list, rate_limited: list) -> dict:
    """Generation POSTs that arrived sooner after a 429 than the client's own backoff allows.

    The log does not say which request a 429 answered: each 429 is paired with the latest request logged
    before it, and left out (counted as ambiguous) when another request arrived within 0.1 s before it. A 429
    with `Retry-After` promises that many seconds; one without promises the client's own backoff, at least
    0.75 s doubling per consecutive 429 on a POST (capped at 30 s). The streak is reset by any POST not
    refused (a slight underestimate of the client's real streak, so never a false alarm).
    """
    log = sorted(log, key=lambda r: r["time"])
    times = [r["time"] for r in log]
    posts_429: set = set()
    holds, ambiguous = [], 0
    for entry in sorted(rate_limited, key=lambda e: e["time"]):
        named = "path" in entry  # a sandbox that says which request a 429 answered: exact pairing
        i = bisect.bisect_right(times, entry["time"]) - 1
        while i >= 0 and (i in posts_429 or named and (log[i]["method"], log[i]["path"]) !=
                          (entry.get("method"), entry["path"])):
            i -= 1
        if i < 0:
            continue
        posts_429.add(i)
        if log[i]["method"] not in ("POST", "PUT") or GENERATE not in log[i]["path"]:
            continue
        start = bisect.bisect_left(times, entry["time"] - AMBIGUOUS)
        if not named and any(j not in posts_429 for j in range(start, i)):
            ambiguous += 1  # another request arrived just before: the 429 may have been its
            continue
        holds.append((i, entry))
    streak, last, bounds = 0, -1, []
    for i, entry in holds:
        between = any(j not in posts_429 and log[j]["method"] == "POST" and GENERATE in log[j]["path"]
                      for j in range(last + 1, i))
        streak = 1 if between else streak + 1
        last = i
        promise = entry["retry_after"] if entry.get("header") else \
            BACKOFF_FLOOR * min(BACKOFF_CAP, 2.0 ** (streak - 1))
        bounds.append((entry["time"], entry["time"] + promise))
    posts = [r["time"] for r in log if r["method"] == "POST" and GENERATE in r["path"]]
    early = [(round(t - got, 3), round(until - got, 3)) for t in posts for got, until in bounds
             if got + IN_TRANSIT < t < until]
    return {"early": len({t for t in posts if any(got + IN_TRANSIT < t < until for got, until in bounds)}),
            "post_429s": len(bounds), "posts": len(posts), "ambiguous_429s": ambiguous, "early_gaps": early[:20]}


class EngineCpu:
    """CPU of every thread but the caller's, in this process, over a window, and how it splits by thread.

    The client's engine runs on its own threads, one lane each: `scenario-engine-poll` (polls, searches),
    `scenario-engine-send` (sending requests; or short-lived `scenario-send` threads in older engines) and
    `scenario-engine-fetch` (downloads); the caller's thread only calls `generate` and waits. `engine` is process
    CPU (which keeps the CPU of threads that have exited) minus the caller's own, so nothing is missed, provided
    nothing else runs here: the sandbox lives in another process, and `foreign` lists any other thread seen.
    `by_name` splits it: each long-lived thread's own CPU clock, read every 0.1 s and at the end (before the
    threads go), grouped by lane: `poll`, `send` (plus the rest: CPU of threads that exited between two looks)
    and `fetch`; a `scenario-engine` thread of no known lane counts as `poll` (never flattering that figure).
    """

    OURS = ("scenario-engine", "scenario-send")

    def __init__(self) -> None:
        self.foreign: set = set()
        self._stop = threading.Event()
        self._last: dict = {}  # thread -> (name, CPU seconds at the last look)

    @staticmethod
    def _process() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> "EngineCpu":
        self._main, self._process_start = time.thread_time(), self._process()
        self._start = {}
        self._look_once(self._start)
        self._watch = threading.Thread(target=self._look, name="bench-watch", daemon=True)
        self._watch_cpu = 0.0
        self._watch.start()
        return self

    def _look_once(self, into: dict) -> None:
        for thread in threading.enumerate():
            if thread is threading.main_thread() or thread.name == "bench-watch":
                continue
            if not thread.name.startswith(self.OURS):
                self.foreign.add(thread.name)
                continue
            try:
                into[thread] = (thread.name, time.clock_gettime(time.pthread_getcpuclockid(thread.ident)))
            except (OSError, TypeError):  # it has just exited
                pass

    def _look(self) -> None:
        start = time.thread_time()
        while not self._stop.wait(0.1):
            self._look_once(self._last)
        self._look_once(self._last)
        self._watch_cpu = time.thread_time() - start

    def __exit__(self, *exc) -> None:
        self.caller = time.thread_time() - self._main
        self._stop.set()
        self._watch.join()
        self.engine = max(0.0, self._process() - self._process_start - self.caller - self._watch_cpu)
        self.by_name: dict = {}
        for thread, (name, seconds) in self._last.items():
            group = "fetch" if name.startswith("scenario-engine-fetch") else \
                "send" if name.startswith(("scenario-engine-send", "scenario-send")) else \
                "poll" if name.startswith("scenario-engine") else None
            if group:
                self.by_name[group] = self.by_name.get(group, 0.0) + seconds - self._start.get(thread, (0, 0.0))[1]
        self.by_name["send"] = self.by_name.get("send", 0.0) + max(0.0, self.engine - sum(self.by_name.values()))


def guide_job(http, sb, model: str, body: dict, folder) -> dict:
    """One generation the quick-start guide's way: POST, poll every 2.5 s until it ends, download each image
    into `folder`. Returns the finished job."""
    auth = (sb.api_key, sb.api_secret)
    job = http.post(f"{sb.url}/generate/custom/{model}", auth=auth, timeout=60, json=body).json()["job"]
    job_id = job.get("jobId") or job["id"]
    while job["status"] not in ("success", "failure", "canceled"):
        time.sleep(2.5)
        job = http.get(f"{sb.url}/jobs/{job_id}", auth=auth, timeout=60).json()["job"]
    for asset_id in job["metadata"]["assetIds"]:
        url = http.get(f"{sb.url}/assets/{asset_id}", auth=auth, timeout=60).json()["asset"]["url"]
        (folder / f"{asset_id}.png").write_bytes(http.get(url, timeout=60).content)
    return job
