"""Tests written to kill mutants of the client (scenario_nb/_client*.py)
that the rest of the suite let live (tests/mutants-equivalent.md). Each checks by effect: the requests a
loopback server received, their headers, the waits asked for, the errors raised."""

from __future__ import annotations
