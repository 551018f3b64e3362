"""How long the test suite takes, as CI runs it, beside a baseline commit's suite in the same run.

    python benchmarks/bench_suite.py [--baseline REV] [--runs N] [--select PYTEST_ARGS] [--json] [--readme]

Each commit is cloned fresh (what git tracks at that commit, nothing else) and its own test command runs
there, `python -m pytest` with CI=true and no stdin, with that clone first on PYTHONPATH (kernels and venvs
the tests start use its code, not the installed one). The runs alternate: baseline, HEAD, baseline, HEAD...
so a machine that gets busier or quieter weighs on both alike. Reported per commit: wall time (median and
range), the children's CPU time, and pytest's own summary line of each run, with its random-order seed when
it printed one. Installs are not timed: this machine already has the test extra (`.ci/run` adds about a
minute on a fresh one).

The default baseline is the last commit before the fast suite (issue 22): every notebook executed three to
four times, three virtual environments, one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _readme  # noqa: E402  (benchmarks/ is on the path: the script's own folder)

BASELINE = "34f903a"
CREDENTIALS = ("SCENARIO_API_KEY", "SCENARIO_API_SECRET", "SCENARIO_API_URL", "SCENARIO_SDK_API_KEY",
               "SCENARIO_SDK_API_SECRET", "SCENARIO_BASE_URL")


def clone(rev: str, where: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(where)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", rev], cwd=where, check=True)
    return where


def run_suite(checkout: Path, timeout: float, select: list) -> dict:
    """One run of the checkout's test command (`select`: pytest arguments that pick fewer tests); wall and CPU
    seconds, pytest's summary and seed."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    env.update(CI="true", PYTHONPATH=str(checkout), PYTHONDONTWRITEBYTECODE="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *select], cwd=checkout, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "")
    seed = re.search(r"Using --randomly-seed=(\d+)", proc.stdout)
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "returncode": proc.returncode, "summary": summary, "seed": seed[1] if seed else None,
            "failed": failed}


def measure(baseline: str, runs: int, timeout: float, select: list = ()) -> dict:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    base = subprocess.run(["git", "rev-parse", "--short", baseline], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    result: dict = {"head": head, "baseline": base, "runs": {head: [], base: []}}
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        checkouts = {base: clone(base, Path(tmp) / "baseline"), head: clone(head, Path(tmp) / "head")}
        for _ in range(runs):
            for rev in (base, head):
                result["runs"][rev].append(run_suite(checkouts[rev], timeout, list(select)))
                print(f"{rev}: {result['runs'][rev][-1]}", file=sys.stderr, flush=True)
    return result


def table(result: dict) -> str:
    rows = ["| commit | runs | wall, median (min–max) | children's CPU, median | each run: pytest's summary |",
            "|---|---|---|---|---|"]
    for label, rev in (("HEAD", result["head"]), ("baseline", result["baseline"])):
        runs = result["runs"][rev]
        walls = [r["wall"] for r in runs]
        summaries = "; ".join(f"{r['summary'] or 'no summary'} (exit {r['returncode']}"
                              f"{', seed ' + r['seed'] if r['seed'] else ''}"
                              f"{': ' + ', '.join(r.get('failed') or []) if r.get('failed') else ''})" for r in runs)
        rows.append(f"| {label} `{rev}` | {len(runs)} | {statistics.median(walls) / 60:.1f} min "
                    f"({min(walls) / 60:.1f}–{max(walls) / 60:.1f}) | "
                    f"{statistics.median(r['cpu'] for r in runs) / 60:.1f} min | {summaries} |")
    head, base = (statistics.median(r["wall"] for r in result["runs"][rev]) for rev in (result["head"],
                                                                                       result["baseline"]))
    rows.append(f"\nHEAD takes {head / base:.2f}× the baseline's wall time; target: the test part under 5 min "
                f"({'met' if head < 300 else 'missed'}).")
    return "\n".join(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"the commit to compare with (default {BASELINE})")
    parser.add_argument("--runs", type=int, default=1, help="runs of each, alternating (default 1)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take")
    parser.add_argument("--select", default="", help="pytest arguments that pick a part of the suite (a check of "
                        "this script, not a figure)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args(argv)
    result = measure(args.baseline, args.runs, args.timeout, args.select.split())
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.readme:
        _readme.update("suite", table(result))
    return result


if __name__ == "__main__":
    main()
