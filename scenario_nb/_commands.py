"""The `%scenario` line subcommands (models, status, history, job, cancel, wait, ...) and the parsing the
`%%scenario` cell shares with them.

Each subcommand is one method `cmd_<name>(words)`; each prints or displays one result and raises `UsageError`
(one line) for a user mistake. They reach the shared session through the magics object that owns them.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from IPython.core.error import UsageError
from IPython.display import display

from ._display import asset_bundle, show_generations
from ._html import table_bundle
from ._errors import InputError, NotFoundError
from ._generation import wait_all


SUBCOMMANDS = ("models", "model", "use", "status", "history", "job", "cancel", "wait", "asset", "workflows",
               "workflow", "train", "training", "panel", "sandbox", "use-credentials", "help")
TRAINING_HELP = """
Custom models (LoRAs):

    %scenario train NAME --images DIR [--type T] [--captions auto|none]
                    [--dry-run] [--set PARAM=VALUE ...] [-o VAR] [--no-wait] [--force]
        price (spend guard: max_cost), caption, upload and train; shown live;
        a training of NAME under way is followed (--force: a second model)
    %scenario train resume NAME
        start now a training waiting for a slot (a 429 at its start)
    %scenario models --drafts
        untrained models this project made (train NAME reuses its draft)
    %scenario models delete NAME
        remove one draft, after saying what it is
    %scenario training [MODEL] [--no-wait] [-o VAR] [--cancel]
        no MODEL: this backend's trainings; MODEL (name or id): follow it
        live (--cancel: ask Scenario to stop it)
"""


def fill_prompt(text: str, namespace: dict) -> str:
    """Insert `{name}` from the user's variables; unknown names stay as they are, `{{` gives `{`."""
    def one(match: re.Match) -> str:
        if match[0] in ("{{", "}}"):
            return match[0][0]
        return str(namespace[match[1]]) if match[1] in namespace else match[0]
    return re.sub(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}", one, text)


def settings(pairs: Optional[list]) -> dict:
    """`--set NAME=VALUE` pairs as a dict (values still text; the model's inputs type them)."""
    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--set takes NAME=VALUE, not {pair!r}")
        out[name.strip()] = value
    return out


def refuse_reserved(pairs: dict, model_inputs: set) -> None:
    """`--set` names what the cell itself sets: the prompt (the cell body), the model (MODEL), and the inputs
    that carry MODEL when it runs through a base model (`model_inputs`, from `client.route`). Refused, not
    overridden: the request would not be the one the cell shows."""
    for name in pairs:
        if name == "prompt":
            why = "the cell body is the prompt"
        elif name == "model":
            why = "MODEL (or %scenario use) chooses the model"
        elif name in model_inputs:
            why = f"MODEL sets {name}"
        else:
            continue
        raise InputError(f"--set {name}=: {why}; drop this --set (nothing was sent)")


def training_parameters(pairs: dict) -> dict:
    """`--set` values typed for a training: numbers, true/false, JSON lists; sample prompts always a list."""
    import json
    out: dict = {}
    for name, text in pairs.items():
        value: Any = text
        stripped = text.strip()
        if stripped.lower() in ("true", "false"):
            value = stripped.lower() == "true"
        elif stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except ValueError:
                raise InputError(f"--set {name}= takes a JSON list such as [\"a potion\", \"a sword\"]") from None
        else:
            try:
                value = int(stripped)
            except ValueError:
                try:
                    value = float(stripped)
                except ValueError:
                    value = text
        if name in ("samplePrompts", "sampleSourceImages") and not isinstance(value, list):
            value = [text]
        out[name] = value
    return out


def check_variable(name: Optional[str]) -> None:
    if name is not None and not name.isidentifier():
        suggestion = re.sub(r"\W", "_", name)
        raise UsageError(f"-o takes a Python variable name, not {name!r} (e.g. -o {suggestion})")
    if name is not None and keyword.iskeyword(name):
        raise UsageError(f"-o {name}: {name!r} is a Python keyword, not a variable name you could use; "
                         f"e.g. -o {name}_")


def check_save_folder(folder: Optional[str]) -> None:
    """`--save DIR` must be a folder this kernel can write: refused before anything is sent or paid for."""
    if not folder:
        return
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"--save {folder}: cannot write there ({exc.strerror or exc}); nothing was sent. "
                         f"Pick a folder you can write to") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, no SystemExit
        raise UsageError(f"%scenario {self.prog}: {message}")


def _parse(name: str, words: list, *args: tuple) -> argparse.Namespace:
    parser = _Parser(prog=name, add_help=False)
    for names, options in args:
        parser.add_argument(*names, **options)
    return parser.parse_intermixed_args(words)


NAME_WORDS = {"nargs": "*", "default": []}  # a model name ends the line: its words need no quotes (Hero Knight)


def _words(value: list) -> str:
    """The name a rest-of-line argument spells: `%scenario use Hero Knight` as `%scenario use "Hero Knight"`."""
    return " ".join(value)


def _required(value: str, what: str, where: str, tip: str = "") -> str:
    value = (value or "").strip()
    if not value:
        raise UsageError(f"%scenario {where}: no {what} given" + (f"; {tip}" if tip else ""))
    return value


class Commands:
    """`%scenario SUBCOMMAND ...`, dispatched by name."""

    def __init__(self, magics: Any) -> None:
        self.magics = magics  # the ScenarioMagics that owns these: its settings, session and shell

    @property
    def client(self):
        return self.magics.client

    def run(self, line: str) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%scenario: {exc} (check the quotes)") from None
        if not words:
            return self.cmd_status([])
        command, rest = words[0], words[1:]
        if command not in SUBCOMMANDS:
            raise UsageError(f"unknown %scenario command {command!r}; one of: {', '.join(SUBCOMMANDS)} "
                             f"(a generation is a %%scenario cell)")
        if command in ("train", "training"):
            return getattr(self.magics.training_commands, "cmd_" + command)(rest)
        return getattr(self, "cmd_" + command.replace("-", "_"))(rest)

    def cmd_help(self, rest: list) -> None:
        print(self.magics.scenario.__doc__)
        print(TRAINING_HELP)

    # -- Models ----------------------------------------------------------------------------------------
    def cmd_models(self, rest: list) -> None:
        """Your models and the catalog's size by default; `--search`/`--type` find models in both (short lists)."""
        from ._model_list import show_models
        if rest[:1] == ["delete"]:  # %scenario models delete NAME: one draft, said what it is, then removed
            self.magics.training_commands.delete_draft(_words(rest[1:]))
            return
        args = _parse("models", rest, (("--public",), {"action": "store_true"}), (("--all",), {"action": "store_true"}),
                      (("--search",), {"nargs": "+", "default": []}), (("--type",), {}), (("filter",), NAME_WORDS),
                      (("--drafts",), {"action": "store_true"}))
        if args.drafts:
            self.magics.training_commands.drafts()
            return
        show_models(self.client, search=_words(args.search) or _words(args.filter), kind=args.type or "",
                    public=args.public, everything=args.all)

    def cmd_model(self, rest: list) -> None:
        args = _parse("model", rest, (("model",), NAME_WORDS))
        client = self.client
        model = client.find_model(_required(_words(args.model), "model", "model", "e.g. %scenario model FLUX.2 dev"))
        print(f"{model.name} ({model.id}) · {model.type} · {model.status} · {model.privacy}")
        if not model.runnable:
            base, extra = client.route(model)
            print(f"Runs through {base.name} ({base.id}) with {extra}")
            model = base
        rows = [(i.name, i.label or "", i.describe()) for i in model.inputs]
        display(table_bundle(["input", "label", "type and limits"], rows), raw=True)

    def cmd_use(self, rest: list) -> None:
        args = _parse("use", rest, (("model",), NAME_WORDS))
        model = self.client.find_model(_required(_words(args.model), "model", "use", "e.g. %scenario use Hero Knight"))
        self.magics.session.current_model = model.id
        print(f"%%scenario cells now use {model.name} ({model.id}) when they name no model")

    # -- Where generations go ----------------------------------------------------------------------------
    def cmd_status(self, rest: list) -> None:
        from ._env import credentials_from_env
        session = self.magics.session
        client = session.client
        client.recover()  # anything an earlier kernel or a lost answer left: followed on from now
        key, secret, _ = credentials_from_env()
        flying = client.in_flight()
        waiting = [h for h in flying if h.status == "waiting"]
        unknown = [h for h in flying if h.status in ("unknown", "sending") and not h.job_id]
        print(session.notice)
        env_words = "set" if key and secret else "not set"
        if session.backend == "sandbox" and key and secret:
            env_words += " (not used: %scenario use-credentials switches to them)"
        print(f"backend: {session.backend} · URL: {client.base_url} · key: {client.api_key_masked} · "
              f"credentials in the environment: {env_words}")
        print(f"in flight: {len(flying)} ({len(waiting)} queued here, not sent yet; {len(unknown)} sent, answer "
              f"lost, being looked for) · history: {client.history_path}")
        training = client.trainings_in_flight()
        if training:
            print(f"trainings in flight: {len(training)} ({', '.join(t.name for t in training)}); %scenario training "
                  f"shows them")

    def cmd_sandbox(self, rest: list) -> None:
        if rest[:1] == ["reset"]:
            if rest[1:]:  # refused, not ignored: resetting the world cannot be undone
                raise UsageError(f"%scenario sandbox reset takes nothing more (not {' '.join(rest[1:])!r}); "
                                 f"nothing was reset")
            from ._session import reset_sandbox_world
            print(reset_sandbox_world())
            return
        if rest:
            raise UsageError(f"%scenario sandbox takes nothing, or reset (not {' '.join(rest)!r})")
        self._switch(force_sandbox=True)

    def cmd_use_credentials(self, rest: list) -> None:
        from ._env import credentials_from_env
        key, secret, _ = credentials_from_env()
        if not (key and secret):
            raise UsageError("no SCENARIO_API_KEY and SCENARIO_API_SECRET in the environment; set them (e.g. "
                             "os.environ[...] = ... in a cell that prints nothing), then run this again")
        self._switch(force_sandbox=False)

    def _switch(self, *, force_sandbox: bool) -> None:
        from ._session import current_session, replace_session
        old = current_session()
        session = replace_session(history_path=self.magics.history_path or None, force_sandbox=force_sandbox)
        session.announced = True
        print(session.notice)
        left = old.client.in_flight() if old is not None else []
        if old is not None and left:
            print(f"{len(left)} request(s) on {old.client.base_url} keep running there and are still followed "
                  f"to the end (and charged there if that backend charges).")

    # -- History and jobs ------------------------------------------------------------------------------------
    def cmd_history(self, rest: list) -> None:
        args = _parse("history", rest, (("n",), {"nargs": "?", "type": int, "default": 20}))
        client = self.client
        rows = client.history.recent(args.n)
        if not rows:
            print(f"No jobs in {client.history_path} yet")
            return
        display(table_bundle(
            ["when", "job", "model", "status", "outputs", "cost", "prompt"],
            [(time.strftime("%m-%d %H:%M", time.localtime(r.created_at or 0)), r.job_id or (r.asset_ids or [""])[0]
              or (r.model_id if r.kind == "model" else "") or f"({r.request_id})",
              r.model_name or r.model_id, r.status, len(r.asset_ids), "" if r.cost is None else f"{r.cost:g}",
              _ellipsize(r.prompt or "", 60)) for r in rows]), raw=True)
        self.magics.training_commands.workbench_lines()

    def cmd_job(self, rest: list) -> None:
        from ._session import session_for
        args = _parse("job", rest, (("job_id",), {"nargs": "?", "default": ""}))
        job_id = _required(args.job_id, "job id", "job", "%scenario history lists them")
        client = self.client
        record = client.history.get(job_id)
        stored = client.stored_job(job_id)
        if stored is not None:
            show_generations([stored], wait=True, thumbnail_size=self.magics.thumbnail_size)
            return
        if record is not None and not record.of_backend(client.backend_id):
            other = session_for(record.backend_id)
            if other is None:
                raise UsageError(f"job {job_id} ran on {record.backend_url}, which this kernel no longer talks "
                                 f"to; switch back to it (%scenario use-credentials or %scenario sandbox)")
            client = other.client
        try:
            handle = client.job(job_id)
        except NotFoundError:
            raise UsageError(f"job {job_id} not found on {client.base_url}; check the id with "
                             f"%scenario history") from None
        show_generations([handle], wait=True, thumbnail_size=self.magics.thumbnail_size)

    def cmd_cancel(self, rest: list) -> None:
        args = _parse("cancel", rest, (("target",), {"nargs": "?", "default": ""}))
        target = _required(args.target, "job id (or all)", "cancel")
        client = self.client
        if target != "all":
            handle = client.job(target)
            handle.cancel()
            print(f"{handle.job_id}: {handle.note}")
            return
        flying = client.in_flight()
        if not flying:
            print("Nothing in flight to cancel")
            return
        queued = [h for h in flying if h.status == "waiting"]
        running = [h for h in flying if h not in queued]
        counts: dict = {}
        for handle in queued + running:  # queued first: they must never be sent after this
            outcome = handle.cancel()
            counts[outcome] = counts.get(outcome, 0) + 1
            print(f"{handle.job_id or handle.request_id} ({handle.model_name}): {handle.note}")
        print("Cancel all: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()))

    def cmd_wait(self, rest: list) -> None:
        handles = self.client.in_flight()
        if not handles:
            print("Nothing in flight")
            return
        queued = sum(h.status == "waiting" for h in handles)
        print(f"Waiting for {len(handles)} request(s)" + (f", {queued} of them queued here" if queued else ""))
        try:
            wait_all(handles)
        except KeyboardInterrupt:
            print("Stopped waiting; the jobs were not stopped (see %scenario status)")
            return
        for handle in handles:
            print(("✓ " if handle.ok else "✗ ") + handle.summary().replace("\n", " — "))

    # -- Assets and workflows ----------------------------------------------------------------------------------
    def cmd_asset(self, rest: list) -> None:
        args = _parse("asset", rest, (("asset_id",), {"nargs": "?", "default": ""}))
        asset_id = _required(args.asset_id, "asset id", "asset")
        client = self.client
        try:
            asset = client.asset(asset_id)
        except NotFoundError:
            raise UsageError(f"asset {asset_id} not found on {client.base_url}") from None
        path = client.fetch_asset(asset_id)
        data, metadata = asset_bundle(asset, path, self.magics.thumbnail_size)
        display(data, raw=True, metadata=metadata)

    def cmd_workflows(self, rest: list) -> None:
        flows = self.client.workflows()
        if not flows:
            print("No workflows")
            return
        display(table_bundle(["name", "id", "status"], [(w.get("name"), w.get("id"), w.get("status"))
                                                        for w in flows]), raw=True)

    def cmd_workflow(self, rest: list) -> None:
        from ._models import request_inputs
        args = _parse("workflow", rest, (("workflow_id",), {}), (("--set",), {"action": "append"}),
                      (("-o", "--out"), {}), (("--no-wait",), {"action": "store_true"}))
        check_variable(args.out)
        client = self.client
        try:
            workflow = client.workflow(args.workflow_id)
        except NotFoundError:
            raise UsageError(f"workflow {args.workflow_id} not found on {client.base_url}; list them with "
                             f"%scenario workflows") from None
        inputs = request_inputs(workflow, settings=settings(args.set))
        handle = client.run_workflow(args.workflow_id, source="magic", **inputs)
        if args.out:
            self.magics.user_ns[args.out] = handle
        show_generations([handle], wait=self.magics.wait and not args.no_wait,
                         thumbnail_size=self.magics.thumbnail_size)

    def cmd_panel(self, rest: list):
        from ._panel import Panel
        name = _words(rest)
        return Panel(model=self.client.find_model(name).id if name else None)


def _ellipsize(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
