"""Everything the sandbox knows, behind one lock: models, jobs (their states derived from the clock), assets,
trainings, faults and held answers, and the request logs tests read."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import random
import secrets
import threading
import time
from typing import Callable, Optional

from . import _catalog, _media, _training
from ._common import iso, new_id
from ._inputs import image_inputs, output_size
from ._render import Renderer
from ._training_demo import start_demo

TERMINAL = ("success", "failure", "canceled")
# Fractions of a job's duration at which it reaches each state.
PHASES = (("queued", 0.0), ("warming-up", 0.1), ("in-progress", 0.25), ("finalizing", 0.9), ("success", 1.0))


class State:
    """Everything the sandbox knows, behind one lock."""

    def __init__(self, options: dict) -> None:
        self.options = options
        self.lock = threading.RLock()
        # Every date the sandbox hands out or compares reads this clock: a test can drive it (skip a list lag,
        # a training stage) instead of sleeping through it. Real sleeps (a `slow` fault) stay real.
        self.clock: Callable[[], float] = options.get("clock") or time.time
        self.rng = random.Random(options["seed"])
        self.id_salt = "".join(secrets.choice(_catalog.BASE58) for _ in range(6))  # see new_id
        self.seeded_ids: dict[str, str] = {}
        self.fault_rng = random.Random(options["seed"] + 1)
        # A copy per sandbox: renaming a model (PUT /models/{id}) must not leak into the next sandbox.
        self.models = {k: dict(v) for k, v in _catalog.model_by_id().items()}
        self.workflows = {w["id"]: w for w in _catalog.WORKFLOWS}
        self.jobs: dict[str, dict] = {}
        self.assets: dict[str, dict] = {}
        self.rates: dict = dict(options.get("faults") or {})
        self.injected: list[dict] = []
        self.held: list[dict] = []  # requests whose answer a `hold` fault keeps back, each marked once released
        self.held_changed = threading.Condition(self.lock)
        self.requests: list[dict] = []
        self.cdn_requests: list[dict] = []
        self.rate_limited: list[dict] = []
        self.fault_counts: dict[str, int] = {}
        self.generate_posts = 0
        self.jobs_created = 0
        self.signing_key = secrets.token_bytes(32)
        self.pending_failures: list[tuple[str, str]] = []
        self.expire_next = 0
        self.renderer = Renderer(self.lock)
        self.trainings = _training.Trainings(self)
        if options.get("demo_training"):  # a home's world: the catalog's training under way moves on with the clock
            start_demo(self)

    # -- faults --
    def take_fault(self, method: str, path: str, kinds: tuple, query: Optional[dict] = None) -> Optional[dict]:
        """The fault for this request, if any: an injected one it matches (path, method, and `dry_run` when
        the fault names it), else one drawn at the seeded rates. Injected ones say so (`injected`)."""
        dry = (query or {}).get("dryRun") == "true"
        with self.lock:
            for fault in self.injected:
                if fault["kind"] in kinds and (fault.get("path") is None or fault["path"] in path) \
                        and (fault.get("method") is None or fault["method"] == method) \
                        and (fault.get("dry_run") is None or bool(fault["dry_run"]) == dry):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.injected.remove(fault)
                    return self._count(dict(fault, injected=True))
            for kind in kinds:
                rate = self.rates.get(kind, 0)
                if rate and self.fault_rng.random() < rate:
                    fault = {"kind": kind, "after_create": self.fault_rng.random() < 0.5,
                             "seconds": self.rates.get("slow_seconds", 2.0),
                             "retry_after": self.rates.get("retry_after")}
                    return self._count(fault)
        return None

    def new_id(self, prefix: str) -> str:
        """An id like the cloud's, never handed out again (by this sandbox, or by any other of the same seed,
        restarted): its first characters are this sandbox's salt, the rest is what the seed drew."""
        seeded = new_id(prefix, self.rng)
        made = seeded[:len(prefix) + 1] + self.id_salt + seeded[len(prefix) + 1 + len(self.id_salt):]
        if prefix == "model":  # a model's look derives from its id (few are made: jobs and assets aren't kept)
            self.seeded_ids[made] = seeded
        return made

    def seeded_id(self, made_id: str) -> str:
        """The id the seed drew for one this sandbox made: what a look derived from an id is derived from, so a
        seed still gives the same pictures."""
        return self.seeded_ids.get(made_id, made_id)

    def _count(self, fault: dict) -> dict:
        self.fault_counts[fault["kind"]] = self.fault_counts.get(fault["kind"], 0) + 1
        return fault

    def hold(self, method: str, path: str, query: dict, seconds: float) -> None:
        """Keep a request's answer back until `release()` (or `seconds`): a test can act at "sent, not read"."""
        entry = {"method": method, "path": path, "query": query, "released": False}
        with self.held_changed:
            self.held.append(entry)
            self.held_changed.notify_all()
            self.held_changed.wait_for(lambda: entry["released"], timeout=seconds)
            entry["released"] = True

    def holding(self) -> list[dict]:
        """The requests whose answer is held now, oldest first."""
        with self.lock:
            return [{k: v for k, v in e.items() if k != "released"} for e in self.held if not e["released"]]

    def release(self) -> None:
        """Send every held answer."""
        with self.held_changed:
            for entry in self.held:
                entry["released"] = True
            self.held_changed.notify_all()

    # -- jobs --
    def create_job(self, model: dict, body: dict, *, workflow: Optional[dict] = None,
                   base: Optional[bytes] = None) -> dict:
        """A new job; `base` is its img2img input's bytes (read before taking the lock: it may need a render)."""
        with self.lock:
            now = self.clock()
            opts = self.options
            duration = max(0.05, opts["job_seconds"] + self.rng.uniform(-opts["job_jitter"], opts["job_jitter"]))
            failure = self.pending_failures.pop(0) if self.pending_failures else None
            rate = self.rates.get("job_failure")
            if failure is None and rate and self.fault_rng.random() < rate:
                failure = ("The provider rejected the request: content policy violation",
                           "Rephrase the prompt to remove disallowed content and try again.")
                self._count({"kind": "job_failure"})
            job = {"id": self.new_id("job"), "type": "workflow" if workflow else "custom", "model": model,
                   "body": copy.deepcopy(body), "created": now,
                   "duration": duration, "failure": failure, "canceled_at": None, "assets": None,
                   "workflow": workflow, "seed": body.get("seed", self.rng.randrange(2 ** 31)), "base": base}
            self.jobs[job["id"]] = job
            self.jobs_created += 1
        if job["failure"] is None:
            self.renderer.render_ahead(self.render_params(job))
        return job

    def active_jobs(self, now: float) -> list:
        return [j for j in self.jobs.values()
                if j["type"] in ("custom", "workflow") and self.status_of(j, now)[0] not in TERMINAL]

    def status_of(self, job: dict, now: float) -> tuple[str, float, list]:
        """(status, progress, statusHistory) at time `now`."""
        if "view" in job:  # a text tool's job: done when answered
            return job["view"]["status"], 1.0, job["view"]["statusHistory"]
        if "training" in job:
            with self.lock:
                return self.trainings.job_status(job)
        elapsed = (now - job["created"]) / job["duration"]
        history, status, progress = [], "queued", 0.0
        end = 0.5 if job["failure"] else 1.0
        for name, at in PHASES:
            if at > min(elapsed, end) or (job["failure"] and name in ("finalizing", "success")):
                break
            t = job["created"] + at * job["duration"]
            if job["canceled_at"] is not None and t > job["canceled_at"]:
                break
            history.append({"status": name, "date": iso(t)})
            status = name
        if status == "in-progress":
            progress = min(0.99, (min(elapsed, end) - 0.25) / 0.65)
        elif status in ("finalizing", "success"):
            progress = 1.0 if status == "success" else 0.99
        if job["failure"] and elapsed >= end and (job["canceled_at"] is None or
                                                  job["canceled_at"] > job["created"] + end * job["duration"]):
            status = "failure"
            history.append({"status": "failure", "date": iso(job["created"] + end * job["duration"])})
            progress = 0.4
        elif job["canceled_at"] is not None and status not in TERMINAL:
            status = "canceled"
            history.append({"status": "canceled", "date": iso(job["canceled_at"])})
        return status, progress, history

    def render_params(self, job: dict) -> list[dict]:
        """What `_images.render` needs for each of the job's image outputs (deterministic, known at creation)."""
        body, model = job["body"], job["model"]
        if model.get("output", "image") != "image":
            return []
        lora = body.get("modelId") or next(iter(body.get("loras") or []), "")
        render_model = self.models.get(lora) or model
        width, height = output_size(body, model)
        base = job.get("base")
        with self.lock:
            look = self.trainings.look(lora) if lora else None  # a LoRA trained here: its training set's look
        if look is not None:  # as strong as its scale: lorasScale for `loras`, full for the `modelId` slot
            scales = body.get("lorasScale") or []
            scale = scales[0] if not body.get("modelId") and scales else 1.0
            look = look + (round(max(0.0, min(1.0, float(scale))), 3),)
        return [{"style": render_model.get("style", 0), "model_name": render_model.get("name", model["id"]),
                 "prompt": str(body.get("prompt", "")), "seed": int(job["seed"]) + index, "index": index,
                 "width": width, "height": height, "base": base, "look": look}
                for index in range(int(body.get("numOutputs", 1) or 1))]

    def input_image(self, body: dict) -> Optional[bytes]:
        """The bytes of the body's img2img source (an image asset or a data URL), if it has one."""
        for ref in image_inputs(body):
            if ref.startswith("data:"):
                try:
                    return base64.b64decode(ref.split(",", 1)[-1])
                except (ValueError, binascii.Error):
                    return None
            asset = self.assets.get(ref)
            if asset is not None and asset.get("kind", "image") == "image":
                return self.image_bytes(asset)
        return None

    def ensure_assets(self, job: dict) -> list:
        """The job's output assets, made once at success: images, a video, a 3D model, or none (text)."""
        with self.lock:
            if job["assets"] is None:
                body, model = job["body"], job["model"]
                output = model.get("output", "image")
                common = {"job_id": job["id"], "model_id": model["id"],
                          "prompt": str(body.get("prompt", body.get("instruction", ""))),
                          "created": job["created"] + job["duration"], "aspect": body.get("aspectRatio"),
                          "kind": output, "data": None}
                if output == "image":
                    source = "img2img" if image_inputs(body) else "txt2img"
                    outputs = [{**params, "source": source} for params in self.render_params(job)]
                elif output == "video":
                    outputs = [{"source": "img2video" if image_inputs(body) else "txt2video", "index": 0,
                                "seed": int(job["seed"]), **_media.VIDEO_PROPERTIES, "data": _media.sample_mp4()}]
                elif output == "3d":
                    outputs = [{"source": "txt23d", "index": 0, "seed": int(job["seed"]),
                                "data": _media.glb_cube(int(job["seed"]))}]
                elif output == "text":  # Scenario's LLM: one text asset per answer (contract §10b)
                    outputs = [{"source": "txt2txt", "index": n, "seed": int(job["seed"]) + n,
                                "data": _media.llm_answer(body, n).encode()}
                               for n in range(int(body.get("numOutputs", 1) or 1))]
                else:
                    outputs = []
                ids = []
                for extra in outputs:
                    asset_id = self.new_id("asset")
                    self.assets[asset_id] = {"id": asset_id, **common, **extra}
                    if self.assets[asset_id]["data"] is not None:
                        self.assets[asset_id]["size"] = len(self.assets[asset_id]["data"])
                    ids.append(asset_id)
                job["assets"] = ids
            return job["assets"]

    # -- images --
    def image_bytes(self, asset: dict) -> bytes:
        return self.renderer.image_bytes(asset)

    def close(self) -> None:
        self.renderer.close()

    def signed_url(self, asset_id: str, cdn: str) -> str:
        expires = int(self.clock() + self.options["url_ttl"])
        with self.lock:
            if self.rates.get("expired_url") and self.fault_rng.random() < self.rates["expired_url"]:
                expires = int(self.clock()) - 10
                self._count({"kind": "expired_url"})
        signature = hmac.new(self.signing_key, f"{asset_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        extension = _media.EXTENSION.get(self.assets.get(asset_id, {}).get("kind", "image"), "png")
        return f"{cdn}/assets/{asset_id}.{extension}?Expires={expires}&Key-Pair-Id=KSANDBOX&Signature={signature}"

    def check_signature(self, asset_id: str, query: dict) -> bool:
        try:
            expires = int(query.get("Expires", "0"))
        except ValueError:
            return False
        expected = hmac.new(self.signing_key, f"{asset_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, query.get("Signature", "")) and expires >= self.clock()
