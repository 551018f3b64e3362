"""`%%scenario` and `%scenario`: the notebook front door onto the shared session.

The magics only parse, ask and show; validation, aspect mapping, cost, history and polling live in the
shared modules the panel uses too.
"""

from __future__ import annotations

import argparse
import html
import re
import shlex
import time
from typing import Any, Optional

from IPython.display import display
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Int, TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from ._display import DEFAULT_THUMBNAIL_SIZE, generation_bundle, status_html
from ._errors import InputError, NotFoundError, ScenarioError
from ._generation import Generation, wait_all
from ._history import History
from ._http import credentials_from_env
from ._models import request_inputs

SUBCOMMANDS = ("models", "model", "use", "status", "history", "job", "cancel", "wait", "asset", "workflows",
               "workflow", "panel", "sandbox", "help")


def fill_prompt(text: str, namespace: dict) -> str:
    """Insert `{name}` from the user's variables; unknown names stay as they are, `{{` gives `{`."""
    def one(match: re.Match) -> str:
        if match[0] in ("{{", "}}"):
            return match[0][0]
        return str(namespace[match[1]]) if match[1] in namespace else match[0]
    return re.sub(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}", one, text)


def _settings(pairs: Optional[list]) -> dict:
    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--set takes NAME=VALUE, not {pair!r}")
        out[name.strip()] = value
    return out


def table_bundle(headers: list, rows: list) -> dict:
    """A small table as text/plain and text/html."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [headers] + cells)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return {"text/plain": text, "text/html": f"<table><tr>{head}</tr>{body}</table>"}


class _SubParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no SystemExit
        raise UsageError(f"%scenario {self.prog}: {message}")


def _parser(name: str, *args: tuple) -> _SubParser:
    parser = _SubParser(prog=name, add_help=False)
    for names, options in args:
        parser.add_argument(*names, **options)
    return parser


@magics_class
class ScenarioMagics(Magics, Configurable):
    """Generate images from your Scenario models: `%%scenario` cells and `%scenario` commands."""

    default_model = Unicode("", help="Model used when a %%scenario cell names none (id, name or "
                                     "prefix); %scenario use MODEL sets it too.").tag(config=True)
    default_aspect = Unicode("", help="Aspect ratio used when a cell gives no --aspect, e.g. '16:9'; "
                                      "empty means the model's own default.").tag(config=True)
    thumbnail_size = Int(DEFAULT_THUMBNAIL_SIZE, help="Longest side, in pixels, of the thumbnails shown "
                                                      "inline; full images stay in the local file "
                                                      "store.").tag(config=True)
    wait = Bool(True, help="Whether %%scenario waits in the cell (live status, then images). --no-wait "
                           "returns at once and the output still updates in place.").tag(config=True)
    reuse = Bool(True, help="Re-run safety: an identical request already paid for is shown again from the "
                            "history instead of generated again (--force makes a new one).").tag(config=True)
    max_cost = Float(None, allow_none=True, help="Spend guard in creative units: a run estimated above it "
                                                 "asks for confirmation, or is refused when nobody can "
                                                 "answer. None turns it off.").tag(config=True)
    history_path = Unicode("", help="SQLite file of the job history; empty means "
                                    "$SCENARIO_NB_HOME/history.sqlite (default ~/.scenario_nb).").tag(config=True)
    poll_interval_floor = Float(0.25, help="Shortest interval, in seconds, between two polls of one "
                                           "job.").tag(config=True)
    job_timeout = Float(3600.0, help="Seconds after which the poller stops watching a job (it can be "
                                     "re-attached with %scenario job ID).").tag(config=True)

    def __init__(self, shell=None, **kwargs: Any) -> None:
        super().__init__(shell=shell, config=shell.config if shell is not None else None, **kwargs)

    # -- Settings ------------------------------------------------------------------------------------
    @validate("thumbnail_size")
    def _check_thumbnail(self, proposal):
        if not 64 <= proposal["value"] <= 4096:
            raise TraitError("thumbnail_size must be between 64 and 4096 pixels")
        return proposal["value"]

    @validate("max_cost")
    def _check_max_cost(self, proposal):
        if proposal["value"] is not None and proposal["value"] < 0:
            raise TraitError("max_cost must be 0 or more creative units, or None to turn the guard off")
        return proposal["value"]

    @validate("poll_interval_floor", "job_timeout")
    def _check_positive(self, proposal):
        if proposal["value"] <= 0:
            raise TraitError(f"{proposal['trait'].name} must be a positive number of seconds")
        return proposal["value"]

    @validate("default_aspect")
    def _check_aspect(self, proposal):
        value = proposal["value"].strip()
        if value and value != "auto" and not re.fullmatch(r"\d+:\d+", value):
            raise TraitError("default_aspect must look like 16:9 (or be empty)")
        return value

    @observe("poll_interval_floor", "job_timeout")
    def _poller_settings(self, change) -> None:
        from . import _session
        if _session._session is not None:
            self._apply_poller_settings(_session._session.client)

    @observe("history_path")
    def _new_history(self, change) -> None:
        from . import _session
        if _session._session is not None:
            _session.replace_session(history_path=change["new"] or None,
                                     force_sandbox=_session._session.backend == "sandbox")

    def _apply_poller_settings(self, client) -> None:
        client.poller.floor = self.poll_interval_floor
        client.poller.job_timeout = self.job_timeout

    # -- Shared session ------------------------------------------------------------------------------
    @property
    def session(self):
        from ._session import get_session
        session = get_session(history_path=self.history_path or None)
        self._apply_poller_settings(session.client)
        return session

    @property
    def client(self):
        return self.session.client

    # -- The magic -------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("model", nargs="?", help="model id, name or unique name prefix; in line mode a subcommand: "
                                        + ", ".join(SUBCOMMANDS))
    @argument("rest", nargs="*", help="arguments of the subcommand (line mode)")
    @argument("-a", "--aspect", help="aspect ratio such as 16:9, on any model (aspectRatio or width/height)")
    @argument("-n", "--num", type=int, help="number of images (the model's numOutputs)")
    @argument("--seed", type=int, help="seed, for reproducible images")
    @argument("--set", action="append", metavar="NAME=VALUE", help="any other model input; repeatable")
    @argument("-o", "--out", metavar="VAR", help="bind the Generation (a list with --each) to VAR at once")
    @argument("--no-wait", action="store_true", help="return at once; the output keeps updating in place")
    @argument("--each", action="store_true", help="one generation per non-empty line, all in flight at once")
    @argument("--dry-run", action="store_true", help="show the cost estimate; spend nothing")
    @argument("--force", action="store_true", help="generate again even if an identical request was paid for")
    @argument("--save", metavar="DIR", help="also save the images (PNG with metadata + JSON sidecar) to DIR")
    @argument("--public", action="store_true", help="(models) list the public catalog instead of yours")
    @line_cell_magic
    def scenario(self, line: str = "", cell: Optional[str] = None):
        """Generate images with your Scenario models, or manage jobs.

        Cell mode (the cell body is the prompt; `{name}` inserts a Python variable, `{{` a brace)::

            %%scenario [MODEL] [-a RATIO] [-n N] [--seed S] [--set NAME=VALUE ...] [-o VAR]
                       [--no-wait] [--each] [--dry-run] [--force] [--save DIR]

        Line mode::

            %scenario models [--public] [FILTER]   your models (or the public catalog) as a table
            %scenario model MODEL                  a model's details and inputs
            %scenario use MODEL                    the default model for %%scenario cells
            %scenario status                       backend, URL, credentials set (never shown), jobs in flight
            %scenario history [N]                  the last N jobs (kept across kernel restarts)
            %scenario job JOB_ID                   re-attach to a job and show its images
            %scenario cancel JOB_ID|all            cancel on the server
            %scenario wait                         wait for every job in flight
            %scenario asset ASSET_ID               show any asset
            %scenario workflows                    your workflows
            %scenario workflow ID [--set NAME=VALUE ...] [-o VAR] [--no-wait]   run a workflow
            %scenario panel [MODEL]                the widget panel
            %scenario sandbox                      switch to the embedded local sandbox
            %scenario help                         this text

        Settings: %config ScenarioMagics (default_model, default_aspect, thumbnail_size, wait, reuse,
        max_cost, history_path, poll_interval_floor, job_timeout).
        """
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None

    # -- Cell mode -------------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str):
        args = parse_argstring(self.scenario, line)
        if args.rest or args.public:
            raise UsageError("%%scenario takes one MODEL; put the prompt in the cell body")
        client = self.client
        model = self._model(args.model)
        text = fill_prompt(cell, self.shell.user_ns)
        prompts = [p.strip() for p in text.splitlines() if p.strip()] if args.each else [text.strip()]
        if not prompts or not all(prompts):
            raise UsageError("empty prompt: write what to generate in the cell body under %%scenario")
        runnable, _ = client.route(model)
        inputs = request_inputs(runnable, aspect=args.aspect or self._default_aspect(runnable), num=args.num,
                                seed=args.seed, settings=_settings(args.set))
        requests_ = [client.prepare(model, p, **inputs) for p in prompts]  # validates before any spending
        if runnable.id != model.id:
            print(f"{model.name} is a {model.type}: running it through {runnable.name} ({runnable.id})")
        if args.dry_run:
            for prompt in prompts:
                display(client.estimate(model, prompt, **inputs))
            return None
        reused = {}
        if self.reuse and not args.force:
            for index, (_, _, body) in enumerate(requests_):
                handle = self._from_history(model.id, body)
                if handle is not None:
                    reused[index] = handle
        fresh = [i for i in range(len(prompts)) if i not in reused]
        if fresh and self.max_cost is not None:
            self._spend_guard(sum(client.estimate(model, prompts[i], **inputs).creative_units for i in fresh))
        handles = [reused.get(i) or client.generate(model, prompts[i], source="magic", **inputs)
                   for i in range(len(prompts))]
        if reused:
            ids = ", ".join(h.job_id for h in reused.values())
            print(f"Shown from history: identical request already paid for (job {ids}); add --force to "
                  f"generate again.")
        if args.out:
            self.shell.user_ns[args.out] = handles if args.each else handles[0]
        self._show(handles, wait=self.wait and not args.no_wait, save=args.save)
        return None

    def _model(self, text: Optional[str]):
        chosen = text or self.session.current_model or self.default_model
        if not chosen:
            names = ", ".join(m.name for m in self.client.models()[:3]) or "see %scenario models --public"
            raise UsageError(f"no model given: write %%scenario MODEL (e.g. {names}) or pick one with "
                             f"%scenario use MODEL")
        return self.client.find_model(chosen)

    def _default_aspect(self, model) -> Optional[str]:
        if not self.default_aspect:
            return None
        from ._models import aspect_options
        return self.default_aspect if self.default_aspect in aspect_options(model) else None

    def _from_history(self, model_id: str, body: dict) -> Optional[Generation]:
        client = self.client
        key = History.request_key(model_id, str(body.get("prompt", "")), body)
        record = client.history.find_success(key, client.base_url)
        if record is None or not record.asset_ids or not all(client.store.has(a) for a in record.asset_ids):
            return None
        return Generation.from_record(client, record)

    def _spend_guard(self, total: float) -> None:
        question = f"This run is estimated at {total:g} CU, over max_cost {self.max_cost:g}. Go ahead? [y/N] "
        try:
            answer = input(question)
        except (StdinNotImplementedError, EOFError, OSError, RuntimeError):
            raise UsageError(f"refused: this run is estimated at {total:g} CU, over max_cost {self.max_cost:g}, "
                             f"and nobody can confirm here; raise %config ScenarioMagics.max_cost to run it") \
                from None
        if answer.strip().lower() not in ("y", "yes"):
            raise UsageError(f"not run: estimated {total:g} CU is over max_cost {self.max_cost:g}")

    # -- Showing generations -----------------------------------------------------------------------------
    def _show(self, handles: list, *, wait: bool, save: Optional[str] = None) -> None:
        if not wait:
            for handle in handles:
                self._live_view(handle, save)
            return
        shown = {}
        for handle in handles:
            data, metadata = self._bundle(handle)
            shown[id(handle)] = display(data, raw=True, metadata=metadata, display_id=True)
        try:
            pending = list(handles)
            while pending:
                time.sleep(0.2)
                for handle in list(pending):
                    finished = handle.done  # read before drawing: it may finish while the bundle is made
                    data, metadata = self._bundle(handle)
                    shown[id(handle)].update(data, raw=True, metadata=metadata)
                    if finished:
                        pending.remove(handle)
        except KeyboardInterrupt:
            running = [h.job_id for h in handles if not h.done and h.job_id]
            print(f"Stopped waiting; the job{'s' * (len(running) != 1)} still run"
                  f"{'s' * (len(running) == 1)} on the server: re-attach with "
                  + ", ".join(f"%scenario job {j}" for j in running))
            return
        for handle in handles:
            self._after(handle, save)

    def _bundle(self, handle: Generation) -> tuple[dict, dict]:
        data, metadata = generation_bundle(handle, self.thumbnail_size)
        if handle.done and handle.exception is not None:
            data = {"text/plain": f"✗ {handle.exception}", "text/html":
                    f'<pre style="color:#b00">✗ {html.escape(str(handle.exception))}</pre>'}
        return data, metadata

    def _after(self, handle: Generation, save: Optional[str]) -> None:
        if save and handle.ok:
            paths = handle.save(save)
            print(f"Saved {len(paths) - 1} image(s) and {paths[-1].name} to {save}")

    def _live_view(self, handle: Generation, save: Optional[str]) -> None:
        """One widget in this cell that the poller thread updates in place, even while other cells run.

        When the job ends the display is also updated with the image bundle, so a saved notebook shows the
        result without widget state.
        """
        import ipywidgets as widgets
        view = widgets.HTML(status_html(handle))
        shown = display(view, display_id=True)
        size = self.thumbnail_size

        def update(h: Generation) -> None:
            if not h.done:
                view.value = status_html(h)
                return
            if h.exception is not None:
                view.value = f'<pre style="color:#b00">✗ {html.escape(str(h.exception))}</pre>'
                return
            data, metadata = generation_bundle(h, size)
            mime = next(k for k in data if k.startswith("image/"))
            view.value = (f"<code>{html.escape(h.summary())}</code><br>"
                          f'<img src="data:{mime};base64,{data[mime]}" style="max-width:100%">')
            data["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2, "version_minor": 0, "model_id": view.model_id}
            shown.update(data, raw=True, metadata=metadata)
            if save:
                h.save(save)
        handle.on_update(update)

    # -- Line mode -------------------------------------------------------------------------------------
    def _line(self, line: str):
        words = shlex.split(line)
        if not words:
            return self._status()
        command, rest = words[0], words[1:]
        if command not in SUBCOMMANDS:
            raise UsageError(f"unknown %scenario command {command!r}; one of: {', '.join(SUBCOMMANDS)} "
                             f"(a generation is a %%scenario cell)")
        return getattr(self, f"_cmd_{command}")(rest)

    def _cmd_help(self, rest):
        print(self.scenario.__doc__)

    def _cmd_models(self, rest):
        args = _parser("models", (("--public",), {"action": "store_true"}),
                       (("filter",), {"nargs": "?"})).parse_args(rest)
        models = self.client.models(public=args.public, query=args.filter)
        if not models:
            print("No models found" + (" (try --public for the catalog)" if not args.public else ""))
            return
        display(table_bundle(["name", "id", "type", "status"], [(m.name, m.id, m.type, m.status) for m in models]),
                raw=True)

    def _cmd_model(self, rest):
        args = _parser("model", (("model",), {})).parse_args(rest)
        model = self.client.find_model(args.model)
        print(f"{model.name} ({model.id}) · {model.type} · {model.status} · {model.privacy}")
        if not model.runnable:
            base, extra = self.client.route(model)
            print(f"Runs through {base.name} ({base.id}) with {extra}")
            model = base
        rows = [(i.name, i.label or "", i.describe()) for i in model.inputs]
        display(table_bundle(["input", "label", "type and limits"], rows), raw=True)

    def _cmd_use(self, rest):
        args = _parser("use", (("model",), {})).parse_args(rest)
        model = self.client.find_model(args.model)
        self.session.current_model = model.id
        print(f"%%scenario cells now use {model.name} ({model.id}) when they name no model")

    def _cmd_status(self, rest=None):
        session, client = self.session, self.client
        key, secret, _ = credentials_from_env()
        in_flight = client.poller.in_flight() if client._poller is not None else []
        print(session.notice)
        print(f"backend: {session.backend} · URL: {client.base_url} · key set: {'yes' if key else 'no'}"
              f" · secret set: {'yes' if secret else 'no'} · jobs in flight: {len(in_flight)}"
              f" · history: {client.history_path}")

    def _cmd_history(self, rest):
        args = _parser("history", (("n",), {"nargs": "?", "type": int, "default": 20})).parse_args(rest)
        rows = self.client.history.recent(args.n)
        if not rows:
            print(f"No jobs in {self.client.history_path} yet")
            return
        display(table_bundle(
            ["when", "job", "model", "status", "images", "cost", "prompt"],
            [(time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at or 0)), r.job_id, r.model_id, r.status,
              len(r.asset_ids), "" if r.cost is None else f"{r.cost:g}", (r.prompt or "")[:60]) for r in rows]),
            raw=True)

    def _cmd_job(self, rest):
        args = _parser("job", (("job_id",), {})).parse_args(rest)
        client = self.client
        record = client.history.get(args.job_id)
        if record and record.status == "success" and record.asset_ids and \
                all(client.store.has(a) for a in record.asset_ids):
            handle = Generation.from_record(client, record)
        else:
            try:
                handle = client.job(args.job_id)
            except NotFoundError:
                raise UsageError(f"job {args.job_id} not found on {client.base_url}; check the id with "
                                 f"%scenario history") from None
        self._show([handle], wait=True)

    def _cmd_cancel(self, rest):
        args = _parser("cancel", (("target",), {})).parse_args(rest)
        client = self.client
        if args.target == "all":
            handles = client.poller.in_flight() if client._poller is not None else []
            for handle in handles:
                handle.cancel()
            print(f"Canceled {len(handles)} job(s)")
            return
        handle = client.poller.handle_for(args.target) if client._poller is not None else None
        if handle is not None:
            handle.cancel()
        else:
            client.cancel(args.target)
        print(f"Cancel requested for {args.target}")

    def _cmd_wait(self, rest):
        client = self.client
        handles = client.poller.in_flight() if client._poller is not None else []
        if not handles:
            print("No jobs in flight")
            return
        try:
            wait_all(handles)
        except KeyboardInterrupt:
            print("Stopped waiting; the jobs still run (see %scenario status)")
            return
        for handle in handles:
            print(("✓ " if handle.ok else "✗ ") + handle.summary().replace("\n", " — "))

    def _cmd_asset(self, rest):
        args = _parser("asset", (("asset_id",), {})).parse_args(rest)
        client = self.client
        asset = client.asset(args.asset_id)
        client.fetch_asset(args.asset_id)
        import base64
        meta = asset.get("metadata") or {}
        data = {"text/plain": f"{asset['id']} · {asset.get('kind')} · {meta.get('prompt', '')}",
                "image/png": base64.b64encode(client.store.thumbnail_png(args.asset_id, self.thumbnail_size)).decode()}
        display(data, raw=True, metadata={"scenario_nb": {"asset_id": asset["id"], "metadata": meta}})

    def _cmd_workflows(self, rest):
        flows = self.client.workflows()
        if not flows:
            print("No workflows")
            return
        display(table_bundle(["name", "id", "status"], [(w.get("name"), w.get("id"), w.get("status"))
                                                        for w in flows]), raw=True)

    def _cmd_workflow(self, rest):
        args = _parser("workflow", (("workflow_id",), {}), (("--set",), {"action": "append"}),
                       (("-o", "--out"), {}), (("--no-wait",), {"action": "store_true"})).parse_args(rest)
        client = self.client
        try:
            workflow = client.workflow(args.workflow_id)
        except NotFoundError:
            raise UsageError(f"workflow {args.workflow_id} not found on {client.base_url}; list them with "
                             f"%scenario workflows") from None
        inputs = request_inputs(workflow, settings=_settings(args.set))
        handle = client.run_workflow(args.workflow_id, source="magic", **inputs)
        if args.out:
            self.shell.user_ns[args.out] = handle
        self._show([handle], wait=self.wait and not args.no_wait)

    def _cmd_panel(self, rest):
        from ._panel import Panel
        return Panel(model=rest[0] if rest else None)

    def _cmd_sandbox(self, rest):
        from ._session import replace_session
        session = replace_session(history_path=self.history_path or None, force_sandbox=True)
        print(session.notice)


def load(ipython) -> None:
    """Register the magics once, as a configurable (so %config ScenarioMagics lists every setting)."""
    if any(isinstance(c, ScenarioMagics) for c in ipython.configurables):
        return
    magics = ScenarioMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics)
    key, secret, url = credentials_from_env()
    if key and secret:
        print(f"scenario_nb: using {url} with your SCENARIO_API_KEY (secret set)")
    else:
        print("scenario_nb: no SCENARIO_API_KEY/SCENARIO_API_SECRET set, so generations run on the embedded "
              "sandbox (local placeholder images, nothing charged); %scenario status for details")
