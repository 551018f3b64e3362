"""Fault soak: many generations through the public API while the sandbox injects every kind of fault.

    python benchmarks/soak.py [--jobs 500] [--sdk-jobs 100] [--json] [--quick] [--readme]

Counts what matters when generations cost money: nothing lost, no duplicate paid job created by a retry, no
paid job the caller was not told of, no generation POST sooner after a 429 than the Retry-After or the
client's own backoff (≥ 0.75 s, doubling per consecutive 429) allowed. Everything is counted from the
sandbox's records (jobs created, requests logged) and the public handles, never from the client's insides
(see `_measure.py`). Beside it, the official SDK (`scenario-sdk`, default
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
from _measure import early_posts  # noqa: E402

MODEL = "model_google-gemini-3-1-flash"
FAULTS = {"error_5xx": 0.03, "rate_limit": 0.03, "drop": 0.03, "slow": 0.02, "malformed": 0.02,
          "job_failure": 0.05, "expired_url": 0.05, "slow_seconds": 1.5, "retry_after": 0.5}


def clear(handle) -> bool:
    """A failure the user can act on: it names the job or the request (an unknown outcome is said to be
    unknown), or says that nothing was charged."""
    text = str(handle.exception)
    return bool(handle.job_id and handle.job_id in text) or handle.request_id in text or \
        "nothing was charged" in text


def duplicates(sb, prefix: str) -> int:
    created = Counter(j["body"].get("prompt") for j in list(sb.jobs.values())
                      if str(j["body"].get("prompt", "")).startswith(prefix))
    return sum(count - 1 for count in created.values() if count > 1)


def soak(jobs: int, seed: int = 1, search_seconds: float = None) -> dict:
    with tempfile.TemporaryDirectory() as home, sandbox_mod.start(job_seconds=0.5, job_jitter=0.2, seed=seed,
                                                                  max_parallel_jobs=64, faults=FAULTS) as sb:
        client = scenario_nb.ScenarioClient(sb.api_key, sb.api_secret, sb.url, home=home, timeout=(5.0, 1.0))
        if search_seconds is not None:  # how long a lost answer's job is looked for (the client's default: 75 s)
            client.set_polling(search_seconds=search_seconds)
        start = time.time()
        handles, refused = [], []
        for i in range(jobs):
            try:
                handles.append(client.generate(MODEL, f"soak {seed} #{i}"))
            except scenario_nb.ScenarioError as exc:  # e.g. a 5xx on a read, after every retry
                refused.append(str(exc))
        scenario_nb.wait_all(handles, timeout=900)
        client.close()
        log = [r for r in list(sb.requests) if r["time"] >= start]
        limited = [r for r in sb.stats()["rate_limited"] if r["time"] >= start]
        paid = [j for j in list(sb.jobs.values()) if str(j["body"].get("prompt", "")).startswith(f"soak {seed} #")]
        paid_ids = {j.get("jobId") or j.get("id") for j in paid}
        paid_prompts = {j["body"].get("prompt") for j in paid}
        known = {h.job_id for h in handles if h.job_id}
        ok = [h for h in handles if h.ok]
        failed = [h for h in handles if h.done and not h.ok and clear(h)]
        not_sent = [h for h in handles if isinstance(h.exception, scenario_nb.SubmitFailedError)]
        result = {
            "submitted": jobs, "succeeded": len(ok), "failed_clearly": len(failed) + len(refused),
            "lost": jobs - len(ok) - len(failed) - len(refused),
            "duplicates": duplicates(sb, f"soak {seed} #"), **early_posts(log, limited),
            "paid": len(paid), "paid_unknown": len(paid_ids - known),
            "outcome_unknown": sum(isinstance(h.exception, scenario_nb.OutcomeUnknownError) for h in handles),
            "outcome_unknown_paid": sum(isinstance(h.exception, scenario_nb.OutcomeUnknownError) and
                                        h.prompt in paid_prompts for h in handles),
            "clean_failures": len(not_sent),
            "clean_failures_charged": sum(h.prompt in paid_prompts for h in not_sent),
            "job_failures": sum(isinstance(h.exception, scenario_nb.JobFailedError) for h in handles),
            "faults_injected": sb.stats()["faults"], "rate_limited": len(limited),
            "lost_examples": [f"{h.job_id} {h.status} done={h.done}: {h.exception}" for h in handles
                              if not h.ok and h not in failed][:5],
            "examples": sorted({re.sub(r"job_\w+", "job_…", str(h.exception)) for h in handles
                                if h.exception is not None})[:6],
        }
        result["early_requests"] = result.pop("early")
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
    parser.add_argument("--search-seconds", type=float, help="how long a lost answer's job is looked for "
                        "(default: the client's own, 75 s)")
    parser.add_argument("--quick", action="store_true", help="a few jobs, a short search (smoke test)")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.sdk_jobs = min(args.jobs, 12), min(args.sdk_jobs, 6)
        args.search_seconds = args.search_seconds or 8.0
    result = {"ours": soak(args.jobs, search_seconds=args.search_seconds), "sdk": sdk_baseline(args.sdk_jobs),
              "faults": FAULTS}
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.readme:
        _readme.update("soak", table(result))
    return result


def table(r: dict) -> str:
    o, s = r["ours"], r["sdk"]
    return "\n".join([
        f"Fault rates per request: {', '.join(f'{k} {v:g}' for k, v in r['faults'].items() if v < 0.5)}; "
        f"slow answers take {r['faults']['slow_seconds']:g} s against a 1 s read timeout; injected 429s carry "
        f"Retry-After: {r['faults']['retry_after']:g}, the sandbox's concurrency 429s none. Counted from the "
        f"sandbox's own records (jobs it created, requests it logged), not from the client.", "",
        "| | submitted | succeeded | failed with a clear error | lost | duplicate jobs | paid jobs the caller "
        "was not told of | POSTs sooner than the client's backoff after a 429 | outcome unknown (told so) "
        "| clean failures (nothing charged: checked) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| scenario_nb | {o['submitted']} | {o['succeeded']} | {o['failed_clearly']} | {o['lost']} | "
        f"{o['duplicates']} | {o['paid_unknown']} of {o['paid']} | {o['early_requests']} "
        f"(of {o['posts']} POSTs, {o['post_429s']} refused, {o['ambiguous_429s']} 429s unattributable) | "
        f"{o['outcome_unknown']} "
        f"({o['outcome_unknown_paid']} paid) | "
        f"{o['clean_failures']} ({o['clean_failures_charged']} charged) |",
        f"| official SDK, default retries (POSTs only) | {s['submitted']} | {s['submitted'] - s['errors']} | "
        f"{s['errors']} | {s['paid_but_reported_failed']} | {s['duplicates']} | "
        f"{s['paid_but_reported_failed'] + s['duplicates']} | – | – | – |",
    ])


if __name__ == "__main__":
    main()
