"""The 429 queue: requests refused with 429 wait here in order and are sent once the creation gate opens.

One request whose answer is odd (a cost that is not a number, a body that is not an object) ends with an
error of its own, recorded in the history, and never stops the requests queued behind it.
"""

from __future__ import annotations

import pytest

from scenario_nb import OutcomeUnknownError, wait_all

ODD_ANSWERS = {
    "a cost that is not a number": lambda data: {**data, "creativeUnitsCost": "twelve"},
    "a body that is not an object": lambda data: ["not", "an", "object"],
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
