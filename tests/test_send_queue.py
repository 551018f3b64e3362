"""The 429 queue: requests refused with 429 wait here in order and are sent once the creation gate opens.

One request whose answer is odd (a body that is not an object) ends with an error of its own, recorded in the
history, and never stops the requests queued behind it. An answer that names its job is never odd enough to lose
the job: its id is written first, and a cost that is not a number is only a cost not known.
"""

from __future__ import annotations

import time

import pytest

from scenario_nb import OutcomeUnknownError, ScenarioClient, wait_all
from scenario_nb import sandbox as sandbox_mod

from conftest import SUITE_KEY, SUITE_SECRET, Clock

ODD_ANSWERS = {
    "a body that is not an object": lambda data: ["not", "an", "object"],
}
ODD_COSTS = {
    "a cost that is not a number": lambda data: {**data, "creativeUnitsCost": "twelve"},
    "no cost, and a job whose billing is not a number": lambda data: {
        **data, "creativeUnitsCost": None, "job": {**data["job"], "billing": {"cuCost": "x"}}},
}


def runnable_model(client) -> str:
    return next(m.id for m in client.models(public=True) if client.model(m.id).runnable and
                client.model(m.id).input("numOutputs") is not None)


@pytest.mark.parametrize("odd", list(ODD_ANSWERS))
def test_an_odd_answer_while_draining_the_queue_ends_that_request_and_never_stops_the_others(sb, client,
                                                                                            monkeypatch, odd):
    """The first request is refused with 429 and the others queue behind it; when the queue drains, the first
    one's answer is odd. It ends (its handle and its history row say so) and every request behind it is sent."""
    model = runnable_model(client)
    create = client._http.create

    def odd_for_the_first(method, path, body):
        data = create(method, path, body)  # the sandbox's 429 comes through this call, then its real answer
        return ODD_ANSWERS[odd](data) if body.get("prompt") == "odd one" else data

    monkeypatch.setattr(client._http, "create", odd_for_the_first)
    sb.inject("rate_limit", retry_after=0.5, path="/generate/custom")
    first = client.generate(model, "odd one")
    behind = [client.generate(model, f"queued behind {i}") for i in range(3)]
    assert first.status == "waiting" and all(h.status == "waiting" for h in behind), \
        [h.status for h in (first, *behind)]

    wait_all([first, *behind], timeout=15)  # before the fix: the queue stops at the first, and this times out
    assert all(h.ok and h.images for h in behind), [h.summary() for h in behind]
    assert first.done and isinstance(first.exception, OutcomeUnknownError) and first.status == "unknown"
    row = client.history.get_request(first.request_id)
    assert row is not None and row.status == "unknown" and "failed while being sent" in (row.error or "")
    assert not client.waiting() and not client.in_flight()


@pytest.mark.parametrize("odd", list(ODD_COSTS))
def test_a_queued_request_whose_answer_has_an_odd_cost_keeps_its_paid_job_in_the_history(sb, client, monkeypatch,
                                                                                          odd):
    """Refused with 429, then sent from the queue, and answered with a job and a cost that is not a number: the
    job exists and is charged, so its id is in the history row (before: the cost was read first, it raised, and
    the row said 'unknown' with no job id), and the job is followed to its end like any other."""
    model = runnable_model(client)
    create = client._http.create

    def odd_for_the_first(method, path, body):
        data = create(method, path, body)
        return ODD_COSTS[odd](data) if body.get("prompt") == "odd cost" else data

    monkeypatch.setattr(client._http, "create", odd_for_the_first)
    sb.inject("rate_limit", retry_after=0.5, path="/generate/custom")
    first = client.generate(model, "odd cost")
    behind = client.generate(model, "queued behind")
    assert first.status == "waiting" and behind.status == "waiting"
    wait_all([first, behind], timeout=15)
    created = [job_id for job_id, job in sb.jobs.items() if (job.get("body") or {}).get("prompt") == "odd cost"]
    assert len(created) == 1, "the odd answer's job was not created once"
    row = client.history.get_request(first.request_id)
    assert row is not None and row.job_id == created[0], "a paid job is not in the history"
    assert first.ok and first.images and row.status == "success"  # its cost, if known, from the job's billing
    assert behind.ok and not client.in_flight()


# -- A parallel-job limit learned from a 429 is probed again -----------------------------------------------------------

def test_a_learned_parallel_job_limit_rises_by_one_per_quiet_while_and_a_new_429_sets_it_again():
    """The limit a 429 named is kept for PROBE_SECONDS, then one more job is allowed per quiet while (no 429 naming
    the limit since); a new 429 names the limit again and the count starts over. Time is driven, not slept."""
    from scenario_nb._engine._sender import PROBE_SECONDS, JobSlots
    clock = Clock(0.0, frozen=True)
    slots = JobSlots(clock=clock)
    assert slots.limit() is None  # no 429 yet: no limit here (the server says when there is one)
    slots.learned(2)
    assert slots.limit() == 2
    clock.now += PROBE_SECONDS - 0.1
    assert slots.limit() == 2, "kept for a while"
    clock.now += 0.1
    assert slots.limit() == 3, "probed again after a quiet while"
    clock.now += PROBE_SECONDS
    assert slots.limit() == 4
    slots.learned(3)  # the server says 3 after all
    assert slots.limit() == 3
    clock.now += PROBE_SECONDS / 2
    assert slots.limit() == 3


def test_a_server_that_allows_more_jobs_again_gets_more_after_a_quiet_while(tmp_path):
    """A 429 names a limit of 2: from then on the engine holds what would exceed it. The account then allows 4.
    Right away the engine still holds the extra requests (no hammering); after a quiet while it probes, and a batch
    of 4 is sent at once with no new 429 (before: the limit of 2 was kept for the life of the kernel)."""
    from scenario_nb._engine._sender import PROBE_SECONDS
    with sandbox_mod.start(api_key=SUITE_KEY, api_secret=SUITE_SECRET, job_seconds=0.6, max_parallel_jobs=2) as sb:
        client = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=tmp_path)
        clock = Clock(time.monotonic())
        client._engine._sender._slots.clock = clock  # the engine's own clock for the limit, driven here
        try:
            model = runnable_model(client)
            wait_all(client.generate_many(model, [f"a first crate {i}" for i in range(5)]), timeout=60)
            assert sb.stats()["rate_limited"], "the limit was never named"
            sb.state.options["max_parallel_jobs"] = 4  # the account allows more now

            soon = client.generate_many(model, [f"a second crate {i}" for i in range(4)])
            held = sum(h.status == "waiting" for h in soon)  # 2, or 3 while a first job's slot is not yet free
            assert held >= 2, "the learned limit was not kept for a while"
            wait_all(soon, timeout=60)
            refused = len(sb.stats()["rate_limited"])

            clock.now += 2 * PROBE_SECONDS  # a quiet while: probed twice, 2 -> 4
            later = client.generate_many(model, [f"a third crate {i}" for i in range(4)])
            assert not [h for h in later if h.status == "waiting"], [h.status for h in later]
            wait_all(later, timeout=60)
            assert len(sb.stats()["rate_limited"]) == refused, "the probe was refused: it hammered the server"
            assert sb.stats()["jobs_created"] == 13
        finally:
            client.close()
