"""The embedded sandbox's world on disk: what it made (models, trainings, jobs, assets) under
`$SCENARIO_NB_HOME/sandbox/`, so a kernel restart, or a second kernel on the same home, finds it again.

Only the one world server of a home writes here (`_world` makes sure of that). `state.json` is replaced
atomically (written aside, then renamed); bytes (uploads, a video, a 3D model) are kept once each under `blobs/`,
named by their SHA-256, so a save rewrites only the small JSON. Rendered images are not kept: they are drawn
again, identically, from what the asset records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from . import _catalog
from ._training_demo import DEMO_MODEL, is_demo

VERSION = 1
STATE_FILE = "state.json"
BLOBS = "blobs"


class _Codec:
    """JSON for the state's values: bytes become blob references, tuples, sets and dicts with other than
    string keys are tagged so they come back as they were."""

    def __init__(self, folder: Path) -> None:
        self.blobs = folder / BLOBS
        self.digests: dict[int, tuple[bytes, str]] = {}  # id(bytes) → (the bytes, kept alive; their digest)
        self.used: set = set()

    def encode(self, value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return {"$blob": self._blob(bytes(value))}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v) for v in value]}
        if isinstance(value, (set, frozenset)):
            return {"$set": [self.encode(v) for v in value]}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v) for k, v in value.items()}
            return {"$items": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        return value

    def _blob(self, data: bytes) -> str:
        known = self.digests.get(id(data))
        digest = known[1] if known is not None and known[0] is data else hashlib.sha256(data).hexdigest()
        self.digests[id(data)] = (data, digest)
        path = self.blobs / digest
        if not path.exists():
            self.blobs.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        self.used.add(digest)
        return digest

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$blob" in value:
            data = (self.blobs / value["$blob"]).read_bytes()
            self.digests[id(data)] = (data, value["$blob"])
            return data
        if "$tuple" in value:
            return tuple(self.decode(v) for v in value["$tuple"])
        if "$set" in value:
            return {self.decode(v) for v in value["$set"]}
        if "$items" in value:
            return {self.decode(k): self.decode(v) for k, v in value["$items"]}
        return {k: self.decode(v) for k, v in value.items()}


class WorldStore:
    """Saves a running sandbox's state into its home's folder, and loads it back into a new one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.codec = _Codec(folder)

    def save(self, state) -> None:
        with state.lock:  # encoded under the lock: a consistent picture; the blobs it writes are new ones only
            catalog = _catalog.model_by_id()
            self.codec.used = set()
            picture = self.codec.encode({
                "version": VERSION, "saved": time.time(),
                "models": {k: m for k, m in state.models.items() if catalog.get(k) != m},
                "removed_models": [k for k in catalog if k not in state.models],
                "jobs": {k: self._job(job, state.models) for k, job in state.jobs.items()},
                "assets": state.assets, "seeded_ids": state.seeded_ids,
                "signing_key": state.signing_key.hex(),
                "trainings": {"records": state.trainings.records, "deleted": state.trainings.deleted,
                              "started": state.trainings.started}})
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / (STATE_FILE + ".partial")
        partial.write_text(json.dumps(picture))
        os.replace(partial, self.folder / STATE_FILE)

    @staticmethod
    def _job(job: dict, models: dict) -> dict:
        """A job names its model when it holds the state's own model (most of a job's size; `_job_back`)."""
        model: Any = job.get("model")
        if isinstance(model, dict) and model.get("id") in models and models[model["id"]] is model:
            return dict(job, model={"model_id": model["id"]})
        return job

    @staticmethod
    def _job_back(job: dict, models: dict) -> dict:
        model = job.get("model")
        if isinstance(model, dict) and set(model) == {"model_id"} and model["model_id"] in models:
            job["model"] = models[model["model_id"]]
        return job

    def load(self, state) -> bool:
        """Put the saved world into a fresh `state`; False when there is none (or it cannot be read: it is
        moved aside, and the world starts afresh rather than not at all)."""
        path = self.folder / STATE_FILE
        if not path.exists():
            return False
        try:
            saved = self.codec.decode(json.loads(path.read_text()))
            if saved.get("version") != VERSION:
                raise ValueError(f"version {saved.get('version')}")
        except (OSError, ValueError, KeyError) as exc:
            aside = path.with_name(f"state-unreadable-{int(time.time())}.json")
            os.replace(path, aside)
            print(f"scenario_nb sandbox: {path} could not be read ({exc}); moved to {aside.name}", flush=True)
            return False
        with state.lock:
            for model_id in saved["removed_models"]:
                state.models.pop(model_id, None)
            state.models.update(saved["models"])
            state.jobs.update({k: self._job_back(job, state.models) for k, job in saved["jobs"].items()})
            state.assets.update(saved["assets"])
            state.seeded_ids.update(saved["seeded_ids"])
            state.signing_key = bytes.fromhex(saved["signing_key"])
            state.trainings.records.update(saved["trainings"]["records"])
            state.trainings.deleted.update(saved["trainings"]["deleted"])
            state.trainings.started = saved["trainings"]["started"]
        return True

    def forget_unused_blobs(self) -> None:
        """Blobs no saved value refers to any more (after a save)."""
        folder = self.folder / BLOBS
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name not in self.codec.used:
                    path.unlink(missing_ok=True)


def contents(state) -> dict:
    """What the user made in a world, counted: models, trainings, jobs, assets (the demo's left out)."""
    with state.lock:
        records = state.trainings.records
        return {"models": sum(1 for k in records if k != DEMO_MODEL) + len(state.trainings.deleted),
                "trainings": sum(1 for k, r in records.items() if r["run"] is not None and k != DEMO_MODEL),
                "jobs": sum(1 for j in state.jobs.values() if not is_demo("jobs", j)),
                "assets": sum(1 for a in state.assets.values() if not is_demo("assets", a))}


def summary(counts: Optional[dict]) -> str:
    """'2 models, 1 training and 5 jobs', or 'nothing'."""
    parts = [f"{n} {kind[:-1] if n == 1 else kind}" for kind, n in (counts or {}).items() if n]
    if not parts:
        return "nothing"
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def describe(counts: Optional[dict]) -> str:
    """What a reset says it did."""
    found = summary(counts)
    return "nothing to remove (the sandbox world was empty)" if found == "nothing" else f"removed {found}"


def erase(folder: Path) -> None:
    """The saved world's files (the lock and the running server's address stay)."""
    (folder / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder / BLOBS, ignore_errors=True)
