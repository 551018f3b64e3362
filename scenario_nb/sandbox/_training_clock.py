"""A training's stages derived from the clock when read (§12d.4): no thread per training."""

from __future__ import annotations

from typing import Optional

from ._common import iso

# With `train_seconds` the stages take these shares of it; otherwise the contract's real durations (§12d.4).
STAGE_SHARES = (("pending", 0.1), ("queued-for-train", 0.2), ("starting-train", 0.15), ("running-train", 0.55))


def schedule(rng, epochs: int, train_seconds: Optional[float]) -> list:
    """[(stage, seconds)]: the real durations (pending 2 s, queue 10–60 s, start 30–90 s, ~1 min per epoch), or
    `train_seconds` split in fixed shares."""
    if train_seconds is not None:
        return [(stage, train_seconds * share) for stage, share in STAGE_SHARES]
    return [("pending", 2.0), ("queued-for-train", rng.uniform(10, 60)), ("starting-train", rng.uniform(30, 90)),
            ("running-train", 60.0 * epochs)]


def snapshot(run: dict, now: float) -> dict:
    """Everything about a training at `now`: the model's status and trainingProgress, its job's status."""
    start = run["start"]
    bounds, at = [], start
    for stage, seconds in run["stages"]:
        bounds.append((stage, at, at + seconds))
        at += seconds
    end = at
    started, running = bounds[2][1], bounds[3][1]
    fail_at = running + (end - running) * 0.5 if run["failure"] else None
    if run["canceled_at"] is not None:
        outcome, stop = ("training-canceled", "canceled"), run["canceled_at"]
    elif fail_at is not None and now >= fail_at:
        outcome, stop = ("failed", "failure"), fail_at
    elif now >= end:
        outcome, stop = ("trained", "success"), end
    else:
        outcome, stop = None, now
    history = [{"status": "queued", "date": iso(start)}]
    if stop >= started:
        history.append({"status": "in-progress", "date": iso(started)})
    if outcome:
        history.append({"status": outcome[1], "date": iso(stop)})
        progress = 1.0 if outcome[1] == "success" else max(0.0, min(1.0, (stop - running) / (end - running)))
        return {"model_status": outcome[0], "progress": {}, "job_status": outcome[1], "history": history,
                "job_progress": round(progress, 3), "changed": stop, "started": started, "end": end}
    stage, since, until = next(b for b in bounds if b[1] <= now < b[2])
    progress = {"stage": stage, "updatedAt": int(now * 1000), "position": 0, "progress": 0}
    if stage in ("pending", "queued-for-train"):
        queue_end = bounds[1][2]
        progress["position"] = min(run["position"], int(run["position"] * (queue_end - now) / run["stages"][1][1]))
    if stage in ("starting-train", "running-train"):
        progress["startedAt"] = int(started * 1000)
    if stage == "running-train":
        progress["progress"] = round((now - running) / (end - running), 3)
        progress["remainingTimeMs"] = int((end - now) * 1000)
    return {"model_status": "training", "progress": progress, "changed": since, "started": started, "end": end,
            "job_status": "in-progress" if now >= started else "queued", "history": history,
            "job_progress": progress["progress"]}
