"""The workbench's guarantees in real kernels (two kernels on one home and one sandbox, or one kernel through
several cases), each checked by effect: the sandbox's request log and counters, the history's rows.

The sandbox runs in the test's process on a driven clock (kernels reach it over HTTP), so a training stage or a
quiet while is stepped over, not slept through.
"""

from __future__ import annotations

import time

from PIL import Image, ImageDraw

from scenario_nb import sandbox as sandbox_mod
from scenario_nb._history import History

from conftest import SUITE_KEY, SUITE_SECRET, Clock, Kernel, kernel_env, text_of


def make_set(folder, count=5, hue=0):
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.new("RGB", (1024, 1024), ((30 * i + hue) % 255, 90, 160))
        ImageDraw.Draw(image).rectangle((100 + 40 * i, 200, 700, 800 - 30 * i), fill=(250, 200, 20 * i))
        image.save(folder / f"tile-{i}.png")
    return folder


def start_sandbox(clock, **options):
    options = {"job_seconds": 0.3, "seed": 5, "api_key": SUITE_KEY, "api_secret": SUITE_SECRET,
               "train_seconds": 8.0, "clock": clock, **options}
    return sandbox_mod.start(**options)


def server_of(sb) -> dict:
    return {"url": sb.url, "key": SUITE_KEY, "secret": SUITE_SECRET}


def received(sb, method: str, fragment: str, *, dry_run=None) -> list:
    return [r for r in sb.requests if r["method"] == method and fragment in r["path"] and
            (dry_run is None or (r["query"].get("dryRun") == "true") == dry_run)]


def models_made(sb) -> int:
    return len([r for r in sb.requests if r["method"] == "POST" and r["path"] == "/v1/models"])


def start_cell(kernel: Kernel, code: str) -> str:
    return kernel.kc.execute(code)


def outputs_of(kernel: Kernel, msg_id: str, *, until=None, timeout: float = 60) -> tuple[list, bool]:
    """The outputs of a cell started with `start_cell`, read until it is idle (True) or `until(text)` holds
    (False: it still runs)."""
    outputs: list = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=max(0.05, min(1.0, deadline - time.time())))
        except Exception:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] in ("stream", "display_data", "execute_result", "error", "update_display_data"):
            outputs.append(msg["content"])
            if until is not None and until(text_of(outputs)):
                return outputs, False
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return outputs, True
    raise AssertionError(f"the cell neither ended nor showed what was waited for: {text_of(outputs)!r}")


# -- Issue 24 item 2: two kernels, one name, the first still captioning --------------------------------------------

def test_a_second_kernel_waits_while_the_first_captions_then_follows_its_training(tmp_path):
    """Kernel A trains "Claimed" and is held in its captions (a caption's answer kept back by the sandbox); kernel
    B runs the same cell meanwhile. B says in one line that A prepares it and waits; once A's captions are
    answered, A uploads and starts, and B follows A's training. One model made, five captions, five uploads, one
    start; one training row of the name, no claim left."""
    folder = make_set(tmp_path / "tiles")
    clock = Clock()
    with start_sandbox(clock, max_parallel_trainings=2) as sb:
        env = kernel_env(tmp_path / "home", server_of(sb))
        first, second = Kernel(env), Kernel(env)
        try:
            for kernel in (first, second):
                kernel.run("%load_ext scenario_nb")
            cell = '%scenario train "Claimed" --images "{}" --no-wait -o t\nprint("model:", t.model_id)'
            sb.inject("hold", seconds=60, method="POST", path="/generate/caption", dry_run=False)
            a = start_cell(first, cell.format(folder))
            sb.wait_held("POST", "/generate/caption")
            b = start_cell(second, cell.format(folder))
            said, ended = outputs_of(second, b, until=lambda text: "being prepared by another process" in text,
                                     timeout=20)
            assert not ended, f"the second kernel did not wait: {text_of(said)}"
            assert models_made(sb) == 1 and len(received(sb, "POST", "/training-images")) == 0
            sb.release()
            out_a, _ = outputs_of(first, a)
            out_b, _ = outputs_of(second, b)
            text_a, text_b = text_of(out_a), text_of(said + out_b)
            assert "Traceback" not in text_a + text_b and "Error" not in text_a + text_b, (text_a, text_b)
            ids = [t.split("model:")[-1].split()[0] for t in (text_a, text_b)]
            assert ids[0] == ids[1] and ids[0].startswith("model_"), ids
        finally:
            for kernel in (first, second):
                kernel.kill()
        assert models_made(sb) == 1 and sb.stats()["trainings_started"] == 1
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 5
        assert len(received(sb, "POST", "/training-images")) == 5
        history = History(tmp_path / "home" / "history.sqlite")
        rows = history.trainings()
        assert [(r.name, r.model_id) for r in rows] == [("Claimed", ids[0])], rows
        assert rows[0].status in ("training", "trained")


def test_a_claim_left_by_a_dead_kernel_is_taken_over(tmp_path):
    """Kernel A is killed while its captions are held: its claim (a `preparing` row) names a process that is gone.
    Kernel B's train of the name does not wait for it: it takes the claim over, reuses A's model (a draft) and
    A's answered captions, and starts the training once. `%scenario training` in B shows no claim left."""
    folder = make_set(tmp_path / "tiles")
    clock = Clock()
    with start_sandbox(clock) as sb:
        env = kernel_env(tmp_path / "home", server_of(sb))
        first = Kernel(env)
        try:
            first.run("%load_ext scenario_nb")
            sb.inject("hold", seconds=60, method="POST", path="/generate/caption", dry_run=False)
            start_cell(first, f'%scenario train "Orphan" --images "{folder}" --no-wait')
            sb.wait_held("POST", "/generate/caption")
            time.sleep(0.5)  # the other captions' answers are recorded
        finally:
            first.kill()
        sb.release()
        rows = History(tmp_path / "home" / "history.sqlite").trainings()
        assert [(r.name, r.status) for r in rows] == [("Orphan", "preparing")], rows
        second = Kernel(env)
        try:
            second.run("%load_ext scenario_nb")
            started = time.time()
            text = text_of(second.run(f'%scenario train "Orphan" --images "{folder}" --no-wait -o t\n'
                                      'print("model:", t.model_id, t.status)'))
            assert time.time() - started < 15 and "Traceback" not in text, text
            assert "being prepared by another process" not in text, text
        finally:
            second.kill()
        made = [(m["name"], m["status"]) for m in sb.state.models.values() if m.get("name") == "Orphan"]
        log = [(r["method"], r["path"], r.get("status")) for r in sb.requests if "/models" in r["path"] and r["method"] != "GET"]
        print("LOG", log, sb.state.models.keys() - set(), "TEXT", text)
        assert models_made(sb) == 1 and made == [("Orphan", "training")], (made, text, log)
        assert sb.stats()["trainings_started"] == 1
        assert len(received(sb, "POST", "/generate/caption", dry_run=False)) == 5  # the held one is not asked again
        rows = History(tmp_path / "home" / "history.sqlite").trainings()
        assert [(r.name, r.status) for r in rows] == [("Orphan", "training")], rows
