"""Scenario's quick-start guide, followed verbatim with plain `requests`, works against the sandbox."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from scenario_nb import sandbox as sandbox_mod


@pytest.mark.parametrize("legacy", [False, True], ids=["real-shape", "guide-shape"])
def test_guide_walkthrough(legacy):
    with sandbox_mod.start(job_seconds=0.5, legacy=legacy) as sb:
        auth = (sb.api_key, sb.api_secret)  # curl -u KEY:SECRET
        model_id = requests.get(f"{sb.url}/models", params={"privacy": "public"}, auth=auth,
                                timeout=10).json()["models"][2]["id"]
        answer = requests.post(f"{sb.url}/generate/custom/{model_id}", auth=auth, timeout=10,
                               headers={"Content-Type": "application/json"},
                               json={"prompt": "a warrior character in a forest, cinematic lighting",
                                     "aspectRatio": "1:1"})
        assert answer.status_code == 200
        job_id = answer.json()["job"]["id"]  # Step 1: "The response returns a jobId immediately"
        assert job_id.startswith("job_")
        for _ in range(100):  # Step 2: poll until success
            job = requests.get(f"{sb.url}/jobs/{job_id}", auth=auth, timeout=10).json()["job"]
            if job["status"] == "success":
                break
            assert job["status"] in ("queued", "warming-up", "in-progress", "finalizing")
            time.sleep(0.2)
        url = job["result"]["images"][0]["url"]  # Step 3: the asset URL
        image = Image.open(io.BytesIO(requests.get(url, timeout=10).content))
        assert image.format == "PNG" and image.size == (1024, 1024)
