"""A smaller fault soak: nothing lost, no duplicate paid job, no request before a Retry-After allowed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak  # noqa: E402


def test_soak_loses_nothing_and_never_pays_twice():
    result = soak.soak(60, seed=3)
    assert result["lost"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["early_requests"] == 0, result
    assert result["succeeded"] + result["failed_clearly"] == 60
    assert sum(result["faults_injected"].values()) > 5, "the soak injected too few faults to mean anything"
