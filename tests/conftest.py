"""Shared fixtures: a real sandbox over loopback, an isolated home, and a real IPython shell.

Every sandbox here uses distinctive credentials (`SUITE_KEY`, `SUITE_SECRET`, and whatever a test adds to
`SECRETS`), and every exception the package, IPython, traitlets or requests constructs during a test is turned
into text (message, repr, traceback) when that test ends: if any of them holds a secret, that test errors. So the
check covers the whole suite, in any order and any subset, and test_secrets provokes exceptions of its own.

`require(module)` is `pytest.importorskip` that fails instead of skipping under CI (CI=true).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import ipywidgets as w
import pytest
import requests
import traitlets
from IPython.core.error import UsageError

from scenario_nb import ScenarioError, _session
from scenario_nb._engine import Clock as EngineClock
from scenario_nb import sandbox as sandbox_mod

# Bytecode is cached for this run (gitignored __pycache__): with PYTHONDONTWRITEBYTECODE=1, as some machines set
# it, every worker, kernel and sandbox process would compile the package again, and every worker would
# assertion-rewrite every test module again. Set before the xdist workers start: they and their children inherit it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parents[1]
CREDENTIAL_VARS = ("SCENARIO_API_KEY", "SCENARIO_API_SECRET", "SCENARIO_API_URL", "SCENARIO_SDK_API_KEY",
                   "SCENARIO_SDK_API_SECRET", "SCENARIO_BASE_URL")


SUITE_KEY, SUITE_SECRET = "sk_SUITE_key_6b1f93d0c7", "ss_SUITE_secret_e2a48c5f19"
SECRETS: set = {SUITE_KEY, SUITE_SECRET, "sandbox-key", "sandbox-secret"}  # the last two: the sandbox defaults
_raised_now: list = []  # exceptions constructed since the current test started


def _record_construction(cls) -> None:
    """Wrap `cls.__init__` so every instance (subclasses included) is remembered until the test ends."""
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _raised_now.append(self)

    cls.__init__ = __init__


for _cls in (ScenarioError, UsageError, traitlets.TraitError, requests.RequestException):
    _record_construction(_cls)


def exception_text(exc: BaseException) -> str:
    """Everything a user could see of an exception: its traceback, message and repr."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def secrets_in(text: str) -> list:
    """The first characters of each known secret the text holds (never the whole secret)."""
    return sorted(secret[:6] for secret in SECRETS if secret in text)


def recorded_exceptions() -> list:
    """The exceptions constructed so far in the running test (test_secrets reads them)."""
    return list(_raised_now)


def forget_recorded_exceptions() -> None:
    """For the recorder's own test, which plants a leak on purpose."""
    _raised_now.clear()


@pytest.fixture(autouse=True)
def _no_secret_in_exceptions(request):
    """After each test: fail it if an exception it constructed holds a secret, then let the objects go."""
    _raised_now.clear()
    yield
    found = []
    for exc in _raised_now:
        with contextlib.suppress(Exception):  # half-built exceptions (a failed __init__) can't be shown anyway
            if secrets_in(exception_text(exc)):
                found.append((type(exc).__name__, secrets_in(exception_text(exc))))
    _raised_now.clear()
    if found:
        pytest.fail(f"exceptions built during {request.node.nodeid} hold a secret: {found}", pytrace=False)


def require(module: str):
    """Import a test dependency; without it skip, except under CI, where a skip would hide tests that never ran."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not importable ({exc}); pip install -e '.[test]'"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI must run these tests: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def user_machine(tmp_path_factory):
    """The one fresh virtual environment of the run, set up as Binder, PyPI and the README do, with every
    notebook executed once in it (see tests/user_machine.py)."""
    from user_machine import set_up
    return set_up(tmp_path_factory.mktemp("user-machine"))


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """No cyclic GC while collecting, then everything collection built is frozen out of its sight (gc.freeze).

    Collecting imports every test module (the SDK's pydantic models, Jupyter, jsonschema's grammars): the GC
    would walk that growing heap again and again, half of each xdist worker's collection CPU, and every full
    collection during the tests (pytest's own five at exit among them) would walk it once more."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.freeze()
        gc.enable()


def pytest_configure(config):
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        rewrite_test_modules_once(config)


def rewrite_test_modules_once(config) -> None:
    """Write pytest's cached, assert-rewritten test modules in the xdist controller, before its workers start.

    On a fresh checkout each of the six workers would otherwise rewrite all of them itself: ~5 s of CPU each,
    where compiling is 0.3 s. This uses pytest's internals; when they change, the workers rewrite as before."""
    try:
        from _pytest.assertion.rewrite import (PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc, assertstate_key,
                                               get_cache_dir, try_makedirs)
        state = config.stash[assertstate_key]
    except (ImportError, KeyError):
        return
    if sys.dont_write_bytecode or config.getoption("assertmode") != "rewrite":
        return
    for source in sorted(Path(__file__).parent.glob("test_*.py")):
        cached = get_cache_dir(source) / f"{source.stem}{PYC_TAIL}"
        if _read_pyc(source, cached) is None and try_makedirs(cached.parent):
            stat, code = _rewrite_test(source, config)
            _write_pyc(state, code, stat, cached)


DURATIONS = Path(__file__).with_name("durations.json")
_measured: dict = {}


def pytest_addoption(parser):
    parser.addoption("--record-durations", action="store_true",
                     help=f"write the tests that took over 2 s, and how long, to {DURATIONS.name} (the order "
                          "the next runs start them in)")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Keep what shares a costly set-up on one xdist worker (`--dist loadgroup`): every reader of
    `user_machine` (built once per worker that asks for it), and the browser tests (a JupyterLab and a
    Chromium each: two at once would starve a 2-CPU machine).

    Then start the longest tests first (their last run's figures, tests/durations.json), the rest after them
    in pytest-randomly's order: a 90 s test begun last would end the run 90 s late while the other workers
    sit idle. xdist hands out its groups first and the single tests in this order."""
    known = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    items.sort(key=lambda item: -known.get(item.nodeid, 0.0))  # stable: the unknown keep their random order
    for item in items:
        if "user_machine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("user_machine"))
            item.add_marker(pytest.mark.timeout(900))  # the first reader waits for every install
        elif item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group("browser"))


def reset_session() -> None:
    _session.reset()


class Clock:
    """A sandbox clock a test moves by hand (`clock.now += 30`), so a list lag, a rate-limit window or a
    training stage is skipped instead of slept through. It runs with real time unless made `frozen`, when it
    moves only by hand (every date the sandbox hands out is then known exactly)."""

    def __init__(self, start: Optional[float] = None, *, frozen: bool = False) -> None:
        self.frozen = frozen
        self._offset = (time.time() if start is None else start) - self._real()

    def _real(self) -> float:
        return 0.0 if self.frozen else time.monotonic()

    def __call__(self) -> float:
        return self._real() + self._offset

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        self._offset = value - self._real()


@pytest.fixture
def clock() -> Clock:
    return Clock()


class SteppedClock(EngineClock):
    """One clock for an engine and its sandbox (`ScenarioClient(..., clock=c)`, `sandbox.start(clock=c.time)`)
    that stands still while the engine works and, once its task queues are idle, jumps to the next task due:
    what the scheduler decides at a given moment no longer depends on how busy the machine is, and a test
    waits no sandbox time. `run_until(done)` moves it; nothing else does."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._start, self._now = start, 0.0
        self._lanes: list = []
        self._waiting: set = set()  # the conditions engine workers wait on, woken at every move
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._start + self._now

    def monotonic(self) -> float:
        return self._now

    def wait(self, condition: threading.Condition, timeout: float) -> None:
        with self._lock:
            self._waiting.add(condition)
        condition.wait(1.0)  # woken by a move (or a new task); the worker then reads this clock again

    def watch(self, lanes) -> None:
        self._lanes.append(lanes)

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        """Let the engine work, moving the clock each time it has nothing to do now, until `done()`."""
        self._run(done, float("inf"), timeout)

    def run_for(self, seconds: float, timeout: float = 60.0) -> None:
        """Let the engine work until this clock has moved `seconds` on."""
        self._run(lambda: False, self._now + seconds, timeout)

    def _run(self, done: Callable[[], bool], to: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dues = [lanes.idle_until() for lanes in self._lanes]
            if done():  # asked after the queues: a task that ended before they were read shows in `done()`
                return
            assert time.monotonic() < deadline, f"not done after {timeout:g} s of real time"
            if None in dues:  # a task runs or is due: it goes first
                time.sleep(0.001)
                continue
            if self._now >= to:
                return
            due = min([to, *dues])
            assert due != float("inf"), "nothing is scheduled and the condition never came"
            self._now = max(self._now, due)
            with self._lock:
                waiting = list(self._waiting)
            for condition in waiting:
                with condition:
                    condition.notify_all()


@pytest.fixture
def sandbox():
    with sandbox_mod.start(job_seconds=0.3, job_jitter=0.1, seed=11, api_key=SUITE_KEY,
                           api_secret=SUITE_SECRET) as server:
        yield server


@pytest.fixture
def sb():
    """A sandbox of its own (not the shared session's), for tests of the client itself."""
    with sandbox_mod.start(job_seconds=0.3, seed=1, api_key=SUITE_KEY, api_secret=SUITE_SECRET) as server:
        yield server


@pytest.fixture
def client(sb, tmp_path):
    """A client of its own on `sb`, with its history and outputs under tmp_path."""
    from scenario_nb import ScenarioClient
    c = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=tmp_path)
    yield c
    c.close()


def point_session_at(server, home: Path, monkeypatch) -> None:
    """Credentials and home in the environment, as a user sets them: the next session uses `server`."""
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCENARIO_API_KEY", server.api_key)
    monkeypatch.setenv("SCENARIO_API_SECRET", server.api_secret)
    monkeypatch.setenv("SCENARIO_API_URL", server.url)
    monkeypatch.setenv("SCENARIO_NB_HOME", str(home))
    reset_session()


@pytest.fixture
def env(sandbox, tmp_path, monkeypatch):
    """The shared session pointed at the sandbox, with history and images under tmp_path."""
    point_session_at(sandbox, tmp_path / "home", monkeypatch)
    yield sandbox
    reset_session()


@pytest.fixture
def ip(env):
    """A real IPython shell with the extension loaded."""
    from IPython.testing.globalipapp import get_ipython
    shell = get_ipython()
    from scenario_nb._magics import ScenarioMagics
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]
    shell.config.pop("ScenarioMagics", None)
    import scenario_nb
    scenario_nb.load_ipython_extension(shell)  # a fresh ScenarioMagics each test, as %load_ext makes
    names = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - names:  # the shell is shared: what a test's cells named is not the next one's
        del shell.user_ns[name]
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, ScenarioMagics)]


@pytest.fixture
def shown(monkeypatch):
    """What a %%scenario cell hands to the display (handles, wait, thumbnail size, the after-callback), instead of
    drawing."""
    from scenario_nb import _cells
    calls: list = []
    monkeypatch.setattr(_cells, "show_generations", lambda handles, **kw: calls.append(("generations", handles, kw)))
    monkeypatch.setattr(_cells, "show_grid", lambda grid, **kw: calls.append(("grid", grid, kw)))
    return calls


class FakeComm:
    """Stands in for the kernel's comm: widgets keep state, nothing is sent anywhere."""

    kernel = "fake"

    def __init__(self, *args, **kwargs):
        self.comm_id = f"fake-{uuid.uuid4().hex}"
        self.messages = []

    def open(self, *args, **kwargs):
        pass

    def on_msg(self, *args, **kwargs):
        pass

    def send(self, *args, **kwargs):
        self.messages.append((args, kwargs))

    def close(self, *args, **kwargs):
        pass


@pytest.fixture
def fake_comm(monkeypatch):
    """Widgets without a kernel, as ipywidgets' own tests make them."""
    import comm
    monkeypatch.setattr(comm, "create_comm", lambda **kw: FakeComm())
    monkeypatch.setattr(w.widgets.widget, "comm", comm, raising=False)
    yield
    w.Widget.close_all()  # else their __del__ complains at interpreter exit


def until(condition: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
    """Wait for `condition()` to be true (checked every 20 ms); returns it. A wait on an effect, not a guess."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never came within {timeout:g} s")
        time.sleep(0.02)
    return value


@contextlib.contextmanager
def ctrl_c_at(point: Callable[[], Any]):
    """Press Ctrl-C (SIGINT to the main thread, as a terminal does) once `point()` returns: the code in the
    block is interrupted at a named point (e.g. `sb.wait_held(...)`), not after a guessed delay. Never after
    the block ended; a point that never came fails the test."""
    closed, failed, lock = [False], [], threading.Lock()
    # A terminal's Ctrl-C raises KeyboardInterrupt in the main thread: make it so here. A run started in the
    # background (`cmd &` in a script) inherits SIGINT ignored, and Python then leaves it ignored: a press did
    # nothing unless an earlier test in the worker had happened to set the default handler (two failed one run).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    if handler not in (signal.default_int_handler, signal.SIG_IGN) or blocked:  # another test's leftover
        warnings.warn(f"SIGINT was {'blocked' if blocked else 'unblocked'} with handler {handler!r}; set to the "
                      f"default for this press", stacklevel=3)

    def press() -> None:
        try:
            point()
        except BaseException as exc:  # reported by the test thread
            failed.append(exc)
            return
        with lock:
            if not closed[0]:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    presser = threading.Thread(target=press, name="ctrl-c-at", daemon=True)
    presser.start()
    try:
        yield
    finally:
        with lock:
            closed[0] = True
        signal.signal(signal.SIGINT, handler)
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
    presser.join(timeout=60)
    assert not failed, f"the point to interrupt at never came: {failed[0]!r}"


class RemoteSandbox:
    """The fault and log controls of a sandbox in another process (a kernel's embedded one, or
    `spawn_sandbox`'s), through its sandbox-only routes: the same names as `Sandbox`'s."""

    def __init__(self, url: str, key: str, secret: str) -> None:
        self.url, self.auth = url, (key, secret)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        response = requests.request(method, f"{self.url}/_sandbox{path}", auth=self.auth, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def inject(self, kind: str, **options: Any) -> None:
        self._call("POST", "/faults", json={"kind": kind, **options})

    def release(self) -> None:
        self._call("POST", "/release")

    def stats(self) -> dict:
        return self._call("GET", "")["stats"]

    def wait_held(self, method: Optional[str] = None, path: Optional[str] = None, timeout: float = 30.0) -> dict:
        def matching() -> Optional[dict]:
            return next((r for r in self._call("GET", "")["held"] if (method is None or r["method"] == method)
                         and (path is None or path in r["path"])), None)
        return until(matching, timeout, f"a held {method or ''} {path or 'request'}")


REFUSED = ("127.0.0.1", 9)


@pytest.fixture
def refused_port(monkeypatch) -> list:
    """Every TCP connection to 127.0.0.1:9 is refused, and recorded in the list returned. Other addresses connect
    as usual: a thread left by an earlier test in this worker may still be polling its own server."""
    import urllib3.connection
    real = urllib3.connection.connection.create_connection
    attempts = []

    def refuse_port_9(address, *args, **kwargs):
        if tuple(address) != REFUSED:
            return real(address, *args, **kwargs)
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused")
    monkeypatch.setattr(urllib3.connection.connection, "create_connection", refuse_port_9)
    return attempts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def spawn_sandbox(key: str = SUITE_KEY, secret: str = SUITE_SECRET, job_seconds: str = "1", log=None,
                  train_seconds: str = "", extra_args: tuple = ()):
    """The sandbox as its own process, so it outlives kernels (as the real cloud does); `train_seconds` sets
    how long a training takes there, `extra_args` adds command-line options."""
    SECRETS.update((key, secret))
    extra = (["--train-seconds", train_seconds] if train_seconds else []) + list(extra_args)
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--port", "0", "--api-key", key,
                             "--api-secret", secret, "--job-seconds", job_seconds, *extra], stdout=subprocess.PIPE,
                            stderr=log, text=True)
    try:
        url = None
        deadline = time.time() + 30
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
            url = found[1] if found else None
        assert url, "the sandbox did not start"
        yield {"url": url, "key": key, "secret": secret, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def sandbox_process():
    with spawn_sandbox() as server:
        yield server


def kernel_env(home: Path, server: dict = None, job_seconds: str = "1") -> dict:
    """A kernel environment: no credentials (embedded sandbox) or the given sandbox process."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update({"SCENARIO_NB_HOME": str(home), "SCENARIO_NB_SANDBOX_JOB_SECONDS": job_seconds})
    if server:
        env.update({"SCENARIO_API_URL": server["url"], "SCENARIO_API_KEY": server["key"],
                    "SCENARIO_API_SECRET": server["secret"]})
    return env


def kernel_manager():
    """A python3 kernel manager whose kernel listens on Unix sockets, not TCP ports.

    Over TCP, jupyter_client picks five free ports and lets them go before the kernel binds them; in a suite
    making thousands of loopback connections, one was taken in between and the kernel died of "Address already
    in use". A socket path holds at most 107 bytes: the folder is a short one under the system's temp dir."""
    from jupyter_client.manager import KernelManager
    folder = tempfile.mkdtemp(prefix="kernel-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(folder, "ipc"))


class Kernel:
    """A real IPython kernel (jupyter_client), to run cells as a notebook does."""

    def __init__(self, env: dict) -> None:
        self.km = kernel_manager()
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
        except RuntimeError:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
            raise

    def run(self, code: str, allow_errors: bool = False) -> list:
        outputs = []

        def hook(msg):
            if msg["msg_type"] in ("stream", "display_data", "execute_result", "error", "update_display_data"):
                outputs.append(msg["content"])

        self.kc.execute_interactive(code, timeout=180, output_hook=hook)
        errors = [o for o in outputs if "ename" in o]
        assert allow_errors or not errors, errors and errors[0]["evalue"]
        return outputs

    def run_interrupted(self, code: str, at: Callable[[], Any], then: Optional[Callable[[], Any]] = None,
                        timeout: float = 60) -> list:
        """Run a cell and press Ctrl-C (SIGINT to the kernel) once `at()` returns: a named point of the cell,
        e.g. `lambda: remote.wait_held("PUT", "/train")` (the sandbox holds that answer), never a delay.
        `then()` runs right after, e.g. to release answers the interrupted cell still waits for."""
        msg_id = self.kc.execute(code)
        at()
        self.km.interrupt_kernel()
        if then is not None:
            then()
        outputs = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = self.kc.get_iopub_msg(timeout=deadline - time.time())
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] in ("stream", "display_data", "execute_result", "error", "update_display_data"):
                outputs.append(msg["content"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return outputs
        raise AssertionError("the interrupted cell never finished")

    def kill(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def text_of(outputs: list) -> str:
    """Everything a cell printed or displayed as text (tracebacks included)."""
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") or
                     "\n".join(o.get("traceback", [])) for o in outputs)


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call", "teardown"):
        nodeid = report.nodeid.split("@")[0]
        _measured[nodeid] = _measured.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    if session.config.getoption("--record-durations") and not hasattr(session.config, "workerinput"):
        long_ones = {k: round(v, 1) for k, v in sorted(_measured.items(), key=lambda kv: -kv[1]) if v >= 2.0}
        DURATIONS.write_text(json.dumps(long_ones, indent=0) + "\n")


from ledger_parts import history, ledger, live, log_lines  # noqa: E402, F401  (fixtures of tests/test_mutants*.py)
