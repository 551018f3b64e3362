"""Fault soak: many generations through the public API while the sandbox injects every kind of fault.

    python benchmarks/soak.py [--jobs 500] [--sdk-jobs 100] [--json]

Counts what matters when generations cost money: nothing lost, no duplicate paid job created by a retry,
no request sent before a Retry-After allowed. Beside it, the official SDK (`scenario-sdk`, default
retries) submits generations against the same fault mix, to show what blind POST retries do.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scenario_nb  # noqa: E402
from scenario_nb import sandbox as sandbox_mod  # noqa: E402
import _readme  # noqa: E402  (benchmarks/ is on the path: the script's own folder)

MODEL = "model_google-gemini-3-1-flash"
FAULTS = {"error_5xx": 0.03, "rate_limit": 0.03, "drop": 0.03, "slow": 0.02, "malformed": 0.02,
          "job_failure": 0.05, "expired_url": 0.05, "slow_seconds": 1.5, "retry_after": 0.5}


def clear(handle) -> bool:
    """A failure the user can act on: it names the job, or says that nothing was charged."""
    text = str(handle.exception)
    return bool(handle.job_id and handle.job_id in text) or "nothing was charged" in text


def duplicates(sb, prefix: str) -> int:
    created = Counter(j["body"].get("prompt") for j in list(sb.jobs.values())
                      if str(j["body"].get("prompt", "")).startswith(prefix))
    return sum(count - 1 for count in created.values() if count > 1)


def soak(jobs: int, seed: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as home, sandbox_mod.start(job_seconds=0.5, job_jitter=0.2, seed=seed,
                                                                  max_parallel_jobs=64, faults=FAULTS) as sb:
        client = scenario_nb.ScenarioClient(sb.api_key, sb.api_secret, sb.url, home=home, timeout=(5.0, 1.0))
        sends: list = []
        client._http.on_request = lambda method, path: sends.append(time.monotonic())
        handles, refused = [], []
        for i in range(jobs):
            try:
                handles.append(client.generate(MODEL, f"soak {seed} #{i}"))
            except scenario_nb.ScenarioError as exc:  # e.g. a 5xx on a read, after every retry
                refused.append(str(exc))
        scenario_nb.wait_all(handles, timeout=900)
        holds = list(client._http.gate.holds)
        early = sum(1 for sent in sends if any(got < sent < until - 0.001 for got, until in holds))
        ok = [h for h in handles if h.ok]
        failed = [h for h in handles if h.done and not h.ok and clear(h)]
        result = {
            "submitted": jobs, "succeeded": len(ok), "failed_clearly": len(failed) + len(refused),
            "lost": jobs - len(ok) - len(failed) - len(refused),
            "duplicates": duplicates(sb, f"soak {seed} #"), "early_requests": early,
            "uncertain_posts": sum(h.uncertain for h in handles),
            "adopted": sum(h.uncertain and h.job_id is not None for h in handles),
            "clean_failures": sum(isinstance(h.exception, scenario_nb.SubmitFailedError) for h in handles),
            "job_failures": sum(isinstance(h.exception, scenario_nb.JobFailedError) for h in handles),
            "faults_injected": sb.stats()["faults"], "rate_limited": len(sb.stats()["rate_limited"]),
            "lost_examples": [f"{h.job_id} {h.status} done={h.done}: {h.exception}" for h in handles
                              if not h.ok and h not in failed][:5],
            "examples": sorted({re.sub(r"job_\w+", "job_…", str(h.exception)) for h in handles
                                if h.exception is not None})[:6],
        }
        client.close()
    return result


def sdk_baseline(jobs: int, seed: int = 2) -> dict:
    """The official SDK's generation POSTs (default retries: 5xx and timeouts are re-sent)."""
    import scenario_sdk
    with sandbox_mod.start(job_seconds=0.5, job_jitter=0.2, seed=seed, max_parallel_jobs=64, faults=FAULTS) as sb:
        sdk = scenario_sdk.Scenario(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.url, timeout=1.0)
        errors, unknown = 0, 0
        for i in range(jobs):
            prompt = f"sdk {seed} #{i}"
            try:
                sdk.generate.run_model(MODEL, body={"prompt": prompt})
            except Exception:
                errors += 1
                if any(j["body"].get("prompt") == prompt for j in list(sb.jobs.values())):
                    unknown += 1  # a paid job exists, but the caller was told it failed
        return {"submitted": jobs, "errors": errors, "paid_but_reported_failed": unknown,
                "duplicates": duplicates(sb, f"sdk {seed} #")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--sdk-jobs", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args(argv)
    result = {"ours": soak(args.jobs), "sdk": sdk_baseline(args.sdk_jobs), "faults": FAULTS}
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.readme:
        _readme.update("soak", table(result))
    return result


def table(r: dict) -> str:
    o, s = r["ours"], r["sdk"]
    return "\n".join([
        f"Fault rates per request: {', '.join(f'{k} {v:g}' for k, v in r['faults'].items() if v < 0.5)}; "
        f"slow answers take {r['faults']['slow_seconds']:g} s against a 1 s read timeout.", "",
        "| | submitted | succeeded | failed with a clear error | lost | duplicate jobs | requests before Retry-After "
        "| uncertain POSTs | adopted | clean failures (nothing charged) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| scenario_nb | {o['submitted']} | {o['succeeded']} | {o['failed_clearly']} | {o['lost']} | "
        f"{o['duplicates']} | {o['early_requests']} | {o['uncertain_posts']} | {o['adopted']} | "
        f"{o['clean_failures']} |",
        f"| official SDK, default retries (POSTs only) | {s['submitted']} | {s['submitted'] - s['errors']} | "
        f"{s['errors']} ({s['paid_but_reported_failed']} of them paid for) | {s['paid_but_reported_failed']} | "
        f"{s['duplicates']} | – | – | – | – |",
    ])


if __name__ == "__main__":
    main()
