"""The public surface: what `scenario_nb` exports, that it can be used without a live engine, and that
importing it stays light."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
from PIL import Image

import scenario_nb
from scenario_nb import Generation, JobFailedError, JobTimeoutError, Output, SubmitFailedError, wait_all


def a_png(path, colour=(200, 40, 40)):
    Image.new("RGB", (8, 6), colour).save(path)
    return path


# -- Result types from plain values -------------------------------------------------------------------

def test_a_generation_is_built_from_plain_values_and_reads_like_a_live_one(tmp_path):
    picture = a_png(tmp_path / "asset_1.png")
    gen = Generation(model_id="flux.1-dev", prompt="a lighthouse", status="success", job_id="job_1", cost=2.5,
                     outputs=[Output("asset_1", "image", "image/png", picture)], inputs={"seed": 7})
    assert gen.done and gen.ok and gen.wait(0) is gen
    assert (gen.prompt, gen.seed, gen.model_name, gen.run_model_id) == ("a lighthouse", 7, "flux.1-dev", "flux.1-dev")
    assert gen.asset_ids == ["asset_1"] and gen.files == [picture]
    assert [im.size for im in gen.images] == [(8, 6)]
    assert gen.summary() == "job_1 · flux.1-dev · success · 2.5 CU · 1 image · seed 7"
    assert gen.provenance()["inputs"] == {"seed": 7, "prompt": "a lighthouse"}
    assert gen.cancel() == "finished"

    written = gen.save(tmp_path / "out")  # by effect: a PNG with its provenance, and the sidecar
    assert [p.name for p in written] == ["job_1_0.png", "job_1.json"]
    with Image.open(written[0]) as saved:
        assert saved.text["prompt"] == "a lighthouse" and saved.text["job_id"] == "job_1"
    assert json.loads(written[1].read_text())["files"] == ["job_1_0.png"]


def test_a_generation_built_failed_or_unsent_raises_as_the_engine_would():
    failed = Generation(model_id="m", prompt="p", status="failure", job_id="job_2", error="content refused")
    with pytest.raises(JobFailedError, match="content refused") as caught:
        failed.wait(0)
    assert caught.value.job_id == "job_2" and failed.done and not failed.ok
    with pytest.raises(SubmitFailedError):
        Generation(model_id="m", status="not-sent").wait(0)
    in_flight = Generation(model_id="m", prompt="p", status="in-progress", job_id="job_3")
    assert not in_flight.done and in_flight.cancel() == "unavailable" and "client.cancel" in in_flight.note


# -- wait()'s timeout ---------------------------------------------------------------------------------

def test_a_timeout_before_any_job_points_at_no_job():
    queued = Generation(model_id="m", prompt="p", status="waiting")
    with pytest.raises(JobTimeoutError) as caught:
        queued.wait(0.01)
    error = caught.value
    assert error.job_id == "" and "not sent yet" in str(error)
    assert "%scenario job" not in str(error) and "client.job(" not in str(error)  # nothing to re-attach to
    assert "running on the server" not in str(error)

    with pytest.raises(JobTimeoutError) as caught:  # the same through wait_all, alone or beside a real job
        wait_all([queued], timeout=0.01)
    assert caught.value.job_id == "" and "%scenario job" not in str(caught.value)
    with pytest.raises(JobTimeoutError) as caught:
        wait_all([queued, Generation(model_id="m", status="queued", job_id="job_4")], timeout=0.01)
    assert caught.value.job_id == "" and "job_4 can be re-attached" in str(caught.value)


def test_a_timeout_on_a_job_says_how_to_reattach_it():
    running = Generation(model_id="m", prompt="p", status="in-progress", job_id="job_5")
    with pytest.raises(JobTimeoutError) as caught:
        running.wait(0.01)
    assert caught.value.job_id == "job_5" and "client.job('job_5')" in str(caught.value)
