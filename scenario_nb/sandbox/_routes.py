"""The API's routes as one table (method, path pattern, handler), and the handlers of models, jobs, assets and
workflows; training and the text tools add theirs (`_training_routes`)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

from . import _catalog
from ._common import ApiError, found
from ._inputs import validate_body
from ._routing import Request, Routes
from ._state import TERMINAL
from ._training_routes import TRAINING_ROUTES
from ._views import asset_view, job_cost, job_view, paginate, parse_iso

MAX_UPLOAD = 6 * 1024 * 1024


# -- models ------------------------------------------------------------------------------------------------

def list_models(req: Request) -> tuple:
    state, query = req.state, req.query
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
            models = [state.trainings.refresh(m, req.cdn) for m in state.models.values()]
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
    return 200, page


def get_model(req: Request) -> tuple:
    state = req.state
    model = found(state.models, "Model", req.params["model_id"])
    with state.lock:
        return 200, {"model": _catalog.public_view(state.trainings.refresh(model, req.cdn), listing=False)}


# -- generations and jobs ----------------------------------------------------------------------------------

def estimate(model: dict, body: dict) -> dict:
    total = job_cost(model, body)
    return {"creativeUnitsCost": total, "creativeUnitsDiscount": 0,
            "costDetails": {"custom-generation": round(total - 1.75, 2), "quality-gate": 1.75}}


def generate(req: Request) -> tuple:
    """`POST /generate/custom/{modelId}`: a job, refused with 429 beyond the parallel-job limit."""
    state, body, now, options = req.state, req.body, req.now, req.state.options
    model = found(state.models, "Model", req.params["model_id"])
    if model["type"] != "custom":
        raise ApiError(400, "Custom models only are supported for this endpoint")
    validate_body(model["inputs"], body, state)
    if req.query.get("dryRun") in ("true", "api"):
        return 269, estimate(model, body)
    base = state.input_image(body)
    with state.lock:
        active = state.active_jobs(now)
        limit = options["max_parallel_jobs"]
        if len(active) >= limit:
            # Recorded shape (§10): names the limit, no Retry-After and no remainingSeconds.
            headers = {}
            if options["retry_after_header"]:
                soonest = min(j["created"] + j["duration"] for j in active) - now
                headers["Retry-After"] = f"{max(1.0, round(soonest + 0.05, 1)):g}"
            raise ApiError(429, f"Too many parallel jobs: the limit is {limit}", headers,
                           actionName="parallelCustomJobs", actionLimit=limit)
        job = state.create_job(model, body, base=base)
    view = job_view(state, job, req.cdn, now)
    if options["legacy"]:
        return 200, {"job": {"id": job["id"], "status": view["status"]}}
    return 200, {"job": view, **estimate(model, body)}


def list_jobs(req: Request) -> tuple:
    state, query, now = req.state, req.query, req.now
    # The list is eventually consistent: a new job shows there only after `list_lag` seconds (§10b).
    lag = state.options["list_lag"]
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
    page["jobs"] = [job_view(state, j, req.cdn, now) for j in page["jobs"]]
    return 200, page


def _job(req: Request) -> dict:
    return found(req.state.jobs, "Job", req.params["job_id"])


def get_job(req: Request) -> tuple:
    return 200, {"job": job_view(req.state, _job(req), req.cdn, req.now)}


def cancel_job(req: Request) -> tuple:
    """`POST /jobs/{id}/action {"action": "cancel"}`: only for the job types the sandbox was told accept it."""
    state, job = req.state, _job(req)
    if req.body.get("action") != "cancel":
        raise ApiError(400, f"Unknown action {req.body.get('action')!r}; the only action is cancel")
    with state.lock:
        if state.status_of(job, req.now)[0] in TERMINAL or "training" in job:
            # A training is cancelled through POST /models/{id}/train/action (contract §12d.5).
            raise ApiError(400, "Cannot cancel this type of job")
        if job["type"] not in state.options["cancellable_types"]:
            # The real answer for a running generation (contract §6.5): refused, and it runs on.
            raise ApiError(400, "Cannot cancel this type of job. Action not permitted.")
        job["canceled_at"] = req.now
    return 200, {"job": job_view(state, job, req.cdn, req.now)}


# -- assets ------------------------------------------------------------------------------------------------

def list_assets(req: Request) -> tuple:
    state = req.state
    items = sorted(state.assets.values(), key=lambda a: -a["created"])
    if req.query.get("modelId"):
        items = [a for a in items if a.get("model_id") == req.query["modelId"]]
    page = paginate(items, req.query, "assets", 50, 100)
    page["assets"] = [asset_view(state, a, req.cdn) for a in page["assets"]]
    return 200, page


def get_asset(req: Request) -> tuple:
    asset = found(req.state.assets, "Asset", req.params["asset_id"])
    return 200, {"asset": asset_view(req.state, asset, req.cdn)}


def upload(req: Request) -> tuple:
    """`POST /assets` `{name, image}`: a base64 image up to 6 MB, checked to be one."""
    state, body = req.state, req.body
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
    return 200, {"asset": asset_view(state, state.assets[asset_id], req.cdn)}


# -- workflows ---------------------------------------------------------------------------------------------

def list_workflows(req: Request) -> tuple:
    return 200, paginate(list(req.state.workflows.values()), req.query, "workflows", 50, 100)


def _workflow(req: Request) -> dict:
    return found(req.state.workflows, "Workflow", req.params["workflow_id"])


def get_workflow(req: Request) -> tuple:
    return 200, {"workflow": _workflow(req)}


def run_workflow(req: Request) -> tuple:
    state, flow, body = req.state, _workflow(req), req.body
    if flow["status"] != "ready":
        raise ApiError(400, f"Workflow {flow['id']} is not ready (status {flow['status']})")
    validate_body(flow["inputs"], body, state)
    model = state.models[_catalog.HERO]
    if req.query.get("dryRun") in ("true", "api"):
        return 269, estimate(model, body)
    job = state.create_job(model | {"cost": 16.0}, body, workflow=flow)
    return 200, {"job": job_view(state, job, req.cdn, req.now), "workflow": flow}


# -- the sandbox's own (tests and benchmarks in another process) -------------------------------------------

def sandbox_log(req: Request) -> tuple:
    """`GET /v1/_sandbox` (or any path under it): the logs, counters and held requests."""
    state = req.state
    with state.lock:
        return 200, {"requests": list(state.requests), "cdn_requests": list(state.cdn_requests),
                     "stats": req.sandbox.stats(), "held": state.holding()}


def inject_fault(req: Request) -> tuple:
    """`POST /v1/_sandbox/faults`: `Sandbox.inject(**body)`."""
    try:
        req.sandbox.inject(**req.body)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f"Bad fault: {exc}") from None
    return 200, {}


def world_info(req: Request) -> tuple:
    """`GET /v1/_sandbox/world`: the home's world this sandbox keeps (a sandbox started with `--home`)."""
    return 200, _world_of(req).info()


def reset_world(req: Request) -> tuple:
    """`POST /v1/_sandbox/reset`: empty the world; answers what it removed."""
    return 200, _world_of(req).reset()


def _world_of(req: Request) -> Any:
    world = getattr(req.sandbox, "world", None)
    if world is None:
        raise ApiError(404, "This sandbox keeps no world on disk (it was not started with --home)")
    return world


def release_held(req: Request) -> tuple:
    req.state.release()
    return 200, {}


ROUTES = Routes([
    ("GET", "models", list_models),
    ("GET", "models/{model_id}", get_model),
    ("POST", "generate/custom/{model_id}", generate),
    ("GET", "jobs", list_jobs),
    ("GET", "jobs/{job_id}", get_job),
    ("POST", "jobs/{job_id}/action", cancel_job),
    ("GET", "assets", list_assets),
    ("POST", "assets", upload),
    ("GET", "assets/{asset_id}", get_asset),
    ("GET", "workflows", list_workflows),
    ("GET", "workflows/{workflow_id}", get_workflow),
    ("PUT", "workflows/{workflow_id}/run", run_workflow),
    ("GET", "_sandbox/world", world_info),
    ("POST", "_sandbox/reset", reset_world),
    ("GET", "_sandbox/*", sandbox_log),
    ("POST", "_sandbox/faults", inject_fault),
    ("POST", "_sandbox/release", release_held),
    *TRAINING_ROUTES,
])
