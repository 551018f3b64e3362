"""The 429 queue: requests refused with 429 wait here in order and are sent once the creation gate opens.

One request whose answer is odd (a body that is not an object) ends with an error of its own, recorded in the
history, and never stops the requests queued behind it. An answer that names its job is never odd enough to lose
the job: its id is written first, and a cost that is not a number is only a cost not known.
"""

from __future__ import annotations

import pytest

from scenario_nb import OutcomeUnknownError, wait_all

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
    created = [job_id for job_id, job in sb.jobs.items() if job["body"].get("prompt") == "odd cost"]
    assert len(created) == 1, "the odd answer's job was not created once"
    row = client.history.get_request(first.request_id)
    assert row is not None and row.job_id == created[0], "a paid job is not in the history"
    assert first.ok and first.images and row.status == "success"  # its cost, if known, from the job's billing
    assert behind.ok and not client.in_flight()
