"""The catalog's demo training ("Dragon Sketches"): a real run of the sandbox's training clock, caught 40 % into
`running-train` when the sandbox starts, so it moves on and ends `trained` in sandbox time like any other.

It is the account's own training, already under way: it does not count against `max_parallel_trainings` (a
newcomer's first training is not refused because of a demo), and a world reloaded from disk keeps it, finished,
instead of starting it again.
"""

from __future__ import annotations

import random

from . import _images
from ._training_clock import schedule
from ._training_rules import epoch_cap

DEMO_MODEL = "model_DragonSketchLoRA4bC5dE6fG7h"
DEMO_JOB = "job_DragonSketchTraining5tU6vW7x"
CAUGHT_AT = 0.4  # of running-train, as the catalog shows it


def start_demo(state) -> None:
    """Give the demo model its training record and run; call before the state is shared. A no-op when the
    catalog has no such model. It adds no job and no asset a fresh sandbox would list (its sample image is made
    when it ends, as any training's): its look comes from three small renders kept in the run."""
    model = state.models.get(DEMO_MODEL)
    if model is None or model.get("status") != "training":
        return
    renders = [_images.render(style=model.get("style", 3), model_name=model["name"], prompt=f"dragon sketch {n}",
                              seed=n, index=0, width=128, height=128) for n in range(3)]
    epochs = epoch_cap(model["type"])
    stages = schedule(random.Random(DEMO_MODEL), epochs, state.options.get("train_seconds"))
    before_running = sum(seconds for _, seconds in stages[:3])
    start = state.clock() - before_running - CAUGHT_AT * stages[3][1]
    state.trainings.records[DEMO_MODEL] = {"images": [], "pairs": [], "run": {
        "start": start, "stages": stages, "position": 1, "epochs": epochs, "failure": None, "canceled_at": None,
        "cost": 0, "job_id": DEMO_JOB, "parameters": {"nbEpochs": epochs, "samplePrompts": ["a dragon sketch"]},
        "samples": None, "parent": "model_DragonSketchParent8hJ9kL2mN", "demo": True,
        "look": _images.look_of([_images.colour_shares(data) for data in renders], renders[0])}}


def is_demo(kind: str, item: dict) -> bool:
    """A job, asset or model of the demo (not counted as the user's)."""
    if kind == "models":
        return item.get("id") == DEMO_MODEL
    return item.get("model_id") == DEMO_MODEL or item.get("training") == DEMO_MODEL
