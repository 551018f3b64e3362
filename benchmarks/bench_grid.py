"""A 6 × 6 grid (36 jobs) against a parallel-job cap of 8, beside naive loops, in one run; and what its sheet
costs a saved notebook beside 36 separate outputs.

    python benchmarks/bench_grid.py [--job-seconds 4] [--size 6] [--cap 8] [--json] [--quick] [--readme]

Ours: one `scenario_nb.grid(...)` call (every tile sent at once; the engine holds what the cap refuses and
sends it as slots free), then `wait()`. Baselines on the same sandbox: the same 36 jobs as batches of `cap`
(`client.generate_many` for 8 prompts, wait for all 8, next 8: the loop a careful user writes by hand), and
the quick-start guide's loop with plain `requests` (submit, poll every 2.5 s, download, next job), run on
two jobs and extrapolated. The ideal is ⌈36/8⌉ rounds of one job time (jitter 0).

Bytes: the grid's output bundle (one JPEG sheet + provenance) in a saved .ipynb, beside the 36 tiles shown
one output each as a `%%scenario` cell shows a generation (each a JPEG thumbnail + provenance).
Measured from outside the package: requests and 429s from the sandbox's log, times from our clocks and each
job's `statusHistory`, notebook bytes from nbformat."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scenario_nb  # noqa: E402
import _readme  # noqa: E402  (benchmarks/ is on the path: the script's own folder)
from _measure import guide_job, server_times  # noqa: E402
from bench_poller import SandboxProcess  # noqa: E402

MODEL = "model_google-gemini-3-1-flash"


def posts_and_429s(sb, since: float) -> tuple[int, int]:
    posts = sum(1 for r in sb.requests if r["time"] >= since and r["method"] == "POST"
                and "/generate/custom/" in r["path"])
    return posts, sum(1 for r in sb.stats()["rate_limited"] if r["time"] >= since)


def measured(sb, handles: list, start: float, ideal: float) -> dict:
    end = max(h.finished_at for h in handles)
    posts, refused = posts_and_429s(sb, start)
    spans = [server_times(h.status_history) for h in handles if h.ok]
    return {"wall": end - start, "ratio": (end - start) / ideal, "ok": sum(h.ok for h in handles),
            "jobs": len({h.job_id for h in handles}), "posts": posts, "rate_limited": refused,
            "server_span": max(b for _, b in spans) - min(a for a, _ in spans) if spans else float("nan")}


def run_grid(sb, home: Path, size: int, ideal: float) -> tuple[dict, "scenario_nb.Grid"]:
    client = scenario_nb.ScenarioClient(sb.api_key, sb.api_secret, sb.url, home=home)
    prompts = [f"a treasure chest, game icon, style {i}" for i in range(size)]
    start = time.time()
    grid = scenario_nb.grid("", model=MODEL, vary={"seed": list(range(1, size + 1)), "prompt": prompts},
                            client=client, aspectRatio="1:1")
    submitted = time.time() - start
    grid.wait(timeout=600)
    result = measured(sb, grid.tiles, start, ideal)
    result["submit"] = submitted
    return result, grid


def run_batches(sb, home: Path, size: int, cap: int, ideal: float) -> dict:
    """The same jobs by hand: a batch of `cap` at once, wait for the whole batch, then the next."""
    client = scenario_nb.ScenarioClient(sb.api_key, sb.api_secret, sb.url, home=home)
    bodies = [(f"a treasure chest, game icon, batch style {c}", r + 1) for r in range(size) for c in range(size)]
    start, handles = time.time(), []
    for i in range(0, len(bodies), cap):
        batch = [client.generate(MODEL, p, seed=s, aspectRatio="1:1") for p, s in bodies[i:i + cap]]
        scenario_nb.wait_all(batch, timeout=600)
        handles += batch
    result = measured(sb, handles, start, ideal)
    client.close()
    return result


def run_guide(sb, jobs: int, sample: int, tmp: Path, ideal: float) -> dict:
    """The quick-start guide's loop with plain requests, one job after another (sampled, extrapolated)."""
    start = time.time()
    with requests.Session() as http:
        for i in range(sample):
            guide_job(http, sb, MODEL, {"prompt": f"guide job {i}", "seed": i, "aspectRatio": "1:1"}, tmp)
    wall = (time.time() - start) * jobs / sample
    return {"wall": wall, "ratio": wall / ideal, "sampled": sample}


def notebook_bytes(outputs: list) -> int:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=outputs)])
    return len(nbformat.writes(nb).encode())


def bench_bytes(grid) -> dict:
    """The sheet's output vs one output per tile, as a `%%scenario` cell shows each generation."""
    empty = notebook_bytes([])
    data, metadata = grid._repr_mimebundle_()  # what Jupyter saves: the display protocol
    sheet = notebook_bytes([nbformat.v4.new_output("display_data", data=data, metadata=metadata)]) - empty
    outputs = []
    for tile in grid.tiles:
        data, metadata = tile._repr_mimebundle_()
        outputs.append(nbformat.v4.new_output("display_data", data=data, metadata=metadata))
    separate = notebook_bytes(outputs) - empty
    return {"sheet_bytes": sheet, "separate_bytes": separate, "tiles": len(grid.tiles),
            "ratio": separate / sheet}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=6, help="the grid is SIZE × SIZE")
    parser.add_argument("--cap", type=int, default=8, help="the sandbox's parallel-job limit")
    parser.add_argument("--guide-sample", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 3 × 3 grid, cap 4, short jobs (smoke test)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.job_seconds, args.size, args.cap, args.guide_sample = 0.6, 3, 4, 1
    jobs = args.size * args.size
    ideal = math.ceil(jobs / args.cap) * args.job_seconds
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with SandboxProcess(job_seconds=args.job_seconds, jitter=0, max_parallel=args.cap, seed=5) as sb:
            ours, grid = run_grid(sb, tmp / "ours", args.size, ideal)
            sizes = bench_bytes(grid)
            batches = run_batches(sb, tmp / "batches", args.size, args.cap, ideal)
            guide = run_guide(sb, jobs, args.guide_sample, tmp, ideal)
    result = {"job_seconds": args.job_seconds, "size": args.size, "jobs": jobs, "cap": args.cap, "ideal": ideal,
              "ours": ours, "batches": batches, "guide": guide, "bytes": sizes}
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.readme:
        _readme.update("grid", table(result))
    return result


def table(r: dict) -> str:
    ok = lambda cond: "met" if cond else "**missed**"  # noqa: E731
    o, b, g, s = r["ours"], r["batches"], r["guide"], r["bytes"]
    n, cap = r["jobs"], r["cap"]
    lines = [f"A {r['size']} × {r['size']} grid ({n} jobs of {r['job_seconds']:g} s, jitter 0) on a sandbox (its own "
             f"process) that runs at most {cap} jobs at once (429 above, no Retry-After). Ideal: ⌈{n}/{cap}⌉ × "
             f"{r['job_seconds']:g} s = {r['ideal']:g} s. Wall: first request → every image local, our clock; "
             f"POSTs and 429s from the sandbox's log.", "",
             "| who | wall (s) | wall ÷ ideal | jobs | generation POSTs | 429s received |",
             "|---|---|---|---|---|---|",
             f"| `scenario_nb.grid(...)`, every tile sent at once | {o['wall']:.1f} | {o['ratio']:.2f} | {o['jobs']} | "
             f"{o['posts']} | {o['rate_limited']} |",
             f"| by hand: batches of {cap}, each waited for | {b['wall']:.1f} | {b['ratio']:.2f} | {b['jobs']} | "
             f"{b['posts']} | {b['rate_limited']} |",
             f"| the guide's loop, one job at a time (extrapolated from {g['sampled']}) | {g['wall']:.1f} | "
             f"{g['ratio']:.2f} | – | – | – |", "",
             "| saved notebook | bytes |", "|---|---|",
             f"| the grid's sheet (one JPEG + per-tile provenance) | {s['sheet_bytes'] / 1024:.0f} KiB |",
             f"| the {s['tiles']} tiles as {s['tiles']} outputs (as `%%scenario` shows each) | "
             f"{s['separate_bytes'] / 1024:.0f} KiB ({s['ratio']:.1f}× the sheet) |", "",
             f"- wall ÷ (⌈{n}/{cap}⌉ × job time) {o['ratio']:.2f} (≤ 1.15): {ok(o['ratio'] <= 1.15)}; all "
             f"{n} tiles sent in {o['submit']:.2f} s"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
