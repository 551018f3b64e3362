"""A smaller fault soak: nothing lost, no duplicate paid job, no POST sooner than the backoff after a 429, and no
paid job the caller was not told of."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak  # noqa: E402


def test_soak_loses_nothing_and_never_pays_twice():
    result = soak.soak(60, seed=3, search_seconds=8)  # a lost answer is looked for 8 s here, not 75
    assert result["lost"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["early_requests"] == 0, result
    assert result["paid_unknown"] == 0, result  # every job the sandbox charged is one the caller holds
    assert result["clean_failures_charged"] == 0, result  # "nothing was charged" was true each time
    assert result["succeeded"] + result["failed_clearly"] == 60
    assert sum(result["faults_injected"].values()) > 5, "the soak injected too few faults to mean anything"
