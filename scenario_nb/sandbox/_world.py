"""One sandbox world per home: the embedded sandbox every credential-less kernel of a `SCENARIO_NB_HOME` shares.

Why a server per home rather than a shared file each kernel's own sandbox reads and writes: the sandbox keeps
its state in memory behind one lock and derives jobs and trainings from the clock; one process owning it keeps
that exactly as it is (no merge of two kernels' edits, no file lock around every request), and a kernel only
needs an address. So the first kernel of a home starts `python -m scenario_nb.sandbox --home HOME` as a
process of its own; later kernels find it in `HOME/sandbox/server.json` and use it:

- `server.lock` is held by the running server (a second one for the same home gives up); `start.lock` is held
  by whoever starts or stops a server, so two kernels starting at once start one.
- Each kernel using it leaves `clients/<pid>-<token>`; the server stops a few seconds after the last of those
  processes ended (a kernel restart comes back within them, or starts it again).
- The server saves the world under `HOME/sandbox/` (`_world_store`) within half a second of any request and
  when it stops, and loads it when it starts: a restart of either side loses nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ._world_os import pid_alive, try_lock, unlock
from ._world_store import WorldStore, contents, describe, erase, summary

KEY, SECRET = "sandbox-key", "sandbox-secret"  # the embedded sandbox's own credentials (not a user's)
SAVE_EVERY = 0.5  # seconds
UNUSED_GRACE = 10.0  # seconds the server waits, with no kernel left, before it stops


def folder_of(home: Path) -> Path:
    return Path(home) / "sandbox"


@contextmanager
def _locked(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """An exclusive lock on `path` (released when the process ends, even killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            if try_lock(handle):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} stayed locked for {timeout:g} s")
            time.sleep(0.05)
        try:
            yield
        finally:
            unlock(handle)


def _address(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _call(url: str, method: str = "GET", body: Optional[dict] = None, timeout: float = 10.0) -> dict:
    token = b64encode(f"{KEY}:{SECRET}".encode()).decode()
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (loopback, our own server)
        return json.loads(answer.read() or b"{}")


def _answers(address: Optional[dict]) -> bool:
    if not address or not pid_alive(int(address.get("pid", 0))):
        return False
    try:
        _call(address["url"] + "/_sandbox/world", timeout=5)
        return True
    except (OSError, ValueError):
        return False


# -- the server process ------------------------------------------------------------------------------------

class World:
    """The running server's side: saves its sandbox's state, resets it, stops when no kernel uses it."""

    def __init__(self, sandbox: Any, folder: Path) -> None:
        self.sandbox, self.folder = sandbox, folder
        self.store = WorldStore(folder)
        self.lock = threading.Lock()  # a save and a reset never overlap
        self.stopping = threading.Event()  # the loops below end
        self._saved_last = False

    def save(self) -> None:
        with self.lock:
            self.store.save(self.sandbox.state)
            self.store.forget_unused_blobs()

    def reset(self) -> dict:
        """Start the world afresh; returns what it held (counted) and says so."""
        from ._state import State
        with self.lock:
            old = self.sandbox.state
            removed = contents(old)
            self.sandbox.state = State(self.sandbox.options)
            old.release()
            old.close()
            erase(self.folder)
            self.store = WorldStore(self.folder)
            self.store.save(self.sandbox.state)
        return {"removed": removed, "message": describe(removed)}

    def info(self) -> dict:
        return {"folder": str(self.folder), "pid": os.getpid(), "contents": contents(self.sandbox.state)}

    def keep_saved(self) -> None:
        seen = -1
        while not self.stopping.wait(SAVE_EVERY):
            state = self.sandbox.state
            activity = len(state.requests) + len(state.cdn_requests)
            if activity != seen:
                seen = activity
                self.save()

    def users(self) -> list[int]:
        """The processes that use this world now (a client file left by one that ended is removed)."""
        alive = []
        clients = self.folder / "clients"
        for path in clients.iterdir() if clients.is_dir() else []:
            pid_text = path.name.split("-")[0]
            pid = int(pid_text) if pid_text.isdigit() else 0
            if pid and pid_alive(pid):
                alive.append(pid)
            else:
                path.unlink(missing_ok=True)
        return alive

    def wait_until_unused(self, grace: float) -> None:
        unused_since: Optional[float] = None
        while not self.stopping.wait(1.0):
            if self.users():
                unused_since = None
                continue
            unused_since = unused_since or time.monotonic()
            if time.monotonic() - unused_since < grace:
                continue
            try:
                with _locked(self.folder / "start.lock", timeout=0.5):  # nobody is connecting meanwhile
                    if not self.users():
                        self.stop()
                        return
            except TimeoutError:
                pass

    def stop(self) -> None:
        """Save, and take the address down (under `start.lock` when stopping for lack of users)."""
        self.stopping.set()
        if self._saved_last:
            return
        self._saved_last = True
        self.save()
        address = _address(self.folder)
        if address and address.get("pid") == os.getpid():
            (self.folder / "server.json").unlink(missing_ok=True)


def serve(home: Path, *, port: int = 0, exit_when_unused: bool = False, grace: float = UNUSED_GRACE,
          **options: Any) -> int:
    """`python -m scenario_nb.sandbox --home HOME`: serve HOME's world until Ctrl-C (or, started by a kernel,
    until no kernel uses it)."""
    import signal

    from . import start
    options.setdefault("demo_training", True)  # a newcomer's world: its demo training moves on and ends
    folder = folder_of(home)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.lock", "a+") as held:
        deadline = time.monotonic() + 3.0
        while True:
            if try_lock(held):
                break
            if time.monotonic() > deadline:
                print(f"a sandbox already serves {folder}: {(_address(folder) or {}).get('url')}", flush=True)
                return 1
            time.sleep(0.05)
        try:
            sandbox = start(port=port, api_key=KEY, api_secret=SECRET, **options)
        except OSError:  # the port it had before is taken now
            sandbox = start(port=0, api_key=KEY, api_secret=SECRET, **options)
        world = sandbox.world = World(sandbox, folder)
        loaded = world.store.load(sandbox.state)
        world.save()
        address = {"pid": os.getpid(), "url": sandbox.url, "cdn_url": sandbox.cdn_url, "started": time.time()}
        partial = folder / "server.json.partial"
        partial.write_text(json.dumps(address))
        os.replace(partial, folder / "server.json")
        print(f"Scenario sandbox API: {sandbox.url}", flush=True)
        print(f"world: {folder} ({'holds ' + summary(contents(sandbox.state)) if loaded else 'new'})", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: world.stopping.set())
        threading.Thread(target=world.keep_saved, name="scenario-world-save", daemon=True).start()
        try:
            if exit_when_unused:
                world.wait_until_unused(grace)
            else:
                while not world.stopping.wait(0.5):
                    pass
        except KeyboardInterrupt:
            pass
        world.stop()
        sandbox.stop()
    return 0


# -- the kernel's side -------------------------------------------------------------------------------------

class WorldHandle:
    """A kernel's handle on its home's world server: its address and credentials, and the same fault and log
    controls as `Sandbox` (through the server's `/v1/_sandbox` routes)."""

    api_key, api_secret = KEY, SECRET

    def __init__(self, folder: Path, address: dict, process: Optional[subprocess.Popen]) -> None:
        self.folder, self.url, self.cdn_url = folder, address["url"], address["cdn_url"]
        self.pid = int(address["pid"])
        self._process = process  # when this kernel started it: reaped here, so a dead server is seen dead
        # One file per handle: a retired session of this kernel letting go must not let go for the new one.
        self._client_file = folder / "clients" / f"{os.getpid()}-{secrets.token_hex(4)}"

    def __repr__(self) -> str:
        return f"<sandbox world {self.folder} at {self.url}>"

    def alive(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            return False
        return pid_alive(self.pid)

    def stop(self) -> None:
        """This kernel no longer uses the world (the server stops once no kernel does)."""
        self._client_file.unlink(missing_ok=True)

    def _sandbox(self, path: str = "", body: Optional[dict] = None) -> dict:
        return _call(f"{self.url}/_sandbox{path}", "GET" if body is None else "POST", body)

    def inject(self, kind: str, **options: Any) -> None:
        self._sandbox("/faults", {"kind": kind, **options})

    def release(self) -> None:
        self._sandbox("/release", {})

    def stats(self) -> dict:
        return self._sandbox()["stats"]

    @property
    def generate_posts(self) -> int:
        return self.stats()["generate_posts"]

    @property
    def requests(self) -> list:
        return self._sandbox()["requests"]

    def wait_held(self, method: Optional[str] = None, path: Optional[str] = None, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = [r for r in self._sandbox()["held"] if (method is None or r["method"] == method)
                    and (path is None or path in r["path"])]
            if held:
                return held[0]
            time.sleep(0.05)
        raise TimeoutError(f"no {method or ''} {path or 'request'} was held within {timeout:g} s")


def connect(home: Path, *, job_seconds: float = 3.0, job_jitter: float = 0.0,
            train_seconds: Optional[float] = 30.0, timeout: float = 60.0) -> WorldHandle:
    """The home's world server: the running one, or one started now (and this process counted as its user)."""
    folder = folder_of(home)
    with _locked(folder / "start.lock", timeout):
        address, process = _address(folder), None
        if not _answers(address):
            process = _spawn(home, folder, address, job_seconds, job_jitter, train_seconds)
            deadline = time.monotonic() + timeout
            while True:
                address = _address(folder)
                if address and address.get("pid") == process.pid and _answers(address):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the embedded sandbox did not start (see {folder / 'server.log'}):\n{log}")
                time.sleep(0.05)
        assert address is not None
        handle = WorldHandle(folder, address, process)
        handle._client_file.parent.mkdir(parents=True, exist_ok=True)
        handle._client_file.touch()
    return handle


def _spawn(home: Path, folder: Path, address: Optional[dict], job_seconds: float, job_jitter: float,
           train_seconds: Optional[float]) -> subprocess.Popen:
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                       if p))
    # A fresh seed per start: the history outlives every server, so no id may come back (ids are salted too).
    command = [sys.executable, "-m", "scenario_nb.sandbox", "--home", str(home), "--exit-when-unused",
               "--port", str(_port_of(address)), "--job-seconds", str(job_seconds), "--jitter", str(job_jitter),
               "--seed", str(secrets.randbelow(2 ** 31))]
    if train_seconds is not None:
        command += ["--train-seconds", str(train_seconds)]
    with open(folder / "server.log", "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _port_of(address: Optional[dict]) -> int:
    """The port a dead server had (kernels that still hold its address reach the new one), else any."""
    try:
        return int(str(address["url"]).split(":")[2].split("/")[0]) if address else 0
    except (IndexError, ValueError, KeyError):
        return 0


def reset(home: Path) -> str:
    """Empty the home's world (through its server when one runs); says what was removed."""
    folder = folder_of(home)
    with _locked(folder / "start.lock"):
        address = _address(folder)
        if _answers(address):
            assert address is not None
            return _call(address["url"] + "/_sandbox/reset", "POST", {})["message"]
        from ._state import State
        state = State({"seed": 0, "demo_training": True})  # to count what the saved world holds
        try:
            counts = contents(state) if WorldStore(folder).load(state) else None
        finally:
            state.close()
        erase(folder)
        return describe(counts)
