"""The sandbox server: the Scenario REST API on loopback, plus a second origin serving signed asset URLs.

Job states are derived lazily from the clock (no thread per job), faults are seeded, and every request
is logged so tests can check what a client really sent.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import io
import json
import queue
import random
import secrets
import sys
import threading
import time
import warnings
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from . import _catalog, _images, _media, _training
from ._common import ApiError, iso, new_id

BASE58 = _catalog.BASE58
TERMINAL = ("success", "failure", "canceled")
RENDER_AHEAD = 64  # images rendered before their job succeeds, at most
RENDER_THREADS = 2  # images rendered at once while jobs run (a 1 MP PNG takes ~90 ms)
# render's arguments; `look` is a trained LoRA's (palette, motif)
RENDER_FIELDS = ("style", "model_name", "prompt", "seed", "index", "width", "height", "base", "look")
# Fractions of a job's duration at which it reaches each state.
PHASES = (("queued", 0.0), ("warming-up", 0.1), ("in-progress", 0.25), ("finalizing", 0.9), ("success", 1.0))
SIZES = {"21:9": (1568, 672), "16:9": (1344, 768), "3:2": (1248, 832), "4:3": (1152, 864), "5:4": (1136, 912),
         "1:1": (1024, 1024), "4:5": (912, 1136), "3:4": (864, 1152), "2:3": (832, 1248), "9:16": (768, 1344)}
MAX_UPLOAD = 6 * 1024 * 1024


def parse_iso(text: str) -> Optional[float]:
    import datetime
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


class Drop(Exception):
    """Close the connection without answering."""


def encode_token(offset: int, limit: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset, "limit": limit}).encode()).decode()


def decode_token(token: str) -> int:
    try:
        return int(json.loads(base64.b64decode(token, validate=True))["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "Invalid pagination token") from None


def paginate(items: list, query: dict, key: str, default: int, maximum: int) -> dict:
    try:
        size = int(query.get("pageSize", default))
    except ValueError:
        raise ApiError(400, "pageSize must be a number") from None
    if not 1 <= size <= maximum:
        raise ApiError(400, f"pageSize must be between 1 and {maximum}")
    offset = decode_token(query["paginationToken"]) if query.get("paginationToken") else 0
    page = items[offset:offset + size]
    out: dict = {key: page}
    if offset + size < len(items):
        out["nextPaginationToken"] = encode_token(offset + size, size)
    return out


# -- Input validation (as the real API answers it) ------------------------------------------------------

def validate_body(inputs: list, body: dict, state: "State") -> None:
    specs = {i["name"]: i for i in inputs}
    for name in body:
        if name not in specs:
            raise ApiError(400, f"Input {name} is not supported")
    for spec in inputs:
        name, kind = spec["name"], spec["type"]
        value = body.get(name)
        defined = lambda other: body.get(other) not in (None, "", [])  # noqa: E731
        if value in (None, "", []):
            required = spec.get("required") or {}
            if required.get("always"):
                raise ApiError(400, f"Input {name} is required")
            for other, rule in (required.get("ifDefined") or {}).items():
                if defined(other):
                    message = rule.get("message") if isinstance(rule, dict) else rule
                    raise ApiError(400, message or f"Input {name} is required when {other} is defined")
            continue
        items = value if kind.endswith("_array") else [value]
        if kind.endswith("_array"):
            if not isinstance(value, list):
                raise ApiError(400, f"Input {name} must be an array")
            if spec.get("maxLength") is not None and len(value) > spec["maxLength"]:
                raise ApiError(400, f"Input {name} must be at most {spec['maxLength']} items long")
        base = kind.replace("_array", "")
        for item in items:
            if base == "number":
                if not isinstance(item, (int, float)) or isinstance(item, bool):
                    raise ApiError(400, f"Input {name} must be a number")
                if spec.get("min") is not None and item < spec["min"]:
                    raise ApiError(400, f"Input {name} must be at least {spec['min']}")
                if spec.get("max") is not None and item > spec["max"]:
                    raise ApiError(400, f"Input {name} must be at most {spec['max']}")
            elif base == "boolean":
                if not isinstance(item, bool):
                    raise ApiError(400, f"Input {name} must be a boolean")
            elif not isinstance(item, str):
                raise ApiError(400, f"Input {name} must be a string")
            if base == "string" and spec.get("maxLength") is not None and len(item) > spec["maxLength"] \
                    and kind == "string":
                raise ApiError(400, f"Input {name} must be at most {spec['maxLength']} characters long")
            if spec.get("allowedValues") and item not in spec["allowedValues"]:
                raise ApiError(400, f"Input {name} must be one of {', '.join(map(str, spec['allowedValues']))}")
            if base == "file" and not item.startswith("data:") and item not in state.assets:
                raise ApiError(400, f"Input {name} references unknown asset {item}")
            if base == "model" and item:
                lora = state.models.get(item)
                if lora is None:
                    raise ApiError(404, f"Model {item} not found")
                if lora.get("type") not in spec.get("modelTypes", []):
                    raise ApiError(400, f"Invalid model(s): {item}.\nAllowed model types: "
                                        f"{', '.join(spec.get('modelTypes', []))}")
                with state.lock:
                    status = state.trainings.refresh(lora, "")["status"]
                if status != "trained":  # a LoRA in training (or failed, canceled) has nothing to run yet
                    raise ApiError(400, f"Model {item} is not trained (status {status})")


def output_size(body: dict, model: dict) -> tuple[int, int]:
    """The body's width/height, else the model's defaults for them (FLUX.1 dev: 1104x832), else the ratio's."""
    defaults = {i["name"]: i.get("default") for i in model.get("inputs", [])}
    width, height = body.get("width") or defaults.get("width"), body.get("height") or defaults.get("height")
    if width and height:
        return int(width), int(height)
    ratio = body.get("aspectRatio") or defaults.get("aspectRatio")
    return SIZES.get(str(ratio), (1024, 1024))


def image_inputs(body: dict) -> list:
    """Asset ids (or data URLs) the body passes as images, first the img2img source."""
    found = [body.get("image")] + list(body.get("referenceImages") or [])
    return [x for x in found if isinstance(x, str) and x]


# -- State -------------------------------------------------------------------------------------------------

class State:
    """Everything the sandbox knows, behind one lock."""

    def __init__(self, options: dict) -> None:
        self.options = options
        self.lock = threading.RLock()
        # Every date the sandbox hands out or compares reads this clock: a test can drive it (skip a list lag,
        # a training stage) instead of sleeping through it. Real sleeps (a `slow` fault) stay real.
        self.clock: Callable[[], float] = options.get("clock") or time.time
        self.rng = random.Random(options["seed"])
        self.id_salt = "".join(secrets.choice(BASE58) for _ in range(6))  # see new_id
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
        self.images: "OrderedDict[str, bytes]" = OrderedDict()
        self.rendered_ahead: dict[tuple, tuple[bytes, float]] = {}
        self.rendering: dict[tuple, threading.Event] = {}  # renders under way (ahead or asked for): never twice
        self.served: set = set()  # render keys already rendered for a request: the render-ahead skips them
        self.render_queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self.trainings = _training.Trainings(self)
        for n in range(RENDER_THREADS):  # Pillow's PNG encoder lets go of the GIL: two encode side by side
            threading.Thread(target=self._render_worker, name=f"scenario-sandbox-render-{n}", daemon=True).start()

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
        self._render_ahead(job)
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
    # A real job makes its images while it runs, so they exist the moment it succeeds. The sandbox does the
    # same: one background thread renders each job's images ahead, so a burst of successes is not a burst of
    # rendering on the request threads. At most RENDER_AHEAD images wait there (~85 MB at 1024²).
    def _render_ahead(self, job: dict) -> None:
        if job["failure"] is None:
            for params in self.render_params(job):
                self.render_queue.put(params)

    def _render_worker(self) -> None:
        while (params := self.render_queue.get()) is not None:
            key = _render_key(params)
            with self.lock:
                stale = [k for k, (_, at) in self.rendered_ahead.items() if at < time.time() - 120]
                for k in stale:  # rendered for a job nobody downloaded
                    del self.rendered_ahead[k]
                if len(self.rendered_ahead) >= RENDER_AHEAD or key in self.rendered_ahead or \
                        key in self.rendering or key in self.served:
                    continue  # a request already rendered it (the render-ahead fell behind): not twice
                done = self.rendering[key] = threading.Event()
            try:
                data = _images.render(**params)
                with self.lock:
                    self.rendered_ahead[key] = (data, time.time())
            finally:
                with self.lock:
                    self.rendering.pop(key, None)
                done.set()

    def close(self) -> None:
        for _ in range(RENDER_THREADS):
            self.render_queue.put(None)

    def image_bytes(self, asset: dict) -> bytes:
        if asset["data"] is not None:
            return asset["data"]
        params = {k: asset[k] for k in RENDER_FIELDS}
        key = _render_key(params)
        while True:
            with self.lock:
                cached = self.images.get(asset["id"])
                if cached is not None:
                    self.images.move_to_end(asset["id"])
                    return cached
                ahead = self.rendered_ahead.pop(key, None)
                if ahead is not None:
                    return self._keep(asset, key, ahead[0])
                pending = self.rendering.get(key)
                if pending is None:  # nobody renders it: this request does
                    done = self.rendering[key] = threading.Event()
                    break
            pending.wait()  # being rendered (ahead, or for another request): wait for it, not a second render
        try:
            data = _images.render(**params)
            with self.lock:
                return self._keep(asset, key, data)
        finally:
            with self.lock:
                self.rendering.pop(key, None)
            done.set()

    def _keep(self, asset: dict, key: tuple, data: bytes) -> bytes:
        """The asset's bytes, kept for its next requests (the lock held)."""
        self.images[asset["id"]] = data
        while len(self.images) > 64:
            self.images.popitem(last=False)
        asset["size"] = len(data)
        if len(self.served) > 10_000:
            self.served.clear()
        self.served.add(key)
        return data

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


# -- Views -------------------------------------------------------------------------------------------------

def _render_key(params: dict) -> tuple:
    return tuple(params[k] for k in RENDER_FIELDS)


def job_view(state: State, job: dict, cdn: str, now: float) -> dict:
    if "view" in job:
        return copy.deepcopy(job["view"])
    if "training" in job:
        with state.lock:
            return state.trainings.job_view(job)
    status, progress, history = state.status_of(job, now)
    body = job["body"]
    # The body as sent (a LoRA run through its base keeps the LoRA's id); the URL's model only when absent.
    meta: dict = {"input": copy.deepcopy(body)}
    if job["workflow"]:
        meta["workflowId"] = job["workflow"]["id"]
    elif "modelId" not in body:
        meta["input"]["modelId"] = job["model"]["id"]
    if job["failure"] and status == "failure":
        meta["error"], meta["hint"] = job["failure"]
    cost = job_cost(job["model"], body)
    view = {"jobId": job["id"], "jobType": job["type"],
            "status": status, "progress": round(progress, 3), "statusHistory": history, "metadata": meta,
            "billing": {"cuCost": cost, "cuDiscount": 0}, "authorId": _catalog.AUTHOR, "ownerId": _catalog.OWNER,
            "createdAt": iso(job["created"]),
            "updatedAt": history[-1]["date"] if history else iso(job["created"])}
    if status == "success":
        assets = state.ensure_assets(job)
        if job["model"].get("output") == "metadata-text":  # answers in metadata.output, with no asset
            meta["output"] = {"text": _media.text_answer(body)}
        else:
            meta["assetIds"] = list(assets)
        if job["workflow"]:
            meta["flow"] = [{"id": "node_generate", "type": "custom-model", "status": "success",
                             "modelId": _catalog.HERO, "assets": [{"assetId": a, "url": state.signed_url(a, cdn)}
                                                                 for a in assets]}]
    elif job["workflow"]:
        meta["flow"] = [{"id": "node_generate", "type": "custom-model", "modelId": _catalog.HERO,
                         "status": {"failure": "failure", "canceled": "failure"}.get(status, "processing")}]
    if state.options["legacy"]:  # the quick-start guide's shapes (contract §11 rows 1 and 3)
        view["id"] = view.pop("jobId")
        if "assetIds" in meta:
            view["result"] = {"images": [{"url": state.signed_url(a, cdn)} for a in meta.pop("assetIds")]}
    return view


def job_cost(model: dict, body: dict) -> float:
    count = int(body.get("numOutputs", 1) or 1)
    lora = 5.0 if body.get("modelId") or body.get("loras") else 0.0
    return round((model.get("cost", 9.0) + lora) * count + 1.75, 2)


def asset_view(state: State, asset: dict, cdn: str) -> dict:
    if asset.get("size") is None:
        state.image_bytes(asset)
    kind = asset.get("kind", "image")
    uploaded = asset["source"] == "uploaded"
    meta = {"kind": kind, "type": asset["source"]}
    if not uploaded:
        meta.update({"prompt": asset["prompt"], "seed": str(asset["seed"]), "modelId": asset["model_id"],
                     "parentJobId": asset["job_id"], "outputIndex": asset["index"]})
        if asset.get("aspect"):
            meta["aspectRatio"] = asset["aspect"]
    if asset.get("training_of"):
        meta.update({"trainingImage": True, "name": asset["name"]})
    properties: dict = {"size": asset["size"]}
    if kind == "image":
        meta.update({"width": asset["width"], "height": asset["height"]} if not uploaded else {})
        properties.update({"width": asset["width"], "height": asset["height"], "format": asset.get("format", "png")})
    elif kind == "video":
        properties.update(_media.VIDEO_PROPERTIES)
    elif kind == "3d":
        properties.update(_media.CUBE_PROPERTIES)
    elif kind == "text":
        properties.update(_media.text_properties(state.image_bytes(asset).decode()))
        meta["preview"] = properties["preview"]
    edits = ["PROMPT_EDITING", "REMOVE_BACKGROUND", "UPSCALE", "VECTORIZATION"] if kind == "image" else []
    view = {"id": asset["id"], "kind": kind, "mimeType": asset.get("mime") or _media.MIME[kind], "status": "success",
            "privacy": "private", "source": asset["source"], "url": state.signed_url(asset["id"], cdn),
            "authorId": _catalog.AUTHOR, "ownerId": _catalog.OWNER, "collectionIds": [], "tags": [],
            "editCapabilities": edits, "metadata": meta, "properties": properties,
            "createdAt": iso(asset["created"]), "updatedAt": iso(asset["created"])}
    if asset.get("caption"):
        view["automaticCaptioning"] = asset["caption"]
    if asset.get("description") is not None:
        view["description"] = asset["description"]  # the manual one, else the automatic one (contract §12b.2)
        if not asset["description"] and asset.get("caption"):
            view["description"] = asset["caption"]
    return view


# -- HTTP --------------------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, sandbox, handler) -> None:
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", sandbox.options["port"] if handler is ApiHandler else 0), handler)

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (its read timeout) closes the socket before the answer: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds 40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: Optional[dict] = None, raw: Optional[bytes] = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass


class CdnHandler(_Handler):
    """The asset origin: checks the URL's signature and expiry, never an Authorization header."""

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        state = sandbox.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with state.lock:
            state.cdn_requests.append({"time": state.clock(), "method": "GET", "path": parts.path, "query": query,
                                       "authorization": "Authorization" in self.headers})
        asset_id = parts.path.rsplit("/", 1)[-1].split(".")[0]
        asset = state.assets.get(asset_id)
        expired = False
        with state.lock:
            if state.expire_next > 0:
                state.expire_next -= 1
                expired = True
        if asset is None or expired or not state.check_signature(asset_id, query):
            body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired or " \
                   b"the signature does not match</Message></Error>"
            return self._send(403, None, raw=body, content_type="application/xml")
        corrupt = state.take_fault("GET", parts.path, ("corrupt_image",))
        data = state.image_bytes(asset)
        mime = asset.get("mime") or _media.MIME[asset.get("kind", "image")]
        self._send(200, None, raw=data[: len(data) // 3] if corrupt else data, content_type=mime)


class ApiHandler(_Handler):
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        sandbox = self.server.sandbox
        state = sandbox.state
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        now = state.clock()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with state.lock:  # the body's digest: a test can tell a request sent again from another one
            state.requests.append({"time": now, "method": method, "path": path, "query": query,
                                   "authorization": "Authorization" in self.headers,
                                   "body_sha256": hashlib.sha256(raw).hexdigest()})
            if method == "POST" and path.startswith("/v1/generate/custom/"):
                state.generate_posts += 1
        fault = None if path.startswith("/v1/_sandbox") else state.take_fault(  # its own routes: never
            method, path, ("rate_limit", "error_5xx", "drop", "slow", "malformed", "hold"), query)
        creates = method in ("POST", "PUT") and ("/generate/custom/" in path or path.endswith("/run"))
        # After the request did its work, or before? Job creations: `after_create` (drawn for seeded faults);
        # other requests (models, uploads, captions, starting a training): before, unless injected with
        # `after_create=True` (the answer is lost after the server acted: the training started, the caption
        # was made and charged).
        after = fault is not None and (fault.get("after_create", fault["kind"] in ("slow", "malformed")) if creates
                                 else bool(fault.get("injected") and fault.get("after_create")))
        try:
            if fault and fault["kind"] == "rate_limit":
                extra = {"actionName": "parallelCustomJobs", "actionLimit": sandbox.options["max_parallel_jobs"]}
                if path.endswith("/train"):
                    extra = {"actionName": "parallel-training",
                             "actionLimit": sandbox.options["max_parallel_trainings"]}
                if fault.get("remaining_seconds") is not None:
                    extra = {"remainingSeconds": float(fault["remaining_seconds"])}  # a cooldown 429
                wait = fault.get("retry_after")
                if wait is None and sandbox.options["retry_after_header"]:
                    wait = 1.0
                raise ApiError(429, "Too many requests", {"Retry-After": f"{float(wait):g}"} if wait else {}, **extra)
            if fault and not after:
                if fault["kind"] == "drop":
                    raise Drop()
                if fault["kind"] == "error_5xx":
                    raise ApiError(500, "Internal server error")
                if fault["kind"] == "slow":
                    time.sleep(float(fault.get("seconds", 2.0)))
            status, payload, headers = self._route(method, path, query, raw)
            if fault and fault["kind"] == "hold":  # acted on (a job or training created), the answer held
                state.hold(method, path, query, float(fault.get("seconds", 60.0)))
            if fault and fault["kind"] == "drop":
                raise Drop()
            if fault and fault["kind"] == "error_5xx":
                raise ApiError(502, "Bad gateway")
            if fault and fault["kind"] == "slow" and after:  # not twice
                time.sleep(float(fault.get("seconds", 2.0)))
            if fault and fault["kind"] == "malformed":
                return self._send(200, None, raw=b'{"job": {"jobId": "job_', content_type="application/json")
            self._send(status, payload, headers)
        except Drop:
            self._drop()
        except ApiError as exc:
            if exc.status == 429:  # retry_after 0: no header, so nothing was promised
                with state.lock:
                    state.rate_limited.append({"time": state.clock(), "header": "Retry-After" in exc.headers,
                                               "retry_after": float(exc.headers.get("Retry-After", 0))})
            self._send(exc.status, {"reason": exc.reason, **exc.extra}, exc.headers)

    # -- routes --
    def _authorized(self, method: str, public: bool) -> None:
        sandbox = self.server.sandbox
        header = self.headers.get("Authorization", "")
        if header == "public-auth-token" and method == "GET" and public:
            return
        expected = base64.b64encode(f"{sandbox.api_key}:{sandbox.api_secret}".encode()).decode()
        if header.startswith("Basic ") and hmac.compare_digest(header[6:].strip(), expected):
            return
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), sandbox.api_secret):
            return
        raise ApiError(401, "Unauthorized")

    def _route(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, Any, dict]:
        state = self.server.sandbox.state
        cdn = self.server.sandbox.cdn_url
        if not path.startswith("/v1/"):
            raise ApiError(404, f"Route {method} {path} not found")
        parts = path[4:].strip("/").split("/")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(400, "Body is not valid JSON") from None
        head = parts[0]
        if head == "_sandbox":  # sandbox-only, for tests and benchmarks in another process
            return self._sandbox_route(method, parts[1:], body)
        public = (head == "models" and (query.get("privacy") == "public" or (len(parts) > 1 and state.models.get(
            parts[1], {}).get("privacy") == "public"))) or head == "assets"
        self._authorized(method, public)
        now = state.clock()
        trained = _training.route(state, method, parts, query, body, cdn, asset_view)
        if trained is not None:
            return trained[0], trained[1], {}
        if head == "models" and method == "GET":
            if len(parts) == 1:
                return 200, self._list_models(query, cdn), {}
            model = state.models.get(parts[1])
            if model is None:
                raise ApiError(404, f"Model {parts[1]} not found")
            with state.lock:
                return 200, {"model": _catalog.public_view(state.trainings.refresh(model, cdn), listing=False)}, {}
        if head == "generate" and method == "POST" and len(parts) == 3 and parts[1] == "custom":
            return self._generate(parts[2], body, query, now, cdn)
        if head == "jobs":
            if method == "GET" and len(parts) == 1:
                return 200, self._list_jobs(query, cdn, now), {}
            job = state.jobs.get(parts[1]) if len(parts) > 1 else None
            if job is None:
                raise ApiError(404, f"Job {parts[1] if len(parts) > 1 else ''} not found")
            if method == "GET" and len(parts) == 2:
                return 200, {"job": job_view(state, job, cdn, now)}, {}
            if method == "POST" and len(parts) == 3 and parts[2] == "action":
                if body.get("action") != "cancel":
                    raise ApiError(400, f"Unknown action {body.get('action')!r}; the only action is cancel")
                with state.lock:
                    if state.status_of(job, now)[0] in TERMINAL or "training" in job:
                        # A training is cancelled through POST /models/{id}/train/action (contract §12d.5).
                        raise ApiError(400, "Cannot cancel this type of job")
                    if job["type"] not in self.server.sandbox.options["cancellable_types"]:
                        # The real answer for a running generation (contract §6.5): refused, and it runs on.
                        raise ApiError(400, "Cannot cancel this type of job. Action not permitted.")
                    job["canceled_at"] = now
                return 200, {"job": job_view(state, job, cdn, now)}, {}
        if head == "assets":
            if method == "POST" and len(parts) == 1:
                return 200, self._upload(body, cdn), {}
            if method == "GET" and len(parts) == 1:
                items = sorted(state.assets.values(), key=lambda a: -a["created"])
                if query.get("modelId"):
                    items = [a for a in items if a.get("model_id") == query["modelId"]]
                page = paginate(items, query, "assets", 50, 100)
                page["assets"] = [asset_view(state, a, cdn) for a in page["assets"]]
                return 200, page, {}
            if method == "GET" and len(parts) == 2:
                asset = state.assets.get(parts[1])
                if asset is None:
                    raise ApiError(404, f"Asset {parts[1]} not found")
                return 200, {"asset": asset_view(state, asset, cdn)}, {}
        if head == "workflows":
            if method == "GET" and len(parts) == 1:
                return 200, paginate(list(state.workflows.values()), query, "workflows", 50, 100), {}
            flow = state.workflows.get(parts[1]) if len(parts) > 1 else None
            if flow is None:
                raise ApiError(404, f"Workflow {parts[1] if len(parts) > 1 else ''} not found")
            if method == "GET" and len(parts) == 2:
                return 200, {"workflow": flow}, {}
            if method == "PUT" and len(parts) == 3 and parts[2] == "run":
                if flow["status"] != "ready":
                    raise ApiError(400, f"Workflow {flow['id']} is not ready (status {flow['status']})")
                validate_body(flow["inputs"], body, state)
                model = state.models[_catalog.HERO]
                if query.get("dryRun") in ("true", "api"):
                    return 269, self._estimate(model, body), {}
                job = state.create_job(model | {"cost": 16.0}, body, workflow=flow)
                return 200, {"job": job_view(state, job, cdn, now), "workflow": flow}, {}
        raise ApiError(404, f"Route {method} {path} not found")

    def _sandbox_route(self, method: str, parts: list, body: dict) -> tuple[int, Any, dict]:
        """GET /v1/_sandbox (or any path under it): the logs, counters and held requests; POST
        /v1/_sandbox/faults: `inject(**body)`; POST /v1/_sandbox/release: `release()`."""
        sandbox = self.server.sandbox
        state = sandbox.state
        self._authorized(method, False)
        if method == "GET":
            with state.lock:
                return 200, {"requests": list(state.requests), "cdn_requests": list(state.cdn_requests),
                             "stats": sandbox.stats(), "held": state.holding()}, {}
        if method == "POST" and parts == ["faults"]:
            try:
                sandbox.inject(**body)
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f"Bad fault: {exc}") from None
            return 200, {}, {}
        if method == "POST" and parts == ["release"]:
            state.release()
            return 200, {}, {}
        raise ApiError(404, f"Route {method} /v1/_sandbox/{'/'.join(parts)} not found")

    def _list_models(self, query: dict, cdn: str) -> dict:
        state = self.server.sandbox.state
        privacy = query.get("privacy", "private")
        if privacy not in ("private", "public"):
            raise ApiError(400, "privacy must be private or public")
        if query.get("type") and query.get("types"):
            raise ApiError(400, "type and types cannot be combined")
        if query.get("status") and query["status"] not in ("new", "training", "trained", "failed", "deleted"):
            # The list filter's enum differs from the model's: no training-canceled, no copying (§4.1).
            raise ApiError(400, "status must be one of new, training, trained, failed, deleted")
        types = set(filter(None, (query.get("types") or query.get("type") or "").split(",")))
        tags = set(filter(None, (query.get("tags") or "").split(",")))
        with state.lock:
            if query.get("status") == "deleted":
                models = list(state.trainings.deleted.values())
                query = {k: v for k, v in query.items() if k != "status"}
            else:
                models = [state.trainings.refresh(m, cdn) for m in state.models.values()]
        rows = [m for m in models if m["privacy"] == privacy
                and (not types or m["type"] in types) and (not query.get("status") or m["status"] == query["status"])
                and (not tags or tags & set(m["tags"]))]
        sort_by = query.get("sortBy", "score" if privacy == "public" else "createdAt")
        direction = query.get("sortDirection", "desc")
        if sort_by not in ("score", "createdAt", "updatedAt") or direction not in ("asc", "desc"):
            raise ApiError(400, "sortBy must be createdAt, updatedAt or score; sortDirection asc or desc")
        rows.sort(key=lambda m: m.get(sort_by, 0), reverse=direction == "desc")  # stable: ties keep catalog order
        page = paginate(rows, query, "models", 100, 500)
        page["models"] = [_catalog.public_view(m, listing=True) for m in page["models"]]
        for row in page["models"]:
            if "trainingImages" in row:  # list rows carry the first 3 only (§12b.2)
                row["trainingImages"] = row["trainingImages"][:3]
        return page

    def _estimate(self, model: dict, body: dict) -> dict:
        total = job_cost(model, body)
        return {"creativeUnitsCost": total, "creativeUnitsDiscount": 0,
                "costDetails": {"custom-generation": round(total - 1.75, 2), "quality-gate": 1.75}}

    def _generate(self, model_id: str, body: dict, query: dict, now: float, cdn: str):
        sandbox = self.server.sandbox
        state = sandbox.state
        model = state.models.get(model_id)
        if model is None:
            raise ApiError(404, f"Model {model_id} not found")
        if model["type"] != "custom":
            raise ApiError(400, "Custom models only are supported for this endpoint")
        validate_body(model["inputs"], body, state)
        if query.get("dryRun") in ("true", "api"):
            return 269, self._estimate(model, body), {}
        base = state.input_image(body)
        with state.lock:
            active = state.active_jobs(now)
            limit = sandbox.options["max_parallel_jobs"]
            if len(active) >= limit:
                # Recorded shape (§10): names the limit, no Retry-After and no remainingSeconds.
                headers = {}
                if sandbox.options["retry_after_header"]:
                    soonest = min(j["created"] + j["duration"] for j in active) - now
                    headers["Retry-After"] = f"{max(1.0, round(soonest + 0.05, 1)):g}"
                raise ApiError(429, f"Too many parallel jobs: the limit is {limit}", headers,
                               actionName="parallelCustomJobs", actionLimit=limit)
            job = state.create_job(model, body, base=base)
        view = job_view(state, job, cdn, now)
        if sandbox.options["legacy"]:
            return 200, {"job": {"id": job["id"], "status": view["status"]}}, {}
        return 200, {"job": view, **self._estimate(model, body)}, {}

    def _list_jobs(self, query: dict, cdn: str, now: float) -> dict:
        state = self.server.sandbox.state
        # The list is eventually consistent: a new job shows there only after `list_lag` seconds (§10b).
        lag = self.server.sandbox.options["list_lag"]
        jobs = sorted((j for j in state.jobs.values() if now - j["created"] >= lag), key=lambda j: -j["created"])
        if query.get("createdAfter"):
            after = parse_iso(query["createdAfter"])
            if after is None:
                raise ApiError(400, "createdAfter must be an ISO date")
            jobs = [j for j in jobs if j["created"] > after]
        types = set(filter(None, (query.get("types") or query.get("type") or "").split(",")))
        if types:
            jobs = [j for j in jobs if j["type"] in types]
        if query.get("workflowId"):
            jobs = [j for j in jobs if j["workflow"] and j["workflow"]["id"] == query["workflowId"]]
        if query.get("status"):
            jobs = [j for j in jobs if state.status_of(j, now)[0] == query["status"]]
        page = paginate(jobs, query, "jobs", 50, 100)
        page["jobs"] = [job_view(state, j, cdn, now) for j in page["jobs"]]
        return page

    def _upload(self, body: dict, cdn: str) -> dict:
        state = self.server.sandbox.state
        if not body.get("name") or not body.get("image"):
            raise ApiError(400, "name and image are required")
        text = str(body["image"])
        if text.startswith("data:"):
            text = text.split(",", 1)[-1]
        try:
            data = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise ApiError(400, "Invalid image: not base64") from None
        if len(data) > MAX_UPLOAD:
            raise ApiError(400, "Image is larger than 6 MB; use POST /uploads")
        from PIL import Image
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    width, height = probe.size
                    fmt = probe.format or "PNG"
                    probe.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ApiError(400, "Invalid image: too many pixels") from None
        except Exception:
            raise ApiError(400, "Invalid image") from None
        with state.lock:
            asset_id = state.new_id("asset")
            state.assets[asset_id] = {"id": asset_id, "job_id": None, "model_id": None, "source": "uploaded",
                                      "width": width, "height": height, "created": state.clock(), "data": data,
                                      "size": len(data), "prompt": "", "name": body["name"], "kind": "image",
                                      "format": fmt.lower(), "mime": Image.MIME.get(fmt, "image/png")}
        return {"asset": asset_view(state, state.assets[asset_id], cdn)}
