"""Training custom models, as the real API answers them (contract §12b–§12e).

A user creates a model, adds training images (each one an asset, captioned at once: `_training_images`), prices
the training with a dry run (HTTP 269), starts it with `PUT /models/{id}/train`, and follows it through its stages.
Like a job, a training is derived from the clock when read (`_training_clock`): `pending` → `queued-for-train` →
`starting-train` → `running-train` → `trained`, or `failed` / `training-canceled`. The trained LoRA then runs
through its base model, and its images carry the training set's palette and a motif cropped from its first image
(`_images.look_of`), so two trainings differ. The routes that reach it are in `_training_routes`.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Optional

from . import _catalog, _images
from ._common import ApiError, iso
from ._training_clock import schedule, snapshot
from ._training_images import TrainingImages
from ._training_rules import (COMPOSITION, CREATE_FIELDS, EDIT, FAILURE, TRAINABLE, check_parameters, epoch_cap,
                              is_flux1, job_type, training_cost)
from ._training_score import dataset_score

__all__ = ["FAILURE", "Trainings"]


class Trainings:
    """The sandbox's own models and their trainings; every method runs under the state's lock."""

    def __init__(self, state) -> None:
        self.state = state
        self.records: dict[str, dict] = {}  # model id → {"images": [asset ids], "pairs": [...], "run": ...}
        self.pending_failures: list = []
        self.started = 0  # trainings that began (dry runs and refusals excluded)
        self.deleted: dict[str, dict] = {}  # model id → model, listed by ?status=deleted with its deletedAt

        self.images = TrainingImages(state, self)

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
        snap = snapshot(run, now)
        model["status"] = snap["model_status"]
        model["updatedAt"] = iso(snap["changed"])
        model["trainingProgress"] = snap["progress"]
        if snap["model_status"] == "trained":
            self._finish(model, run, cdn)
        return model

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
        snap = snapshot(run, state.clock())
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
        if snapshot(record["run"], self.state.clock())["model_status"] != "trained":
            return None
        return record["run"]["look"]

    def image_view(self, asset: dict, cdn: str) -> dict:
        return {"id": asset["id"], "name": asset["name"], "createdAt": iso(asset["created"]),
                "description": asset.get("description", ""), "automaticCaptioning": asset.get("caption", ""),
                "downloadUrl": self.state.signed_url(asset["id"], cdn)}

    def job_view(self, job: dict) -> dict:
        run = self.records[job["training"]]["run"]
        snap = snapshot(run, self.state.clock())
        meta: dict = {}
        if snap["job_status"] == "failure":
            meta["error"], meta["hint"] = run["failure"]
        return {"jobId": job["id"], "jobType": job["type"], "status": snap["job_status"],
                "progress": snap["job_progress"], "statusHistory": snap["history"], "metadata": meta,
                "billing": {"cuCost": run["cost"], "cuDiscount": 0}, "authorId": _catalog.AUTHOR,
                "ownerId": _catalog.OWNER, "createdAt": iso(run["start"]), "updatedAt": snap["history"][-1]["date"]}

    def job_status(self, job: dict) -> tuple:
        snap = snapshot(self.records[job["training"]]["run"], self.state.clock())
        return snap["job_status"], snap["job_progress"], snap["history"]

    def active(self) -> int:
        now = self.state.clock()
        return sum(1 for r in self.records.values()  # the catalog's demo training is not the user's
                   if r["run"] is not None and not r["run"].get("demo")
                   and snapshot(r["run"], now)["model_status"] == "training")

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

    def dataset_score(self, model: dict) -> dict:
        record = self.records.get(model["id"])
        return dataset_score(model["id"], [self.state.assets[a] for a in (record["images"] if record else [])])

    # -- training --------------------------------------------------------------------------------------
    def train(self, model: dict, body: dict, query: dict, cdn: str) -> tuple:
        """`PUT /models/{id}/train` (§12b.3, §12d.3): 269 for a dry run, else the training starts."""
        state = self.state
        self.refresh(model, cdn)
        if model["status"] == "training":
            raise ApiError(400, "Model is already training")
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
        if model["status"] != "training" or model["id"] not in self.records:
            raise ApiError(400, f"Model is not training (status {model['status']})")
        if "model-training" not in self.state.options["cancellable_types"]:
            raise ApiError(400, "Cannot cancel this type of job. Action not permitted.")
        self.records[model["id"]]["run"]["canceled_at"] = self.state.clock()
        return {"model": self.refresh(model, cdn)}
