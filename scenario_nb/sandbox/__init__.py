"""A local stand-in for the Scenario API: same routes, shapes, statuses and errors; real files (PNG images,
an MP4 video, a GLB model) and text answers.

    with scenario_nb.sandbox.start(job_seconds=2) as sb:
        client = scenario_nb.ScenarioClient(sb.api_key, sb.api_secret, sb.url)

It trains LoRAs too (create, training images, dry-run price, stages, cancel, failures; `train_seconds` sets how
long a training takes) and answers the caption and prompt tools.

It binds 127.0.0.1 only, serves asset files from a second origin that checks signed URLs (like
Scenario's CDN), and can inject faults, seeded or one at a time, for tests and benchmarks. It sits
beside the package: the client never imports it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Optional

from . import _training
from ._server import ApiHandler, CdnHandler, _Server
from ._state import State

__all__ = ["Sandbox", "start"]

FAULT_KINDS = ("rate_limit", "error_5xx", "drop", "slow", "malformed", "job_failure", "expired_url",
               "corrupt_image", "training_failure", "hold", "cdn_rate_limit")


class Sandbox:
    """A running sandbox: `.url`, `.cdn_url`, credentials, request logs, counters and fault controls."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.api_key: str = options["api_key"]
        self.api_secret: str = options["api_secret"]
        self.state = State(options)
        self.world: Any = None  # a home's world (`_world.World`) when started with --home
        self._cdn = _Server(self, CdnHandler)
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._api = _Server(self, ApiHandler)
        self.url = f"http://127.0.0.1:{self._api.server_address[1]}/v1"
        self._threads = [threading.Thread(target=s.serve_forever, name=f"scenario-sandbox-{n}", daemon=True,
                                          kwargs={"poll_interval": 0.2})
                         for n, s in (("api", self._api), ("cdn", self._cdn))]
        for thread in self._threads:
            thread.start()

    def __repr__(self) -> str:
        return f"<Sandbox {self.url}>"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.state.release()
        for server in (self._api, self._cdn):
            server.shutdown()
            server.server_close()
        self.state.close()

    # -- What tests and benchmarks read --------------------------------------------------------------
    @property
    def requests(self) -> list:
        return self.state.requests

    @property
    def cdn_requests(self) -> list:
        return self.state.cdn_requests

    @property
    def jobs(self) -> dict:
        return self.state.jobs

    @property
    def generate_posts(self) -> int:
        return self.state.generate_posts

    def stats(self) -> dict:
        """Counters; `rate_limited` lists every 429 as {time, header, retry_after} (retry_after 0: no header).
        `jobs_created` counts generation jobs only; `jobs` also holds training and text-tool jobs."""
        state = self.state
        with state.lock:
            return {"jobs_created": state.jobs_created, "generate_posts": state.generate_posts,
                    "trainings_started": state.trainings.started,
                    "requests": len(state.requests), "cdn_requests": len(state.cdn_requests),
                    "rate_limited": list(state.rate_limited), "faults": dict(state.fault_counts)}

    # -- Faults --------------------------------------------------------------------------------------
    def inject(self, kind: str, count: int = 1, path: Optional[str] = None, method: Optional[str] = None,
               **params: Any) -> None:
        """Make the next `count` matching requests fail this way (see FAULT_KINDS).

        `rate_limit` takes `retry_after` (seconds: sends a Retry-After header, which the real concurrency
        429 does not) and `remaining_seconds` (a cooldown 429's body field); `cdn_rate_limit` is the asset
        origin's 429 for a download (`retry_after` too). `drop`, `error_5xx` and
        `malformed` take `after_create`: the request does its work first and only its answer is lost (for job
        creations by default for `malformed`; for any other request only when asked, e.g. a training started
        or a caption charged). `dry_run` (True or False) matches only dry runs, or only real requests.

        `hold` acts on the request (a job or a training is created) and keeps its answer back until
        `release()`, or `seconds` (default 60): with `wait_held()` a test interrupts the client at "request
        sent, answer not read" instead of after a guessed delay. Another process does the same through
        `POST /v1/_sandbox/faults` (this method's arguments as JSON), `GET /v1/_sandbox` (its `held` list)
        and `POST /v1/_sandbox/release`.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        state = self.state
        with state.lock:
            if kind == "training_failure":  # the next trainings fail halfway through running-train
                state.trainings.pending_failures += [(params.get("error", _training.FAILURE[0]),
                                                      params.get("hint", _training.FAILURE[1]))] * count
            elif kind == "job_failure":
                state.pending_failures += [(params.get("error", "The provider rejected the request"),
                                            params.get("hint", "Try again with another prompt"))] * count
            elif kind == "expired_url":
                state.expire_next += count
            else:
                state.injected.append({"kind": kind, "count": count, "path": path, "method": method, **params})

    def wait_held(self, method: Optional[str] = None, path: Optional[str] = None, timeout: float = 30.0) -> dict:
        """Wait until a `hold` fault holds the answer to a matching request (`path`: a part of it); returns
        that request. Raises TimeoutError when none came."""
        state = self.state

        def matching() -> Optional[dict]:
            return next((r for r in state.holding() if (method is None or r["method"] == method)
                         and (path is None or path in r["path"])), None)
        with state.held_changed:
            found = state.held_changed.wait_for(matching, timeout=timeout)
        if found is None:
            raise TimeoutError(f"no {method or ''} {path or 'request'} was held within {timeout:g} s")
        return found

    def release(self) -> None:
        """Send the answers that `hold` faults keep back."""
        self.state.release()

    def set_faults(self, **rates: float) -> None:
        """Seeded fault rates (0–1) per kind, plus `slow_seconds` and `retry_after` (a Retry-After header).
        `training_failure` is drawn once per training, when it starts."""
        with self.state.lock:
            self.state.rates.update(rates)


# "model-training": trainings accept cancel through their own route, POST /models/{id}/train/action (contract
# §12b.4); POST /jobs/{id}/action refuses every training job, as the real cloud does (§12d.5).
DEFAULT_CANCELLABLE = ("inference", "model-training")


def start(*, port: int = 0, api_key: str = "sandbox-key", api_secret: str = "sandbox-secret",
          job_seconds: float = 3.0, job_jitter: float = 0.0, max_parallel_jobs: int = 32, url_ttl: float = 600.0,
          seed: int = 0, faults: Optional[dict] = None, legacy_shapes: bool = False,
          cancellable_types: Iterable[str] = DEFAULT_CANCELLABLE, retry_after_header: bool = False,
          list_lag: float = 3.0, legacy: bool = False, train_seconds: Optional[float] = None,
          max_parallel_trainings: int = 1, max_training_images: int = 50,
          clock: Optional[Callable[[], float]] = None, demo_training: bool = False) -> Sandbox:
    """Start a sandbox on 127.0.0.1 in background threads (port 0: a free one).

    The defaults are the real cloud's, never kinder: generation (`custom`) jobs refuse cancel
    (`cancellable_types` lists the job types that accept it), 429s carry no `Retry-After` header
    (`retry_after_header=True` adds one), `GET /jobs` shows a new job only after `list_lag` seconds, and
    the quick-start guide's `job.id` / `result.images[].url` appear only with `legacy_shapes=True`
    (`legacy` is its old name).

    A training takes `train_seconds` in all (stages: pending 10%, queued-for-train 20%, starting-train 15%,
    running-train 55%); without it, the real durations (2 s, 10–60 s, 30–90 s, ~1 min per epoch). At most
    `max_parallel_trainings` run at once (429 `parallel-training`) and a model holds at most
    `max_training_images` (429 `add-training-image`). Trainings read `clock` (default `time.time`).
    `demo_training=True` (a home's world) sets the catalog's demo training under way, 40 % into its run.
    """
    return Sandbox(port=port, api_key=api_key, api_secret=api_secret, job_seconds=job_seconds,
                   job_jitter=job_jitter, max_parallel_jobs=max_parallel_jobs, url_ttl=url_ttl, seed=seed,
                   faults=faults, legacy=legacy_shapes or legacy, cancellable_types=tuple(cancellable_types),
                   retry_after_header=retry_after_header, list_lag=list_lag, train_seconds=train_seconds,
                   max_parallel_trainings=max_parallel_trainings, max_training_images=max_training_images,
                   clock=clock, demo_training=demo_training)
