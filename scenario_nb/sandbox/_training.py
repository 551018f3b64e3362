"""Training custom models and the text tools, as the real API answers them (contract §12b–§12e).

A user creates a model, adds training images (each one an asset, captioned at once), prices the training with a
dry run (HTTP 269), starts it with `PUT /models/{id}/train`, and follows it through its stages. Like a job, a
training is derived from the clock when read (no thread per training): `pending` → `queued-for-train` (its queue
position counting down) → `starting-train` → `running-train` (progress and remaining time) → `trained`, or
`failed` / `training-canceled`. The trained LoRA then runs through its base model, and its images carry the
training set's palette and a motif cropped from its first image (`_images.look_of`), so two trainings differ.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import io
import math
import warnings
from typing import Any, Callable, Optional

from PIL import Image

from . import _catalog, _images, _text
from ._common import ApiError, iso

STANDARD = ("flux.2-dev-lora", "flux.2-klein-4b-lora", "flux.2-klein-9b-lora", "flux.2-klein-base-4b-lora",
            "flux.2-klein-base-9b-lora", "qwen-image-lora", "qwen-image-2512-lora", "zimage-lora",
            "zimage-turbo-lora", "zimage-de-turbo-lora", "flux.1-lora", "flux.1-krea-lora", "flux.1-kontext-lora")
EDIT = ("flux.2-dev-edit-lora", "flux.2-klein-4b-edit-lora", "flux.2-klein-9b-edit-lora",
        "flux.2-klein-base-4b-edit-lora", "flux.2-klein-base-9b-edit-lora", "qwen-image-edit-lora",
        "qwen-image-edit-2509-lora", "qwen-image-edit-2511-lora")
TRAINABLE = STANDARD + EDIT
COMPOSITION = "flux.1-composition"
CREATE_FIELDS = {"type", "name", "shortDescription", "baseModelId", "classSlug", "collectionIds", "concepts"}
TRAINING_JOB_TYPES = ("flux-model-training", "musubi-model-training", "model-training")
# With `train_seconds` the stages take these shares of it; otherwise the contract's real durations (§12d.4).
STAGE_SHARES = (("pending", 0.1), ("queued-for-train", 0.2), ("starting-train", 0.15), ("running-train", 0.55))
CU_PER_IMAGE_EPOCH = 10 / 3  # 12 images × 4 epochs = 160 CU, as in §12e.3
FAILURE = ("Training failed: the trainer ran out of GPU memory",
           "Train again with a smaller rank or batchSize, or with fewer training images.")

# The SDK's `parameters` (train_trigger_params.py): numbers with their ranges (None: unbounded), and the rest.
NUMBERS = {"learningRate": (0, None), "learningRateTextEncoder": (1e-6, 1e-3), "maxTrainSteps": (0, 10000),
           "nbEpochs": (1, None), "nbRepeats": (1, 100), "batchSize": (1, 4), "rank": (2, None),
           **{k: (None, None) for k in ("learningRateUnet", "numTextTrainSteps", "numUNetTrainSteps",
                                        "priorLossWeight", "randomCropRatio", "randomCropScale", "seed",
                                        "textEncoderTrainingRatio", "validationFrequency")}}
STRINGS = ("conceptPrompt", "classPrompt", "validationPrompt", "wandbKey")
BOOLEANS = ("randomCrop", "scaleLr")
CHOICES = {"optimizeFor": ("likeness",), "lrScheduler": ("constant", "constant-with-warmup", "cosine",
                                                          "cosine-with-restarts", "linear", "polynomial")}
LISTS = ("samplePrompts", "sampleSourceImages")
VOICE_ONLY = ("age", "cloneType", "gender", "language", "voiceDescription", "removeBackgroundNoise")


def is_flux1(model_type: str) -> bool:
    return model_type.startswith("flux.1")


def epoch_cap(model_type: str) -> int:
    """8 epochs at most for Flux.1 LoRAs, 4 for FLUX.2 / Qwen / Z-Image [TOOLING]."""
    return 8 if is_flux1(model_type) else 4


def job_type(model_type: str) -> str:
    return "flux-model-training" if is_flux1(model_type) else "musubi-model-training"


def training_cost(images: int, epochs: int) -> int:
    """Linear in images × epochs (§12d.3)."""
    return math.ceil(images * epochs * CU_PER_IMAGE_EPOCH)


def check_parameters(model_type: str, params: Any, state) -> None:
    """400 for anything outside the SDK's types and ranges, or the epoch caps (§12b.3, §12d.3)."""
    if not isinstance(params, dict):
        raise ApiError(400, "parameters must be an object")
    for name, value in params.items():
        if name in VOICE_ONLY:
            raise ApiError(400, f"Parameter {name} is only available for ElevenLabs voice training")
        if name in NUMBERS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ApiError(400, f"Parameter {name} must be a number")
            lo, hi = NUMBERS[name]
            if name == "nbEpochs":
                hi = epoch_cap(model_type)
            elif name == "rank":
                hi = 64 if is_flux1(model_type) else 128
            if name == "learningRate" and value <= 0:
                raise ApiError(400, "Parameter learningRate must be greater than 0")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ApiError(400, f"Parameter {name} must be between {lo:g} and {hi:g} for {model_type} models"
                               if hi is not None else f"Parameter {name} must be at least {lo:g}")
            if name in ("nbEpochs", "nbRepeats", "batchSize", "rank", "maxTrainSteps") and value != int(value):
                raise ApiError(400, f"Parameter {name} must be an integer")
        elif name in STRINGS:
            if not isinstance(value, str):
                raise ApiError(400, f"Parameter {name} must be a string")
            if name == "wandbKey" and len(value) > 40:
                raise ApiError(400, "Parameter wandbKey must be at most 40 characters long")
        elif name in BOOLEANS:
            if not isinstance(value, bool):
                raise ApiError(400, f"Parameter {name} must be a boolean")
        elif name in CHOICES:
            if value not in CHOICES[name]:
                raise ApiError(400, f"Parameter {name} must be one of {', '.join(CHOICES[name])}")
        elif name in LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ApiError(400, f"Parameter {name} must be an array of strings")
        else:
            raise ApiError(400, f"Parameter {name} is not supported")
    prompts = params.get("samplePrompts") or []
    if len(prompts) > 4:
        raise ApiError(400, "Parameter samplePrompts must be at most 4 items long")
    sources = params.get("sampleSourceImages")
    if sources is not None:
        if model_type not in EDIT:
            raise ApiError(400, "Parameter sampleSourceImages is only available for edit models")
        if len(sources) != len(prompts):
            raise ApiError(400, "Parameter sampleSourceImages must be the same length as samplePrompts")
        for asset_id in sources:
            if asset_id not in state.assets:
                raise ApiError(400, f"Parameter sampleSourceImages references unknown asset {asset_id}")


def schedule(rng, epochs: int, train_seconds: Optional[float]) -> list:
    """[(stage, seconds)]: the real durations (pending 2 s, queue 10–60 s, start 30–90 s, ~1 min per epoch), or
    `train_seconds` split in fixed shares."""
    if train_seconds is not None:
        return [(stage, train_seconds * share) for stage, share in STAGE_SHARES]
    return [("pending", 2.0), ("queued-for-train", rng.uniform(10, 60)), ("starting-train", rng.uniform(30, 90)),
            ("running-train", 60.0 * epochs)]


def decode_image(data: bytes) -> tuple:
    """(width, height, format) of real image bytes, else 400."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                size, fmt = probe.size, probe.format or "PNG"
                probe.verify()
    except Exception:
        raise ApiError(400, "Invalid image") from None
    return size[0], size[1], fmt


def data_url_bytes(text: Any, field: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("data:") or ";base64," not in text:
        raise ApiError(400, f"{field} must be a data URL (data:image/png;base64,...)")
    try:
        return base64.b64decode(text.split(",", 1)[1], validate=True)
    except (ValueError, binascii.Error):
        raise ApiError(400, f"{field} is not valid base64") from None


class Trainings:
    """The sandbox's own models and their trainings; every method runs under the state's lock."""

    def __init__(self, state) -> None:
        self.state = state
        self.records: dict[str, dict] = {}  # model id → {"images": [asset ids], "pairs": [...], "run": ...}
        self.pending_failures: list = []
        self.started = 0  # trainings that began (dry runs and refusals excluded)
        self.deleted: dict[str, dict] = {}  # model id → model, listed by ?status=deleted with its deletedAt

    # -- reading ---------------------------------------------------------------------------------------
    def refresh(self, model: dict, cdn: str) -> dict:
        """Bring a model the sandbox made up to date with the clock; others are returned as they are."""
        record = self.records.get(model["id"])
        if record is None:
            return model
        state = self.state
        model["trainingImages"] = [self.image_view(state.assets[a], cdn) for a in record["images"]]
        model["trainingImagesNumber"] = len(record["images"])
        model["trainingImagePairs"] = copy.deepcopy(record["pairs"])
        run = record["run"]
        if run is None:
            return model
        now = state.clock()
        snap = self.snapshot(run, now)
        model["status"] = snap["model_status"]
        model["updatedAt"] = iso(snap["changed"])
        model["trainingProgress"] = snap["progress"]
        if snap["model_status"] == "training" and now < run["start"] + self.new_seconds(run):
            model["status"], model["trainingProgress"] = "new", {}  # the cloud may not show the start at once
        if snap["model_status"] == "trained":
            self._finish(model, run, cdn)
        return model

    def new_seconds(self, run: dict) -> float:
        """How long a model still reads `new` after its training started (`new_after_start`, 0 by default: the
        contract records `training` with stage `pending` at once, §12b.4, §12e.3); a test sets it to reproduce
        a read that does not show a start yet (seen once on the cloud, issue 24)."""
        return float(self.state.options.get("new_after_start") or 0.0)

    def snapshot(self, run: dict, now: float) -> dict:
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

    def _finish(self, model: dict, run: dict, cdn: str) -> None:
        """What a trained model carries (§12b.5, §12d.4): stats, epochs (with sample images), thumbnail."""
        state = self.state
        if run["samples"] is None:
            prompts = run["parameters"].get("samplePrompts") or []
            epochs = range(1, run["epochs"] + 1) if prompts else [run["epochs"]]
            samples: dict = {}
            for epoch in epochs:
                samples[epoch] = [self._sample_asset(model, run, prompt, epoch * 100 + n)
                                  for n, prompt in enumerate(prompts)]
            run["samples"] = samples
        snap = self.snapshot(run, state.clock())
        model["trainingStats"] = {"startedAt": iso(snap["started"]), "endedAt": iso(snap["end"]),
                                  "queueDuration": round(snap["started"] - run["start"], 3),
                                  "trainDuration": round(snap["end"] - snap["started"], 3)}
        model["epochs"] = []
        for epoch, assets in run["samples"].items():
            entry: dict = {"epoch": f"{epoch:06d}"}
            if assets:
                entry["assets"] = [{"assetId": a, "url": state.signed_url(a, cdn)} for a in assets]
            model["epochs"].append(entry)
        model["epoch"] = model["epochs"][-1]["epoch"]
        first = next(iter(run["samples"][run["epochs"]]), None) or self.records[model["id"]]["images"][0]
        model["thumbnail"] = {"assetId": first, "url": state.signed_url(first, cdn)}
        model["concepts"] = [{"modelId": model["id"], "scale": 0.8}]  # a LoRA lists itself [CAPTURE]
        model["parentModelId"] = run["parent"]  # a random id, not the base [CAPTURE]
        if is_flux1(model["type"]):
            model["compliantModelIds"] = ["flux.1-dev", "flux.1-schnell"]

    def _sample_asset(self, model: dict, run: dict, prompt: str, seed: int) -> str:
        state = self.state
        asset_id = state.new_id("asset")
        state.assets[asset_id] = {
            "id": asset_id, "job_id": run["job_id"], "model_id": model["id"], "source": "txt2img", "kind": "image",
            "created": state.clock(), "data": None, "size": None, "aspect": None, "prompt": prompt,
            "style": model["style"], "model_name": model.get("name") or model["id"], "seed": seed, "index": 0,
            "width": 1024, "height": 1024, "base": None, "look": run["look"] + (1.0,)}
        return asset_id

    def look(self, model_id: str) -> Optional[tuple]:
        """A trained model's (palette, motif) for rendering, None for any other model (or one not trained)."""
        record = self.records.get(model_id)
        if record is None or record["run"] is None:
            return None
        if self.snapshot(record["run"], self.state.clock())["model_status"] != "trained":
            return None
        return record["run"]["look"]

    def image_view(self, asset: dict, cdn: str) -> dict:
        return {"id": asset["id"], "name": asset["name"], "createdAt": iso(asset["created"]),
                "description": asset.get("description", ""), "automaticCaptioning": asset.get("caption", ""),
                "downloadUrl": self.state.signed_url(asset["id"], cdn)}

    def job_view(self, job: dict) -> dict:
        run = self.records[job["training"]]["run"]
        snap = self.snapshot(run, self.state.clock())
        meta: dict = {}
        if snap["job_status"] == "failure":
            meta["error"], meta["hint"] = run["failure"]
        return {"jobId": job["id"], "jobType": job["type"], "status": snap["job_status"],
                "progress": snap["job_progress"], "statusHistory": snap["history"], "metadata": meta,
                "billing": {"cuCost": run["cost"], "cuDiscount": 0}, "authorId": _catalog.AUTHOR,
                "ownerId": _catalog.OWNER, "createdAt": iso(run["start"]), "updatedAt": snap["history"][-1]["date"]}

    def job_status(self, job: dict) -> tuple:
        snap = self.snapshot(self.records[job["training"]]["run"], self.state.clock())
        return snap["job_status"], snap["job_progress"], snap["history"]

    def active(self) -> int:
        now = self.state.clock()
        return sum(1 for r in self.records.values()  # `training` by its run, even while the model reads `new`
                   if r["run"] is not None and self.snapshot(r["run"], now)["model_status"] == "training")

    # -- models ----------------------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        """`POST /models` (§12b.1): a private model, status `new`."""
        state = self.state
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:  # create takes no parameters and no concept [SDK]: they go in PUT /models/{id} or the train body
            raise ApiError(400, f"Unknown field {unknown[0]}; parameters go in PUT /models/{{id}} or the train call")
        mtype = body.get("type")
        if mtype is not None and mtype not in TRAINABLE + (COMPOSITION,):
            raise ApiError(400, f"Invalid model type: {mtype}")
        self._check_texts(body)
        if body.get("concepts") is not None and mtype != COMPOSITION:
            raise ApiError(400, "concepts are only for flux.1-composition models")
        now = iso(state.clock())
        model_id = state.new_id("model")
        # `type` is required on every Model [SDK]; without one in the body we assume FLUX.2 dev LoRA [INFERRED].
        model: dict = {"id": model_id, "type": mtype or "flux.2-dev-lora", "status": "new", "privacy": "private",
                 "source": "scenario", "custom": False, "capabilities": ["txt2img", "img2img"], "tags": [],
                 "collectionIds": list(body.get("collectionIds") or []), "exampleAssetIds": [],
                 "trainingImagesNumber": 0, "trainingImages": [], "trainingImagePairs": [], "trainingProgress": {},
                 "parameters": {}, "authorId": _catalog.AUTHOR, "ownerId": _catalog.OWNER,
                 "userId": _catalog.AUTHOR, "createdAt": now, "updatedAt": now,
                 "style": int(hashlib.sha256(state.seeded_id(model_id).encode()).hexdigest(), 16) % 11}
        for key in ("name", "shortDescription", "concepts"):
            if body.get(key) is not None:
                model[key] = copy.deepcopy(body[key])
        state.models[model_id] = model
        self.records[model_id] = {"images": [], "pairs": [], "run": None}
        return model

    def update(self, model: dict, body: dict) -> dict:
        """`PUT /models/{id}`: name, description, parameters; the type only while the model is `new`."""
        self._check_texts(body)
        if "type" in body and body["type"] != model.get("type"):
            if model["status"] != "new" or model["id"] not in self.records:
                raise ApiError(400, "The model type can only be changed while the model is new")
            if body["type"] not in TRAINABLE + (COMPOSITION,):
                raise ApiError(400, f"Invalid model type: {body['type']}")
            model["type"] = body["type"]
        if "parameters" in body:
            if model["status"] != "new":
                raise ApiError(400, "Parameters can only be changed while the model is new")
            check_parameters(model["type"], body["parameters"], self.state)
            model["parameters"] = copy.deepcopy(body["parameters"])
        for key in ("name", "shortDescription"):
            if key in body:
                model[key] = body[key]
        model["updatedAt"] = iso(self.state.clock())
        return model

    def delete(self, model: dict, cdn: str) -> dict:
        """`DELETE /models/{id}`: gone from reads and runs, listed by `?status=deleted` with `deletedAt` (§4.1)."""
        self.refresh(model, cdn)
        if model["status"] == "training":
            raise ApiError(400, "Cannot delete a model that is training; cancel its training first")
        model["deletedAt"] = iso(self.state.clock())
        self.deleted[model["id"]] = self.state.models.pop(model["id"])
        return {}

    @staticmethod
    def _check_texts(body: dict) -> None:
        for key, limit in (("name", 64), ("shortDescription", 256)):
            if body.get(key) is not None and (not isinstance(body[key], str) or len(body[key]) > limit):
                raise ApiError(400, f"{key} must be a string of at most {limit} characters")

    def _editable(self, model: dict, cdn: str) -> dict:
        self.refresh(model, cdn)
        if model["status"] == "training":
            raise ApiError(400, "Cannot change the training images of a model that is training")
        if model["status"] == "new" and model["id"] in self.records and self.records[model["id"]]["run"]:
            raise ApiError(400, "Model is already training")  # it still reads `new`: it started a moment ago
        if model["status"] != "new" or model["id"] not in self.records:
            raise ApiError(400, f"Cannot change the training images of a model whose status is {model['status']}")
        return self.records[model["id"]]

    # -- training images -------------------------------------------------------------------------------
    def add_images(self, model: dict, body: dict, cdn: str) -> dict:
        """`POST /models/{id}/training-images` (§12b.2): data URL + name, or assetId, or up to 10 assetIds."""
        record = self._editable(model, cdn)
        forms = [k for k in ("data", "assetId", "assetIds") if body.get(k) is not None]
        if len(forms) > 1 or (forms == ["assetIds"] and body.get("name") is not None):
            raise ApiError(400, "Use exactly one of data (with name), assetId or assetIds")
        if not forms:
            raise ApiError(400, "One of data (with name), assetId or assetIds is required")
        if body.get("preset") is not None and body["preset"] not in ("default", "style", "subject"):
            raise ApiError(400, "preset must be one of default, style, subject")
        if forms == ["data"]:
            if not isinstance(body.get("name"), str) or not body["name"]:
                raise ApiError(400, "name is required with data")
            sources = [(body["name"], data_url_bytes(body["data"], "data"), None)]
        else:
            ids = body["assetIds"] if forms == ["assetIds"] else [body["assetId"]]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise ApiError(400, "assetIds must be a non-empty array of asset ids")
            if len(ids) > 10:
                raise ApiError(400, "Too many assetIds provided in a single request")
            sources = []
            for asset_id in ids:
                asset = self.state.assets.get(asset_id)
                if asset is None:
                    raise ApiError(404, f"Asset {asset_id} not found")
                if asset.get("kind", "image") != "image":
                    raise ApiError(400, f"Asset {asset_id} is not an image")
                sources.append((asset.get("name") or f"{asset_id}.png", self.state.image_bytes(asset), asset_id))
        known = {self.state.assets[a]["sha"] for a in record["images"]}
        known_sources = {self.state.assets[a].get("from_asset") for a in record["images"]}
        for _, data, origin in sources:
            digest = hashlib.sha256(data).hexdigest()
            if origin is not None and (origin in known_sources or origin in record["images"]):
                raise ApiError(400, "The provided assetId is already a training image of this model")
            if digest in known:
                raise ApiError(400, "The provided image is already a training image of this model")
            known.add(digest)
            known_sources.add(origin)
            decode_image(data)
        limit = self.state.options["max_training_images"]
        if len(record["images"]) + len(sources) > limit:
            raise ApiError(429, f"Too many training images: the limit is {limit}", actionName="add-training-image",
                           actionLimit=limit)
        added = [self._image_asset(model, name, data, origin) for name, data, origin in sources]
        record["images"] += added
        model["updatedAt"] = iso(self.state.clock())
        return {"trainingImage": self.image_view(self.state.assets[added[0]], cdn)}

    def _image_asset(self, model: dict, name: str, data: bytes, origin: Optional[str]) -> str:
        """A training image is an asset of its own (metadata.trainingImage), captioned at once (§12d.2)."""
        state = self.state
        width, height, fmt = decode_image(data)
        asset_id = state.new_id("asset")
        state.assets[asset_id] = {
            "id": asset_id, "job_id": None, "model_id": None, "source": "uploaded", "kind": "image",
            "width": width, "height": height, "created": state.clock(), "data": data, "size": len(data),
            "prompt": "", "name": name, "format": fmt.lower(), "mime": Image.MIME.get(fmt, "image/png"),
            "training_of": model["id"], "from_asset": origin, "sha": hashlib.sha256(data).hexdigest(),
            "caption": _text.caption(data), "description": "", "colours": _images.colour_shares(data)}
        return asset_id

    def replace_image(self, model: dict, image_id: str, body: dict, cdn: str) -> dict:
        """`PUT /models/{id}/training-images/{trainingImageId}`: new bytes under the same id."""
        record = self._editable(model, cdn)
        if image_id not in record["images"]:
            raise ApiError(404, f"Training image {image_id} not found")
        if (body.get("data") is None) == (body.get("assetId") is None) or body.get("assetIds") is not None:
            raise ApiError(400, "Use exactly one of data (with name) or assetId")
        if body.get("data") is not None:
            data, name = data_url_bytes(body["data"], "data"), body.get("name")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "name is required with data")
        else:
            source = self.state.assets.get(body["assetId"])
            if source is None:
                raise ApiError(404, f"Asset {body['assetId']} not found")
            data, name = self.state.image_bytes(source), source.get("name") or f"{body['assetId']}.png"
        width, height, fmt = decode_image(data)
        asset = self.state.assets[image_id]
        asset.update({"data": data, "size": len(data), "name": name, "width": width, "height": height,
                      "format": fmt.lower(), "sha": hashlib.sha256(data).hexdigest(), "caption": _text.caption(data),
                      "colours": _images.colour_shares(data),
                      "from_asset": body.get("assetId")})
        self.state.images.pop(image_id, None)
        return {"trainingImage": self.image_view(asset, cdn)}

    def delete_image(self, model: dict, image_id: str, cdn: str) -> dict:
        record = self._editable(model, cdn)
        if image_id not in record["images"]:
            raise ApiError(404, f"Training image {image_id} not found")
        record["images"].remove(image_id)
        record["pairs"] = [p for p in record["pairs"] if image_id not in (p.get("sourceId"), p.get("targetId"))]
        return {}

    def replace_pairs(self, model: dict, body: Any, cdn: str) -> dict:
        """`PUT /models/{id}/training-images/pairs`: a bare array that replaces every pair; ids must be this
        model's training images."""
        record = self._editable(model, cdn)
        if model.get("type") not in EDIT + ("flux.1-kontext-lora",):
            raise ApiError(400, "Training image pairs are only for edit models")
        if not isinstance(body, list):
            raise ApiError(400, "The body must be an array of training image pairs")
        pairs = []
        for item in body:
            if not isinstance(item, dict) or set(item) - {"sourceId", "targetId", "instruction"}:
                raise ApiError(400, "Each pair is an object with sourceId, targetId and instruction")
            for key in ("sourceId", "targetId"):
                if item.get(key) is not None and item[key] not in record["images"]:
                    raise ApiError(400, f"{key} {item[key]} is not a training image of this model")
            pairs.append(copy.deepcopy(item))
        record["pairs"] = pairs
        return {"count": len(pairs), "pairs": copy.deepcopy(pairs)}

    def dataset_score(self, model: dict) -> dict:
        """`GET /models/{id}/scores/training-dataset` (§12b.7): a pre-flight check of the dataset, with the
        recorded warnings (images under 1024 px, captions missing, identical or too close, images too alike)."""
        record = self.records.get(model["id"])
        assets = [self.state.assets[a] for a in (record["images"] if record else [])]
        captions = [(a.get("description") or a.get("caption") or "").strip() for a in assets]
        mixes = [a["colours"] for a in assets]
        warnings: dict = {}
        for asset, text in zip(assets, captions, strict=True):
            found = []
            if min(asset["width"], asset["height"]) < 1024:  # 1024 itself passes [INFERRED]
                found.append("Width and height must be larger than 1024")
            if not text:
                found.append("Empty caption")
            if found:
                warnings[asset["id"]] = found
        couples, couple_warnings = [], []
        for i in range(len(assets)):
            for j in range(i + 1, len(assets)):
                distance = _dice_distance(captions[i], captions[j])
                similarity = _similarity(mixes[i], mixes[j])
                couple = [assets[i]["id"], assets[j]["id"]]
                couples.append((couple, distance, similarity))
                found = []
                if assets[i]["sha"] == assets[j]["sha"]:
                    found.append("Same asset")
                if captions[i] and captions[i] == captions[j]:
                    found.append("Captions are identical")
                elif captions[i] and captions[j] and distance < 0.15:
                    found.append("Captions are too close")
                if similarity > 0.995:
                    found.append("Similarity is too high")
                if found:
                    couple_warnings.append({"couple": couple, "message": found})
        to_model = [_similarity(mix, [item for k, other in enumerate(mixes) if k != n for item in other])
                    if len(mixes) > 1 else 1.0 for n, mix in enumerate(mixes)]
        small = sum(1 for m in warnings.values() if "Width and height must be larger than 1024" in m)
        mean_distance = _stats([d for _, d, _ in couples])["mean"]
        mean_similarity = _stats([s for _, _, s in couples])["mean"]
        score = 0.0 if not assets else round(0.4 * (1 - small / len(assets)) + 0.3 * min(1.0, mean_distance * 2)
                                             + 0.3 * (1 - max(0.0, mean_similarity - 0.5) * 2), 3)
        answer = {"modelId": model["id"], "score": max(0.0, min(1.0, score)),
                  "status": "unknown" if not assets else "complete" if len(assets) >= 5 else "incomplete",
                  "details": {
                      "assetCouplesCaptionsDistance": [{"couple": c, "distance": round(d, 3)} for c, d, _ in couples],
                      "assetCouplesSimilarity": [{"couple": c, "similarity": round(s, 3)} for c, _, s in couples],
                      "assetsEmbeddingSimilarity": [{"assetId": a["id"], "similarity": round(s, 3)}
                                                    for a, s in zip(assets, to_model, strict=True)],
                      "assetsSimilarity": _stats(to_model),
                      "couplesCaptionsDistance": _stats([d for _, d, _ in couples]),
                      "couplesSimilarity": _stats([s for _, _, s in couples]),
                      "metadataScore": round(sum(1 for c in captions if c) / len(captions), 3) if captions else 0}}
        if warnings:
            answer["assetsWarnings"] = [{"assetId": a, "message": m} for a, m in warnings.items()]
        if couple_warnings:
            answer["assetCouplesWarnings"] = couple_warnings
        return answer

    # -- training --------------------------------------------------------------------------------------
    def train(self, model: dict, body: dict, query: dict, cdn: str) -> tuple:
        """`PUT /models/{id}/train` (§12b.3, §12d.3): 269 for a dry run, else the training starts."""
        state = self.state
        self.refresh(model, cdn)
        if model["status"] == "training":
            raise ApiError(400, "Model is already training")
        if model["status"] == "new" and model["id"] in self.records and self.records[model["id"]]["run"]:
            raise ApiError(400, "Model is already training")  # it still reads `new`: it started a moment ago
        if model["status"] != "new" or model["id"] not in self.records:
            raise ApiError(400, f"Only a new model can be trained; this one is {model['status']}")
        mtype = model["type"]
        if mtype not in TRAINABLE:
            raise ApiError(400, f"Models of type {mtype} cannot be trained")
        if set(body) - {"parameters"}:
            raise ApiError(400, f"Unknown field {sorted(set(body) - {'parameters'})[0]}; send {{parameters}}")
        params = {**model.get("parameters", {}), **(body.get("parameters") or {})}
        check_parameters(mtype, params, state)
        record = self.records[model["id"]]
        dry = query.get("dryRun") in ("true", "api")
        count = len(record["images"])
        if count == 0 and dry and query.get("trainingImagesCount"):
            try:
                count = int(query["trainingImagesCount"])
            except ValueError:
                raise ApiError(400, "trainingImagesCount must be an integer") from None
        if count <= 0:
            raise ApiError(400, "The model has no training images")
        if mtype in EDIT and record["images"] and \
                sum(1 for p in record["pairs"] if p.get("sourceId") and p.get("targetId")) < 2:
            raise ApiError(400, "Edit models need at least 2 training image pairs (sourceId and targetId)")
        epochs = int(params.get("nbEpochs", epoch_cap(mtype)))
        cost = training_cost(count, epochs)
        estimate = {"creativeUnitsCost": cost, "creativeUnitsDiscount": 0, "costDetails": {"train-model": cost}}
        if dry:
            return 269, estimate
        limit = state.options["max_parallel_trainings"]
        if self.active() >= limit:
            raise ApiError(429, f"Too many parallel trainings: the limit is {limit}", actionName="parallel-training",
                           actionLimit=limit)
        failure = self.pending_failures.pop(0) if self.pending_failures else None
        rate = state.rates.get("training_failure")
        if failure is None and rate and state.fault_rng.random() < rate:
            failure = FAILURE
            state._count({"kind": "training_failure"})
        now = state.clock()
        job_id = state.new_id("job")
        record["run"] = {
            "start": now, "stages": schedule(state.rng, epochs, state.options["train_seconds"]),
            "position": state.rng.randint(1, 3), "epochs": epochs, "failure": failure, "canceled_at": None,
            "cost": cost, "job_id": job_id, "parameters": params, "samples": None,
            "parent": state.new_id("model"),
            "look": _images.look_of([state.assets[a]["colours"] for a in record["images"]],
                                    state.assets[record["images"][0]]["data"])}
        state.jobs[job_id] = {"id": job_id, "type": job_type(mtype), "created": now, "workflow": None,
                              "training": model["id"]}
        self.started += 1
        model["jobId"] = job_id
        model["parameters"] = copy.deepcopy(params)
        model.setdefault("name", f"{mtype} model {iso(now)[:16].replace('T', ' ')}")
        self.refresh(model, cdn)
        return 200, {"job": self.job_view(state.jobs[job_id]), "model": model, **estimate}

    def cancel(self, model: dict, body: dict, cdn: str) -> dict:
        """`POST /models/{id}/train/action` `{"action": "cancel"}` (§12b.4, §12d.5): answers `{"model"}`, no job."""
        if body.get("action") != "cancel":
            raise ApiError(400, f"Unknown action {body.get('action')!r}; the only action is cancel")
        self.refresh(model, cdn)
        run = self.records[model["id"]]["run"] if model["id"] in self.records else None
        if run is None or self.snapshot(run, self.state.clock())["model_status"] != "training":
            raise ApiError(400, f"Model is not training (status {model['status']})")
        if "model-training" not in self.state.options["cancellable_types"]:
            raise ApiError(400, "Cannot cancel this type of job. Action not permitted.")
        self.records[model["id"]]["run"]["canceled_at"] = self.state.clock()
        return {"model": self.refresh(model, cdn)}


def _kernel(a: list, b: list) -> float:
    """How much two colour mixes [(share, rgb)] overlap, near colours counting as nearly the same."""
    return sum(sa * sb * math.exp(-sum((x - y) ** 2 for x, y in zip(ca, cb, strict=True)) / 6400)
               for sa, ca in a for sb, cb in b)


def _similarity(a: list, b: list) -> float:
    """The images' colour similarity in 0..1 (1: the same mix)."""
    norm = math.sqrt(_kernel(a, a) * _kernel(b, b))
    return _kernel(a, b) / norm if norm else 0.0


def _dice_distance(a: str, b: str) -> float:
    """1 - Dice-Sørensen similarity of the captions' word sets."""
    x, y = set(a.lower().split()), set(b.lower().split())
    return 1.0 - 2 * len(x & y) / (len(x) + len(y)) if x or y else 0.0


def _stats(values: list) -> dict:
    if not values:
        return {"mean": 0, "median": 0, "min": 0}
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"mean": round(sum(values) / len(values), 3), "median": round(median, 3), "min": round(ordered[0], 3)}


# -- Text tools (§12c, §12d.7) -----------------------------------------------------------------------------

def _text_job(state, job_kind: str) -> dict:
    now = state.clock()
    job_id = state.new_id("job")
    view = {"jobId": job_id, "jobType": job_kind, "status": "success", "progress": 1,
            "statusHistory": [{"status": "success", "date": iso(now)}], "metadata": {}, "authorId": _catalog.AUTHOR,
            "ownerId": _catalog.OWNER, "createdAt": iso(now), "updatedAt": iso(now)}
    state.jobs[job_id] = {"id": job_id, "type": job_kind, "created": now, "workflow": None, "view": view}
    return copy.deepcopy(view)


def _sampling(body: dict) -> int:
    for key, hi in (("temperature", 2), ("topP", 1)):
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not 0 <= value <= hi):
            raise ApiError(400, f"{key} must be a number between 0 and {hi}")
    seed = body.get("seed", 0)
    if not isinstance(seed, (int, float)) or isinstance(seed, bool):
        raise ApiError(400, "seed must be a number")
    return int(seed)


def _image_bytes(state, ref: Any, field: str) -> bytes:
    if isinstance(ref, str) and ref.startswith("data:"):
        data = data_url_bytes(ref, field)
        decode_image(data)
        return data
    asset = state.assets.get(ref) if isinstance(ref, str) else None
    if asset is None:
        raise ApiError(404, f"Asset {ref} not found")
    if asset.get("kind", "image") != "image":
        raise ApiError(400, f"Asset {ref} is not an image")
    return state.image_bytes(asset)


def _style_model(state, model_id: Any) -> Optional[dict]:
    if model_id is None:
        return None
    model = state.models.get(model_id) if isinstance(model_id, str) else None
    if model is None:
        raise ApiError(404, f"Model {model_id} not found")
    return model


def caption(state, body: dict, query: dict) -> tuple:
    """`POST /generate/caption`: one caption per image, same order, synchronous."""
    images = body.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise ApiError(400, "images is required: an array of asset ids or data URLs")
    details = body.get("detailsLevel", "action")
    if details not in ("action", "action+style"):
        raise ApiError(400, "detailsLevel must be one of action, action+style")
    unwanted = body.get("unwantedSequences") or []
    if not isinstance(unwanted, list) or not all(isinstance(u, str) for u in unwanted):
        raise ApiError(400, "unwantedSequences must be an array of strings")
    seed = _sampling(body)
    model = _style_model(state, body.get("modelId"))
    cost = len(images)
    estimate = {"creativeUnitsCost": cost, "creativeUnitsDiscount": 0, "costDetails": {"caption": cost}}
    data = [_image_bytes(state, ref, "images") for ref in images]
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    style_of = (model.get("name") or model["id"]) if model else None
    captions = [_text.caption(d, seed=seed, details=details, unwanted=unwanted, style_of=style_of) for d in data]
    with state.lock:
        job = _text_job(state, "caption")
    return 200, {"captions": captions, "detailsLevel": details, "job": job, **estimate}


def prompt(state, body: dict, query: dict) -> tuple:
    """`POST /generate/prompt`: `numResults` prompts for the mode, synchronous; `calls` when a model is given."""
    mode = body.get("mode")
    if mode not in _text.MODES:
        raise ApiError(400, f"mode must be one of {', '.join(_text.MODES)}")
    count = body.get("numResults", 1)
    if not isinstance(count, (int, float)) or isinstance(count, bool) or count != int(count) or not 1 <= count <= 10:
        raise ApiError(400, "numResults must be an integer between 1 and 10")
    text = body.get("prompt")
    if text is not None and not isinstance(text, str):
        raise ApiError(400, "prompt must be a string")
    if mode in ("completion", "inventive", "structured") and not text:
        raise ApiError(400, f"prompt is required with mode {mode}")
    for key in ("images", "assetIds"):
        if body.get(key) is not None and (not isinstance(body[key], list)
                                          or not all(isinstance(i, str) for i in body[key])):
            raise ApiError(400, f"{key} must be an array of asset ids or data URLs")
    images = list(body.get("images") or []) + list(body.get("assetIds") or [])
    if len(images) > (15 if mode == "contextual-v2" else 5):
        raise ApiError(400, f"images must be at most {15 if mode == 'contextual-v2' else 5} items long")
    if mode in ("contextual", "contextual-v2") and not images:
        raise ApiError(400, f"images are required with mode {mode}")
    if mode == "image-editing":
        if not body.get("image"):
            raise ApiError(400, "image is required with mode image-editing")
        images = [body["image"]] + images
    seed = _sampling(body)
    model = _style_model(state, body.get("modelId"))
    data = [_image_bytes(state, ref, "images") for ref in images]
    cost = int(count)
    estimate = {"creativeUnitsCost": cost, "creativeUnitsDiscount": 0, "costDetails": {"prompt": cost}}
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    concept = ((model or {}).get("parameters") or {}).get("conceptPrompt", "")
    texts = _text.prompts(mode=mode, prompt=text or "", count=int(count), seed=seed,
                          captions=[_text.caption(d, seed=seed) for d in data], concept=concept)
    answer: dict = {"prompts": texts, "mode": mode}
    if model is not None and model.get("custom"):
        answer["calls"] = [{"modelId": model["id"], "parameters": {"prompt": t}} for t in texts]
    with state.lock:
        answer["job"] = _text_job(state, "generate-prompt")
    return 200, {**answer, **estimate}


def describe_style(state, body: dict, query: dict) -> tuple:
    """`POST /generate/describe-style`: the style of images, asset ids, or a model's training images."""
    for key in ("images", "assetIds"):
        if body.get(key) is not None and (not isinstance(body[key], list)
                                          or not all(isinstance(i, str) for i in body[key])):
            raise ApiError(400, f"{key} must be an array of asset ids or data URLs")
    refs = list(body.get("images") or []) + list(body.get("assetIds") or [])
    model = _style_model(state, body.get("modelId"))
    if model is not None and not refs:
        record = state.trainings.records.get(model["id"])
        refs = list(record["images"]) if record else []
        if not refs:
            raise ApiError(400, f"Model {model['id']} has no training images to describe")
    if not refs:
        raise ApiError(400, "One of images, assetIds or modelId is required")
    unwanted = body.get("unwantedSequences") or []
    if not isinstance(unwanted, list) or not all(isinstance(u, str) for u in unwanted):
        raise ApiError(400, "unwantedSequences must be an array of strings")
    _sampling(body)
    data = [_image_bytes(state, ref, "images") for ref in refs]
    estimate = {"creativeUnitsCost": 1, "creativeUnitsDiscount": 0, "costDetails": {"describe-style": 1}}
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    description, synthesis = _text.describe_style(data, unwanted=unwanted)
    with state.lock:
        job = _text_job(state, "describe-style")
    return 200, {"description": description, "synthesis": synthesis, "job": job, **estimate}


def translate(state, body: dict, query: dict) -> tuple:
    """`POST /generate/translate`: the prompt in English and the language it was in."""
    text = body.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "prompt is required")
    _sampling(body)
    for ref in body.get("images") or []:
        _image_bytes(state, ref, "images")
    estimate = {"creativeUnitsCost": 1, "creativeUnitsDiscount": 0, "costDetails": {"translate": 1}}
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    translation, language = _text.translate(text)
    with state.lock:
        job = _text_job(state, "translate")
    return 200, {"translation": translation, "detectedLanguage": language, "job": job, **estimate}


TEXT_TOOLS = {"caption": caption, "prompt": prompt, "describe-style": describe_style, "translate": translate}


def route(state, method: str, parts: list, query: dict, body: Any, cdn: str,
          asset_view: Callable) -> Optional[tuple]:
    """The training and text routes: (status, payload), or None when the path is not one of them."""
    head = parts[0]
    if head == "generate" and method == "POST" and len(parts) == 2 and parts[1] in TEXT_TOOLS:
        if not isinstance(body, dict):
            raise ApiError(400, "The body must be an object")
        return TEXT_TOOLS[parts[1]](state, body, query)
    if head == "assets" and method == "PUT" and len(parts) == 2:
        with state.lock:
            asset = state.assets.get(parts[1])
            if asset is None:
                raise ApiError(404, f"Asset {parts[1]} not found")
            if not isinstance(body, dict):
                raise ApiError(400, "The body must be an object")
            for key in ("description", "name"):
                if key in body:
                    if not isinstance(body[key], str):
                        raise ApiError(400, f"{key} must be a string")
                    asset[key] = body[key]
        return 200, {"asset": asset_view(state, asset, cdn)}  # outside the lock: it may render the image
    if head != "models" or (method, len(parts)) == ("GET", 1) or (method == "GET" and len(parts) == 2):
        return None
    if method == "GET" and parts[2:] != ["scores", "training-dataset"]:
        return None
    trainings = state.trainings
    with state.lock:
        if method == "POST" and len(parts) == 1:
            if not isinstance(body, dict):
                raise ApiError(400, "The body must be an object")
            return 200, {"model": _catalog.public_view(trainings.create(body), listing=False)}
        model = state.models.get(parts[1]) if len(parts) > 1 else None
        if model is None:
            raise ApiError(404, f"Model {parts[1] if len(parts) > 1 else ''} not found")
        if model["privacy"] != "private":
            raise ApiError(403, f"You do not own model {model['id']}")
        tail = tuple(parts[2:])
        if not isinstance(body, dict) and tail != ("training-images", "pairs"):
            raise ApiError(400, "The body must be an object")
        if method == "PUT" and tail == ():
            answer: Any = {"model": trainings.update(trainings.refresh(model, cdn), body)}
        elif method == "DELETE" and tail == ():
            return 200, trainings.delete(model, cdn)
        elif method == "POST" and tail == ("training-images",):
            answer = trainings.add_images(model, body, cdn)
        elif method == "PUT" and tail == ("training-images", "pairs"):
            answer = trainings.replace_pairs(model, body, cdn)
        elif method == "PUT" and len(tail) == 2 and tail[0] == "training-images":
            answer = trainings.replace_image(model, tail[1], body, cdn)
        elif method == "DELETE" and len(tail) == 2 and tail[0] == "training-images":
            answer = trainings.delete_image(model, tail[1], cdn)
        elif method == "PUT" and tail == ("train",):
            status, answer = trainings.train(model, body, query, cdn)
            if "model" in answer:
                answer["model"] = _catalog.public_view(answer["model"], listing=False)
            return status, answer
        elif method == "POST" and tail == ("train", "action"):
            answer = trainings.cancel(model, body, cdn)
        elif method == "GET" and tail == ("scores", "training-dataset"):
            return 200, trainings.dataset_score(model)
        else:
            return None
        if "model" in answer:
            answer["model"] = _catalog.public_view(trainings.refresh(answer["model"], cdn), listing=False)
        return 200, answer
