"""A kernel killed mid-training: a new kernel finds the training in the history and follows it to the end.

The sandbox runs as its own process (`spawn_sandbox`), so it outlives the kernels, as the real cloud does.
"""

from __future__ import annotations

import requests
from PIL import Image, ImageDraw

from conftest import Kernel, kernel_env, spawn_sandbox, text_of
from scenario_nb._history import History

TRAIN_SECONDS = "15"


def make_set(folder, count=5):
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.new("RGB", (1024, 1024), (30 * i, 90, 160))
        ImageDraw.Draw(image).rectangle((100 + 40 * i, 200, 700, 800 - 30 * i), fill=(250, 200, 20 * i))
        image.save(folder / f"tile-{i}.png")
    return folder


def test_a_training_is_followed_to_the_end_in_a_new_kernel(tmp_path):
    folder = make_set(tmp_path / "tiles")
    with spawn_sandbox(train_seconds=TRAIN_SECONDS) as server:
        env = kernel_env(tmp_path / "home", server)
        first = Kernel(env)
        try:
            first.run("%load_ext scenario_nb")
            first.run(f'%scenario train "Kernel Knight" --images "{folder}" --captions none --no-wait -o k')
            state = text_of(first.run("print(k.model_id, k.status)"))
        finally:
            first.kill()  # mid-training: nobody follows it now
        model_id, status = state.split()[:2]
        assert model_id.startswith("model_") and status == "training"
        row = History(tmp_path / "home" / "history.sqlite").training(model_id)
        assert row is not None and row.status == "training" and row.job_id

        second = Kernel(env)
        try:
            second.run("%load_ext scenario_nb")
            listed = text_of(second.run("%scenario training"))
            assert "Kernel Knight" in listed and model_id in listed
            followed = text_of(second.run('%scenario training "Kernel Knight"'))
            assert "trained" in followed
            check = text_of(second.run("import scenario_nb\n"
                                       f"t = scenario_nb.client().training({model_id!r})\n"
                                       "print(t.ok, t.status, [i.name for i in t.images])"))
            assert "True trained" in check and "tile-0.png" in check
        finally:
            second.kill()
        row = History(tmp_path / "home" / "history.sqlite").training(model_id)
        assert row.status == "trained" and row.finished_at
        model = requests.get(f"{server['url']}/models/{model_id}", auth=(server["key"], server["secret"]),
                             timeout=10).json()["model"]
        assert model["status"] == "trained"
