"""`python -m scenario_nb.sandbox`: serve the sandbox on loopback until Ctrl-C; with `--home`, a home's world
(the one its kernels share, kept on disk); `--reset` empties that world."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from . import DEFAULT_CANCELLABLE, _world, start


def default_home() -> Path:
    """$SCENARIO_NB_HOME, else ~/.scenario_nb (as the client decides it)."""
    return Path(os.environ.get("SCENARIO_NB_HOME") or Path.home() / ".scenario_nb")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenario_nb.sandbox",
                                     description="A local Scenario-compatible API for notebooks and tests.")
    parser.add_argument("--port", type=int, default=0, help="port for the API (0: a free one)")
    parser.add_argument("--api-key", default="sandbox-key")
    parser.add_argument("--api-secret", default="sandbox-secret")
    parser.add_argument("--job-seconds", type=float, default=3.0, help="how long each job takes")
    parser.add_argument("--jitter", type=float, default=0.0, help="± random seconds on each job")
    parser.add_argument("--max-parallel", type=int, default=32, help="parallel jobs before 429")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids, durations and faults")
    parser.add_argument("--cancellable-types", default=",".join(DEFAULT_CANCELLABLE),
                        help="comma-separated job types that accept cancel (the real cloud refuses it on "
                             "generation jobs, type custom)")
    parser.add_argument("--retry-after-header", action="store_true",
                        help="send Retry-After on 429s (the real cloud's concurrency 429s carry none)")
    parser.add_argument("--list-lag", type=float, default=3.0,
                        help="seconds before a new job shows in GET /jobs (GET /jobs/{id} sees it at once)")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="how long a training takes in all (default: the real durations, minutes per epoch)")
    parser.add_argument("--max-parallel-trainings", type=int, default=1,
                        help="trainings at once before 429 parallel-training")
    parser.add_argument("--legacy-shapes", action="store_true",
                        help="answer with the quick-start guide's shapes: job.id and result.images[].url")
    parser.add_argument("--home", type=Path, default=None,
                        help="serve this home's world (its models, trainings, jobs and assets, kept in "
                             "HOME/sandbox/): what kernels without credentials and SCENARIO_NB_HOME=HOME use")
    parser.add_argument("--reset", action="store_true",
                        help="empty the world of --home (default: $SCENARIO_NB_HOME or ~/.scenario_nb) and exit")
    parser.add_argument("--exit-when-unused", action="store_true", help=argparse.SUPPRESS)  # a kernel's start
    args = parser.parse_args(argv)
    if args.reset:
        home = args.home or default_home()
        print(f"sandbox world of {home}: {_world.reset(home)}", flush=True)
        return 0
    if args.home is not None:
        if (args.api_key, args.api_secret) != (_world.KEY, _world.SECRET):
            parser.error("a home's world uses the embedded sandbox's own credentials: no --api-key/--api-secret")
        return _world.serve(args.home, port=args.port, exit_when_unused=args.exit_when_unused,
                            job_seconds=args.job_seconds, job_jitter=args.jitter,
                            max_parallel_jobs=args.max_parallel, seed=args.seed,
                            cancellable_types=[t for t in args.cancellable_types.split(",") if t],
                            retry_after_header=args.retry_after_header, list_lag=args.list_lag,
                            legacy_shapes=args.legacy_shapes, train_seconds=args.train_seconds,
                            max_parallel_trainings=args.max_parallel_trainings)
    sandbox = start(port=args.port, api_key=args.api_key, api_secret=args.api_secret,
                    job_seconds=args.job_seconds, job_jitter=args.jitter, max_parallel_jobs=args.max_parallel,
                    seed=args.seed, cancellable_types=[t for t in args.cancellable_types.split(",") if t],
                    retry_after_header=args.retry_after_header, list_lag=args.list_lag,
                    legacy_shapes=args.legacy_shapes, train_seconds=args.train_seconds,
                    max_parallel_trainings=args.max_parallel_trainings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"Scenario sandbox API: {sandbox.url}", flush=True)
    print(f"asset origin: {sandbox.cdn_url}", flush=True)
    print(f"credentials: SCENARIO_API_KEY={sandbox.api_key} SCENARIO_API_SECRET={sandbox.api_secret}", flush=True)
    print(f"use it: export SCENARIO_API_URL={sandbox.url}  (Ctrl-C stops)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
