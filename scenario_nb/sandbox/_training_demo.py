"""The catalog's demo training ("Dragon Sketches"): a real run of the sandbox's training clock, caught 40 % into
`running-train` when the sandbox starts, so it moves on and ends `trained` in sandbox time like any other.

It is the account's own training, already under way: it does not count against `max_parallel_trainings` (a
newcomer's first training is not refused because of a demo), and its ids are fixed, so a world reloaded from
disk keeps it, finished, instead of starting it again.
"""

from __future__ import annotations

import random

from . import _images
from ._training_clock import schedule
from ._training_rules import epoch_cap, job_type

DEMO_MODEL = "model_DragonSketchLoRA4bC5dE6fG7h"
DEMO_JOB = "job_DragonSketchTraining5tU6vW7x"
DEMO_IMAGES = tuple(f"asset_DragonSketchTrainingImage{n}" for n in range(3))
DEMO_IDS = frozenset((DEMO_MODEL, DEMO_JOB) + DEMO_IMAGES)
CAUGHT_AT = 0.4  # of running-train, as the catalog shows it


def start_demo(state) -> None:
    """Give the demo model its training record and run; call with the state's lock held (or before it is
    shared). A no-op when the catalog has no such model."""
    model = state.models.get(DEMO_MODEL)
    if model is None or model.get("status") != "training":
        return
    images = []
    for n, asset_id in enumerate(DEMO_IMAGES):
        data = _images.render(style=model.get("style", 3), model_name=model["name"], prompt=f"dragon sketch {n}",
                              seed=n, index=0, width=128, height=128)
        state.assets[asset_id] = {
            "id": asset_id, "job_id": None, "model_id": None, "source": "uploaded", "kind": "image", "width": 128,
            "height": 128, "created": state.clock(), "data": data, "size": len(data), "prompt": "",
            "name": f"dragon-{n}.png", "format": "png", "mime": "image/png", "training_of": DEMO_MODEL,
            "from_asset": None, "sha": "", "caption": "a dragon sketch", "description": "",
            "colours": _images.colour_shares(data)}
        images.append(asset_id)
    epochs = epoch_cap(model["type"])
    stages = schedule(random.Random(DEMO_MODEL), epochs, state.options.get("train_seconds"))
    before_running = sum(seconds for _, seconds in stages[:3])
    start = state.clock() - before_running - CAUGHT_AT * stages[3][1]
    state.trainings.records[DEMO_MODEL] = {"images": images, "pairs": [], "run": {
        "start": start, "stages": stages, "position": 1, "epochs": epochs, "failure": None, "canceled_at": None,
        "cost": 0, "job_id": DEMO_JOB, "parameters": {"nbEpochs": epochs}, "samples": None,
        "parent": "model_DragonSketchParent8hJ9kL2mN", "demo": True,
        "look": _images.look_of([state.assets[a]["colours"] for a in images], state.assets[images[0]]["data"])}}
    state.jobs[DEMO_JOB] = {"id": DEMO_JOB, "type": job_type(model["type"]), "created": start, "workflow": None,
                            "training": DEMO_MODEL}
    model["jobId"] = DEMO_JOB
