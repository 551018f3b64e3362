"""One fresh machine for the whole run: a clean copy of the checkout and one new virtual environment on the
oldest Python that `requires-python` admits, set up in turn as Binder, PyPI and the README set it up.

Building environments and running notebooks are the slowest things the suite does, so each is done once
(conftest's session fixture `user_machine`, which keeps every test that reads it on one xdist worker), and
the tests of test_binder, test_package, test_readme, test_notebooks and test_secrets read what it recorded:

1. Binder: `pip install -r binder/requirements.txt`, then `binder/postBuild`, as repo2docker does.
2. Every notebook, executed once through `binder/start` in that image, with no credentials (so on the
   embedded sandbox), one home for all as a user has, widget state saved, kernel logs at DEBUG kept.
3. PyPI: `python -m build` (the sdist, then the wheel from it; uv installs its isolated build environments),
   the wheel installed over Binder's install and driven end to end by SMOKE.
4. The README's main job: its install half as typed, on top (an editable install of the copy);
   test_readme then starts JupyterLab from it.

Each stage adds to an environment that already holds the previous one: a stage that only works because an
earlier one installed something would pass here and fail alone. test_readme's check of the dev extra and
test_binder's of requirements.txt read the files themselves for that reason.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import CREDENTIAL_VARS, ROOT

INSTALL_TIMEOUT = 300
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Data files a colleague could add to the sandbox (a sample video, fixtures), also in a sub-folder: the copy
# that is built gets one of each kind, so the packaging rules are proven before such a file is committed.
PROBES = ("scenario_nb/sandbox/_package_probe.json", "scenario_nb/sandbox/_package_probe.mp4",
          "scenario_nb/sandbox/media/_package_probe.mp4")


def readme_commands() -> list:
    """The one-line commands of the README's shell blocks that start with `pip install`, in order: the main
    job, then the tests."""
    blocks = re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.strip().splitlines()]
    return [line for line in lines if line.startswith("pip install")]


PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
UV_CACHE = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")


def clean_copy(dest: Path) -> Path:
    """The working tree as a fresh clone would have it: tracked and new unignored files, no .git, no builds."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def venv_env(bin_dir: Path, home: Path, **extra: str) -> dict:
    """The environment of a shell in that venv: its bin first on PATH, a private HOME, no credentials. pip and uv
    keep this machine's download caches (what `.ci/run` just installed is not fetched again) and skip
    byte-compiling: Python compiles what it imports, once (PYTHONDONTWRITEBYTECODE is dropped: with it, every
    kernel and server in the venv would compile JupyterLab's modules again). Both change how fast a package
    arrives, not which one."""
    env = {k: v for k, v in os.environ.items()
           if k not in CREDENTIAL_VARS and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    home.mkdir(parents=True, exist_ok=True)
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(bin_dir.parent),
                "HOME": str(home), "PIP_NO_INPUT": "1", "PIP_CACHE_DIR": PIP_CACHE,
                "PIP_COMPILE": "0", "UV_CACHE_DIR": UV_CACHE, **extra})  # pip reads PIP_NO_COMPILE=1 as "compile"
    return env


def sh(args, *, cwd: Path, env: dict, timeout: float = INSTALL_TIMEOUT, shell: bool = False) -> str:
    """Run a command; on failure, fail with its output."""
    proc = subprocess.run(args, cwd=cwd, env=env, timeout=timeout, shell=shell, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          executable="/bin/bash" if shell else None)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc.stdout


def requires_python() -> tuple:
    """The lower bound of requires-python in pyproject.toml, e.g. (3, 10)."""
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, flags=re.M)
    assert found, "requires-python must be a plain lower bound, >=X.Y"
    return int(found[1]), int(found[2])


def oldest_python() -> str:
    """An interpreter of the oldest supported version: on PATH, or one of pyenv's."""
    major, minor = requires_python()
    candidates = [shutil.which(f"python{major}.{minor}")]
    for root in (os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv"), "/root/.pyenv"):
        if root:
            candidates += sorted(glob.glob(f"{root}/versions/{major}.{minor}.*/bin/python{major}.{minor}"))
    for candidate in filter(None, candidates):
        version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True).stdout.strip()
        if version == str((major, minor)):
            return candidate
    message = f"no Python {major}.{minor} to prove requires-python (>={major}.{minor}) with"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI must prove requires-python: {message}", pytrace=False)
    pytest.skip(message)


# Runs in the venv: every notebook in turn, as Binder's JupyterLab would, saved with widget state, each
# kernel's own stdout/stderr kept (the package logs there at SCENARIO_NB_LOG_LEVEL).
RUNNER = textwrap.dedent("""
    import os, sys, tempfile, nbformat
    from pathlib import Path
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    out, cwd, *sources = sys.argv[1:]
    for source in map(Path, sources):
        nb = nbformat.read(source, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel prefix:', sys.prefix)"))
        # Unix sockets, not TCP ports the other tests' connections may take (see conftest.kernel_manager)
        km = KernelManager(kernel_name="python3", transport="ipc",
                           ip=os.path.join(tempfile.mkdtemp(prefix="kernel-"), "ipc"))
        client = NotebookClient(nb, km=km, timeout=180, store_widget_state=True,
                                resources={"metadata": {"path": cwd}})
        with open(f"{out}/{source.stem}.stdout", "w") as o, open(f"{out}/{source.stem}.stderr", "w") as e:
            try:
                client.execute(stdout=o, stderr=e)
            finally:
                nbformat.write(nb, f"{out}/{source.name}")
""")

SMOKE = textwrap.dedent("""
    import compileall, hashlib, importlib, importlib.metadata, json, os, pkgutil, sys
    from pathlib import Path

    import scenario_nb
    from scenario_nb import _http, sandbox

    package = Path(scenario_nb.__file__).parent
    # pip byte-compiles quietly and ignores failures: compile every module again, loudly, on this Python.
    assert compileall.compile_dir(str(package), quiet=1, force=True), "a module does not compile on this Python"
    modules = [m.name for m in pkgutil.walk_packages([str(package)], "scenario_nb.") if not m.name.endswith("__main__")]
    for name in modules:
        importlib.import_module(name)

    # The magics, end to end, on the embedded sandbox (no credentials): an image comes back.
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "scenario_nb")
    result = shell.run_cell("%%scenario Gemini -n 1 -o smoke\\na lighthouse, smoke test")
    assert result.success, result.error_in_exec
    generation = shell.user_ns["smoke"]
    print(json.dumps({
        "python": list(sys.version_info[:2]), "file": scenario_nb.__file__, "version": scenario_nb.__version__,
        "dist_version": importlib.metadata.version("scenario_nb"), "user_agent": _http.USER_AGENT,
        "modules": modules, "status": generation.status, "size": list(generation.images[0].size),
        "files": {p.relative_to(package.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(package.rglob("*")) if p.is_file() and "__pycache__" not in p.parts},
    }))
""")


def where_imported(python: Path, env: dict, cwd: Path) -> Path:
    return Path(sh([str(python), "-c", "import scenario_nb; print(scenario_nb.__file__)"], cwd=cwd,
                   env=env).strip()).resolve()


@contextlib.contextmanager
def stage(seen: dict, name: str):
    """Time one stage of the set-up into seen["seconds"] (test_binder prints them: where the minutes go)."""
    start = time.monotonic()
    try:
        yield
    finally:
        seen["seconds"][name] = round(time.monotonic() - start, 1)


def set_up(base: Path) -> dict:
    """Every stage in turn (see the module's docstring); returns what the tests read."""
    repo = clean_copy(base / "repo")
    for probe in PROBES:
        (repo / probe).parent.mkdir(parents=True, exist_ok=True)
        (repo / probe).write_bytes(f"probe {probe}".encode())
    bin_dir, home = base / "venv" / "bin", base / "home"
    python, env = bin_dir / "python", venv_env(bin_dir, home)
    seen: dict = {"base": base, "repo": repo, "bin": bin_dir, "home": home, "env": env, "seconds": {}}

    # 1. Binder: repo2docker's two steps, from the repository root.
    with stage(seen, "binder: venv, requirements.txt, postBuild"):
        sh([oldest_python(), "-m", "venv", str(base / "venv")], cwd=base, env=dict(os.environ), timeout=120)
        assert "include-system-site-packages = false" in (base / "venv" / "pyvenv.cfg").read_text()
        # pip, as repo2docker runs it: uv would be faster but reads only pypi.org, where pip also reads this
        # machine's indexes (it gave ipykernel 7.3 where pip gives 7.4).
        sh([str(python), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], cwd=repo, env=env)
        sh(["binder/postBuild"], cwd=repo, env=env)
        seen["binder_import"] = where_imported(python, env, base)
        seen["lab_version"] = sh([str(bin_dir / "jupyter"), "lab", "--version"], cwd=base, env=env)
        seen["lab_extensions"] = sh([str(bin_dir / "jupyter"), "labextension", "list"], cwd=base, env=env)

    # 3a. PyPI's build (the sdist, then the wheel from it) needs only the copy: it runs while the notebooks do.
    host_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    build_log = (base / "build.log").open("w")
    build = subprocess.Popen([sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(base / "dist"),
                              str(repo)], cwd=base, env=host_env, stdout=build_log, stderr=subprocess.STDOUT)

    # 2. The notebooks, once, as Binder runs them: through binder/start, no credentials.
    executed = base / "executed"
    executed.mkdir()
    nb_env = venv_env(bin_dir, home, SCENARIO_NB_HOME=str(base / "nb-home"), SCENARIO_NB_SANDBOX_JOB_SECONDS="0.5",
                      SCENARIO_NB_SANDBOX_TRAIN_SECONDS="5", SCENARIO_NB_LOG_LEVEL="DEBUG")
    (base / "run_notebooks.py").write_text(RUNNER)
    with stage(seen, "every notebook, once"):
        proc = subprocess.run(["binder/start", str(python), str(base / "run_notebooks.py"), str(executed),
                               str(repo / "notebooks"), *(str(repo / "notebooks" / p.name) for p in NOTEBOOKS)],
                              cwd=repo, env=nb_env, timeout=600, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    seen["notebook_run"] = {"returncode": proc.returncode, "output": proc.stdout[-4000:]}
    seen["executed"], seen["nb_home"] = executed, base / "nb-home"

    # 3b. The wheel built meanwhile, installed over Binder's and used.
    with stage(seen, "PyPI: build (what the notebooks left of it), install, smoke"):
        assert build.wait(timeout=INSTALL_TIMEOUT) == 0, (base / "build.log").read_text()[-4000:]
        build_log.close()
        [seen["wheel"]], [seen["sdist"]] = (sorted((base / "dist").glob(p)) for p in ("*.whl", "*.tar.gz"))
        seen["data"] = sorted(p.relative_to(repo).as_posix() for p in (repo / "scenario_nb" / "sandbox").rglob("*")
                              if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)
        sh([str(python), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(seen["wheel"])],
           cwd=base, env=env)
        (base / "smoke.py").write_text(SMOKE)
        smoke_env = venv_env(bin_dir, home, SCENARIO_NB_HOME=str(base / "smoke-home"),
                             SCENARIO_NB_SANDBOX_JOB_SECONDS="0.3")
        seen["smoke"] = json.loads(sh([str(python), str(base / "smoke.py")], cwd=base, env=smoke_env,
                                      timeout=300).strip().splitlines()[-1])

    # 4. The README's main job, its install half as typed, in a shell whose `pip` is the venv's.
    with stage(seen, "README: command 1's install"):
        sh(readme_commands()[0].split("&&")[0].strip(), cwd=repo, env=env, shell=True)
        seen["readme_import"] = where_imported(python, env, base)
    return seen
