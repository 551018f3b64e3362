"""What the magics cost a notebook and its kernel, each beside a naive baseline in the same run.

    python benchmarks/bench_notebook.py [--json] [--quick]

1. Bytes a 1024×1024 image adds to a saved .ipynb: our `%%scenario` output bundle vs `display(Image(png))`.
2. Time `%load_ext scenario_nb` adds once ipywidgets is imported (fresh processes, median).
3. Kernel time blocked by a `%%scenario --no-wait` cell vs one bare generation POST from the same kernel.
4. Kernel RSS growth after 200 images through `%%scenario` vs displaying the same 200 PNGs naively.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import scenario_nb  # noqa: E402
from scenario_nb import sandbox as sandbox_mod  # noqa: E402
import _readme  # noqa: E402  (benchmarks/ is on the path: the script's own folder)

MODEL = "model_google-gemini-3-1-flash"


def notebook_bytes(outputs: list) -> int:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=outputs)])
    return len(nbformat.writes(nb).encode())


def bench_bytes(images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, sandbox_mod.start(job_seconds=0.2) as sb:
        client = scenario_nb.ScenarioClient(sb.api_key, sb.api_secret, sb.url, home=tmp)
        ours, naive = [], []
        empty = notebook_bytes([])
        for i in range(images):
            gen = client.generate(MODEL, f"a treasure map with islands and sea monsters, take {i}",
                                  aspectRatio="1:1").wait()
            data, metadata = gen._repr_mimebundle_()  # what Jupyter saves: the display protocol
            ours.append(notebook_bytes([nbformat.v4.new_output("display_data", data=data, metadata=metadata)])
                        - empty)
            png = gen.files[0].read_bytes()
            naive.append(notebook_bytes([nbformat.v4.new_output(
                "display_data", data={"image/png": base64.b64encode(png).decode(),
                                      "text/plain": "<IPython.core.display.Image object>"})]) - empty)
        client.close()
    return {"ours_bytes": statistics.mean(ours), "naive_bytes": statistics.mean(naive),
            "ratio": statistics.mean(naive) / statistics.mean(ours), "images": images}


LOAD = """
import time, os
import ipywidgets
from IPython.testing.globalipapp import get_ipython
ip = get_ipython()
t0 = time.perf_counter()
{step}
print(time.perf_counter() - t0)
"""


def bench_load_ext(repeats: int) -> dict:
    def median_of(step: str) -> float:
        times = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", LOAD.format(step=step)], capture_output=True, text=True,
                                 check=True, cwd=ROOT).stdout.strip().splitlines()[-1]
            times.append(float(out))
        return statistics.median(times)
    baseline = median_of("pass")
    ours = median_of("ip.run_line_magic('load_ext', 'scenario_nb')")
    imports = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); import ipywidgets; "
                              "print(time.perf_counter()-t)"], capture_output=True, text=True, check=True)
        imports.append(float(out.stdout.strip()))
    return {"load_ext_ms": 1000 * (ours - baseline), "import_ipywidgets_ms": 1000 * statistics.median(imports)}


def start_sandbox_process(job_seconds: float, max_parallel: int):
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--port", "0", "--job-seconds",
                             str(job_seconds), "--max-parallel", str(max_parallel)], stdout=subprocess.PIPE, text=True)
    while True:
        found = re.search(r"(http://127\.0\.0\.1:\d+/v1)", proc.stdout.readline())
        if found:
            return proc, found[1]


class Kernel:
    def __init__(self, env: dict) -> None:
        # Unix sockets: over TCP another process may take a port jupyter_client picked before the kernel binds it
        self.km = KernelManager(kernel_name="python3", transport="ipc",
                                ip=os.path.join(tempfile.mkdtemp(prefix="kernel-"), "ipc"))
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.process = psutil.Process(self.km.provisioner.process.pid)

    def run(self, code: str) -> float:
        start = time.perf_counter()
        reply = self.kc.execute_interactive(code, timeout=600, output_hook=lambda msg: None)
        elapsed = time.perf_counter() - start
        assert reply["content"]["status"] == "ok", reply["content"]
        return elapsed

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / 2 ** 20

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def kernel_env(url: str, home: str) -> dict:
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENARIO_")}
    env.update({"SCENARIO_API_URL": url, "SCENARIO_API_KEY": "sandbox-key", "SCENARIO_API_SECRET": "sandbox-secret",
                "SCENARIO_NB_HOME": home})
    return env


def bench_kernel(repeats: int, images: int) -> dict:
    proc, url = start_sandbox_process(job_seconds=1.0, max_parallel=1000)
    tmp = tempfile.mkdtemp()
    try:
        kernel = Kernel(kernel_env(url, tmp))
        kernel.run("%load_ext scenario_nb")
        kernel.run("%scenario use Gemini")
        kernel.run("%%scenario\nwarm-up")
        kernel.run(f"import requests, os\nauth = (os.environ['SCENARIO_API_KEY'], os.environ['SCENARIO_API_SECRET'])\n"
                   f"session = requests.Session()\nurl = '{url}/generate/custom/{MODEL}'")
        no_wait, submit = [], []
        for i in range(repeats):
            submit.append(kernel.run(f"r = session.post(url, json={{'prompt': 'bare {i}'}}, auth=auth)"))
            no_wait.append(kernel.run(f"%%scenario --no-wait\nno-wait cell {i}"))
        kernel.run("%scenario wait")
        before = kernel.rss_mb()
        lines = "\\n".join(f"memory test image set {i}" for i in range(images // 4))
        kernel.run(f"get_ipython().run_cell_magic('scenario', '--each -n 4', '{lines}')")
        kernel.run("import gc; gc.collect()")
        ours_growth = kernel.rss_mb() - before
        store = Path(tmp) / "assets"
        files = sorted(store.glob("*.png"))[:images]
        kernel.stop()

        naive = Kernel(kernel_env(url, tempfile.mkdtemp()))
        naive.run("from IPython.display import display, Image\nfrom pathlib import Path")
        before = naive.rss_mb()
        naive.run(f"for p in sorted(Path({str(store)!r}).glob('*.png'))[:{images}]:\n"
                  f"    display(Image(p.read_bytes()))")
        naive.run("import gc; gc.collect()")
        naive_growth = naive.rss_mb() - before
        naive.stop()
    finally:
        proc.terminate()
        proc.wait()
    return {"no_wait_ms": 1000 * statistics.median(no_wait), "submit_ms": 1000 * statistics.median(submit),
            "rss_growth_mb": ours_growth, "naive_rss_growth_mb": naive_growth, "images": len(files)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    images, repeats, kernel_images = (1, 2, 4) if args.quick else (5, 7, 200)
    result = {"bytes": bench_bytes(images), "load_ext": bench_load_ext(repeats),
              "kernel": bench_kernel(repeats, kernel_images)}
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.readme:
        _readme.update("notebook", table(result))
    return result


def table(r: dict) -> str:
    b, load, k = r["bytes"], r["load_ext"], r["kernel"]
    ok = lambda cond: "met" if cond else "missed"  # noqa: E731
    return "\n".join([
        "| measure | scenario_nb | baseline | target |",
        "|---|---|---|---|",
        f"| bytes added to a saved .ipynb per 1024×1024 image | {b['ours_bytes'] / 1024:.0f} KiB | "
        f"{b['naive_bytes'] / 1024:.0f} KiB (`display(Image(png))`) — {b['ratio']:.0f}× smaller | ≥ 20× smaller: "
        f"{ok(b['ratio'] >= 20)} |",
        f"| time `%load_ext scenario_nb` adds | {load['load_ext_ms']:.0f} ms | importing ipywidgets: "
        f"{load['import_ipywidgets_ms']:.0f} ms | ≤ 150 ms: {ok(load['load_ext_ms'] <= 150)} |",
        f"| kernel blocked by a `--no-wait` cell | {k['no_wait_ms']:.0f} ms | one bare generation POST: "
        f"{k['submit_ms']:.0f} ms | ≤ POST + 20 ms: {ok(k['no_wait_ms'] <= k['submit_ms'] + 20)} |",
        f"| kernel RSS growth after {k['images']} images | {k['rss_growth_mb']:.0f} MB | "
        f"`display(Image(png))` of the same images: {k['naive_rss_growth_mb']:.0f} MB | ≤ 100 MB: "
        f"{ok(k['rss_growth_mb'] <= 100)} |",
    ])


if __name__ == "__main__":
    main()
