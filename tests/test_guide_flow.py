"""Scenario's quick-start guide, followed verbatim with plain `requests`, works against the sandbox's guide
shapes (`legacy_shapes=True`); by default the sandbox answers with the real API's shapes only."""

from __future__ import annotations

import io
import time

import requests
from PIL import Image

from scenario_nb import sandbox as sandbox_mod

PROMPT = {"prompt": "a warrior character in a forest, cinematic lighting", "aspectRatio": "1:1"}


def pick_image_model(sb, auth) -> str:
    """The first public image model that takes an aspectRatio of 1:1 (found by what it is, not where it sits)."""
    rows = requests.get(f"{sb.url}/models", params={"privacy": "public"}, auth=auth, timeout=10).json()["models"]
    for row in rows:
        if row["custom"] and "txt2img" in row["capabilities"]:
            model = requests.get(f"{sb.url}/models/{row['id']}", auth=auth, timeout=10).json()["model"]
            ratio = next((i for i in model["inputs"] if i["name"] == "aspectRatio"), None)
            if ratio and "1:1" in ratio.get("allowedValues", []):
                return model["id"]
    raise AssertionError("no public image model takes aspectRatio 1:1")


def poll(sb, auth, job_id) -> dict:
    for _ in range(100):  # Step 2: poll until success
        job = requests.get(f"{sb.url}/jobs/{job_id}", auth=auth, timeout=10).json()["job"]
        if job["status"] == "success":
            return job
        assert job["status"] in ("queued", "warming-up", "in-progress", "finalizing")
        time.sleep(0.2)
    raise AssertionError("the job never succeeded")


def test_guide_walkthrough_on_guide_shapes():
    with sandbox_mod.start(job_seconds=0.5, legacy_shapes=True) as sb:
        auth = (sb.api_key, sb.api_secret)  # curl -u KEY:SECRET
        answer = requests.post(f"{sb.url}/generate/custom/{pick_image_model(sb, auth)}", auth=auth, timeout=10,
                               headers={"Content-Type": "application/json"}, json=PROMPT)
        assert answer.status_code == 200
        job_id = answer.json()["job"]["id"]  # Step 1: "The response returns a jobId immediately"
        assert job_id.startswith("job_")
        url = poll(sb, auth, job_id)["result"]["images"][0]["url"]  # Step 3: the asset URL
        image = Image.open(io.BytesIO(requests.get(url, timeout=10).content))
        assert image.format == "PNG" and image.size == (1024, 1024)


def test_real_shapes_by_default():
    """No `job.id`, no `result`: the id is `jobId` and outputs are `metadata.assetIds`, resolved via GET /assets."""
    with sandbox_mod.start(job_seconds=0.5) as sb:
        auth = (sb.api_key, sb.api_secret)
        created = requests.post(f"{sb.url}/generate/custom/{pick_image_model(sb, auth)}", auth=auth, timeout=10,
                                json=PROMPT).json()["job"]
        assert "id" not in created and created["jobId"].startswith("job_")
        job = poll(sb, auth, created["jobId"])
        assert "id" not in job and "result" not in job
        asset = requests.get(f"{sb.url}/assets/{job['metadata']['assetIds'][0]}", auth=auth, timeout=10).json()
        image = Image.open(io.BytesIO(requests.get(asset["asset"]["url"], timeout=10).content))
        assert image.format == "PNG" and image.size == (1024, 1024)
