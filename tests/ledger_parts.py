"""What the in-process tests of the engine's parts share (tests/test_mutants*.py): a real history and ledger on a
made-up backend, and the package's log lines as a list. The conftest hands the fixtures to every test module."""

from __future__ import annotations

import logging

import pytest

from scenario_nb._engine._ledger import Ledger
from scenario_nb._engine._live import LiveRequests
from scenario_nb._history import History

URL = "http://127.0.0.1:1/v1"
BACKEND = URL + "#key1"  # a backend: its URL and a digest of its key


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "h.sqlite")
    yield h
    h.close()


@pytest.fixture
def live():
    return LiveRequests()


@pytest.fixture
def ledger(history, live):
    return Ledger(lambda: history, live, backend_id=BACKEND, base_url=URL)


class LogLines(logging.Handler):
    """The package's log lines, as formatted (its logger does not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler = LogLines()
    logger = logging.getLogger("scenario_nb")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


class ModuleClock:
    """Both clocks of a module (`time.time`, `time.monotonic`), moved by the test."""

    def __init__(self, wall: float = 1_000_000.0, mono: float = 5_000.0) -> None:
        self.wall, self.mono = wall, mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds
