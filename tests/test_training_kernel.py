"""A kernel killed mid-training: a new kernel finds the training in the history and follows it to the end.

The sandbox runs as its own process (`spawn_sandbox`), so it outlives the kernels, as the real cloud does.
"""

from __future__ import annotations

import requests
from PIL import Image, ImageDraw

from conftest import Kernel, RemoteSandbox, kernel_env, spawn_sandbox, text_of
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


def test_ctrl_c_during_train_is_one_line_and_leaves_no_half_made_model(tmp_path):
    """Ctrl-C at any moment of `%scenario train`: never a traceback; before the start the model is removed
    (nothing charged for the training), after it the training goes on and the line says how to follow it.

    Each moment is a request whose answer the sandbox holds back: Ctrl-C comes while the kernel waits for it."""
    folder = make_set(tmp_path / "tiles", count=8)
    with spawn_sandbox(train_seconds=TRAIN_SECONDS) as server:
        remote = RemoteSandbox(server["url"], server["key"], server["secret"])

        def started() -> dict:  # past the price's dry run: the start's answer is held
            remote.wait_held("PUT", "/train")
            remote.release()
            return remote.wait_held("PUT", "/train")

        def waiting() -> None:  # the start answered: the first look at the training is held
            model = started()["path"].removesuffix("/train")
            remote.inject("hold", path=model, method="GET")
            remote.release()
            remote.wait_held("GET", model)

        moments = (  # (the request held, how to reach it, the line's words, what to do right after Ctrl-C)
            ({"path": "/train", "method": "PUT"}, lambda: remote.wait_held("PUT", "/train"),
             "Stopped before the training", None),
            # Ctrl-C lets the uploads already under way end before the model is removed: they are released
            ({"path": "/training-images", "method": "POST"}, lambda: remote.wait_held("POST", "/training-images"),
             "Stopped before the training", remote.release),
            ({"path": "/train", "method": "PUT", "count": 2}, started, "was being started", None),
            ({"path": "/train", "method": "PUT", "count": 2}, waiting, "Stopped waiting (the training goes on", None),
        )
        kernel = Kernel(kernel_env(tmp_path / "home", server))
        try:
            kernel.run("%load_ext scenario_nb")
            for n, (held, reached, words, then) in enumerate(moments):
                name = f"Careless {n}"
                remote.inject("hold", seconds=30, **held)
                text = text_of(kernel.run_interrupted(f'%scenario train "{name}" --images "{folder}"', at=reached,
                                                      then=then))
                remote.release()
                assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
                assert words in text, (words, text)
                models = [m for m in requests.get(f"{server['url']}/models", params={"privacy": "private"},
                                                  auth=(server["key"], server["secret"]), timeout=10).json()["models"]
                          if m["name"] == name]
                if "before the training" in words:
                    assert models == [], f"{name}: a half-made model was left on the server"
                else:  # it started: it trains on, once (cancelled here, to free the plan's one training slot)
                    assert len(models) == 1 and models[0]["status"] in ("training", "trained"), models
                    requests.post(f"{server['url']}/models/{models[0]['id']}/train/action", json={"action": "cancel"},
                                  auth=(server["key"], server["secret"]), timeout=10)
        finally:
            kernel.kill()


def test_ctrl_c_while_the_start_waits_leaves_the_training_followed_not_unstarted(tmp_path):
    """Ctrl-C while `PUT /train` waits for its answer (the server started the training), and the model reads `new`
    for a few seconds after: the row is never "not started"; the same kernel follows it to `trained`, the model
    is kept and the training was started once."""
    folder = make_set(tmp_path / "tiles")
    with spawn_sandbox(train_seconds="6", extra_args=("--new-after-start", "3")) as server:
        remote = RemoteSandbox(server["url"], server["key"], server["secret"])
        kernel = Kernel(kernel_env(tmp_path / "home", server))
        try:
            kernel.run("%load_ext scenario_nb")
            remote.inject("hold", seconds=30, path="/train", method="PUT", dry_run=False)
            text = text_of(kernel.run_interrupted(f'%scenario train "Held Start" --images "{folder}" --captions none',
                                                  at=lambda: remote.wait_held("PUT", "/train"), then=remote.release))
            assert "was being started" in text and "Traceback" not in text, text
            followed = text_of(kernel.run('%scenario training "Held Start"'))
            assert "trained" in followed and "never started" not in followed, followed
        finally:
            kernel.kill()
        rows = History(tmp_path / "home" / "history.sqlite").trainings()
        assert [(r.name, r.status) for r in rows] == [("Held Start", "trained")]
        assert remote.stats()["trainings_started"] == 1
        models = requests.get(f"{server['url']}/models", params={"privacy": "private"},
                              auth=(server["key"], server["secret"]), timeout=10).json()["models"]
        assert [m["status"] for m in models if m["name"] == "Held Start"] == ["trained"]


def test_a_second_kernel_training_the_same_name_follows_the_first(tmp_path):
    """Two kernels run the same `%scenario train` cell (auto captions): the second follows the first's training;
    the sandbox made one model, started one training and was asked for five captions."""
    folder = make_set(tmp_path / "tiles")
    with spawn_sandbox(train_seconds="8") as server:
        remote = RemoteSandbox(server["url"], server["key"], server["secret"])
        env = kernel_env(tmp_path / "home", server)
        kernels = [Kernel(env), Kernel(env)]
        try:
            for kernel in kernels:
                kernel.run("%load_ext scenario_nb")
            cell = f'%scenario train "Twice Told" --images "{folder}" --no-wait -o t\nprint(t.model_id)'
            ids = [text_of(k.run(cell)).split()[-1] for k in kernels]
            assert ids[0] == ids[1] and ids[0].startswith("model_"), ids
            followed = text_of(kernels[1].run('%scenario training "Twice Told"'))
            assert "trained" in followed, followed
        finally:
            for kernel in kernels:
                kernel.kill()
        assert remote.stats()["trainings_started"] == 1
        models = requests.get(f"{server['url']}/models", params={"privacy": "private"},
                              auth=(server["key"], server["secret"]), timeout=10).json()["models"]
        assert [m["status"] for m in models if m["name"] == "Twice Told"] == ["trained"]
        rows = History(tmp_path / "home" / "history.sqlite").captions(
            History(tmp_path / "home" / "history.sqlite").trainings()[0].backend_id)
        assert len(rows) == 5 and all(r.status == "done" for r in rows)
