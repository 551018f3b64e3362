"""`%%scenario` and `%scenario`: the notebook front door onto the shared session.

This module holds the settings (`%config ScenarioMagics`) and the `%%scenario` cell; the line subcommands
live in `_commands.py`, and showing generations in `_display.py`. Validation, aspect mapping, cost, the
ledger and following jobs live in the shared modules the panel uses too.
"""

from __future__ import annotations

import csv
import shlex
from pathlib import Path
from typing import Any, Optional

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Bool, Float, Int, TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from ._commands import SUBCOMMANDS, Commands, check_save_folder, check_variable, fill_prompt, refuse_reserved, settings
from ._display import show_generations, show_grid
from ._thumbnails import DEFAULT_THUMBNAIL_SIZE
from ._errors import ScenarioError
from ._generation import Generation
from ._env import credentials_from_env
from ._models import aspect_options, is_aspect, normalise_ratio, request_inputs

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
    reuse = Bool(True, help="Re-run safety: an identical request already sent (running, queued, unknown, "
                            "or done) is shown again instead of paid for again (--force makes a new "
                            "one).").tag(config=True)
    max_cost = Float(None, allow_none=True, help="Spend guard in creative units: a run estimated above it "
                                                 "asks for confirmation, or is refused when nobody can "
                                                 "answer. None turns it off.").tag(config=True)
    history_path = Unicode("", help="SQLite file of the job history; empty means "
                                    "$SCENARIO_NB_HOME/history.sqlite (default ~/.scenario_nb).").tag(config=True)
    poll_interval_floor = Float(0.25, help="Shortest interval, in seconds, between two polls of one "
                                           "job.").tag(config=True)
    job_timeout = Float(3600.0, help="Seconds after which the engine stops watching a job (it can be "
                                     "re-attached with %scenario job ID).").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, config=shell.config if shell is not None else None, **kwargs)
        self.commands = Commands(self)
        self._routing_shown: set = set()  # models whose "runs through" line this session already printed

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
        if value and not is_aspect(value):
            raise TraitError("default_aspect must look like 16:9 (or be empty)")
        return value

    @observe("poll_interval_floor", "job_timeout")
    def _polling_changed(self, change) -> None:
        from ._session import current_session
        session = current_session()
        if session is not None:
            session.client.set_polling(floor=self.poll_interval_floor, job_timeout=self.job_timeout)

    @observe("history_path")
    def _history_moved(self, change) -> None:
        from ._session import current_session, replace_session
        session = current_session()
        if session is not None:
            replace_session(history_path=change["new"] or None, force_sandbox=session.force_sandbox)

    @property
    def user_ns(self) -> dict:
        """The notebook's variables (for `{name}` in prompts and `-o VAR`)."""
        if self.shell is None:
            raise UsageError("scenario_nb's magics need an IPython shell")
        return self.shell.user_ns

    # -- Shared session ------------------------------------------------------------------------------
    @property
    def session(self):
        from ._session import get_session
        session = get_session(history_path=self.history_path or None)
        session.client.set_polling(floor=self.poll_interval_floor, job_timeout=self.job_timeout)
        if not session.announced:  # a new backend (new credentials in the environment): say where we are now
            session.announced = True
            print(session.notice)
        return session

    @property
    def client(self):
        return self.session.client

    # -- The magic -------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("model", nargs="?", help="model id, name or unique name prefix (its words need no quotes); in "
                                        "line mode a subcommand: " + ", ".join(SUBCOMMANDS))
    @argument("rest", nargs="*", help="arguments of the subcommand (line mode)")
    @argument("-a", "--aspect", help="aspect ratio such as 16:9, on any model (aspectRatio or width/height)")
    @argument("-n", "--num", type=int, help="number of outputs: images, or a text model's answers (numOutputs)")
    @argument("--seed", type=int, help="seed, for reproducible images")
    @argument("--set", action="append", metavar="NAME=VALUE", help="any other model input; repeatable")
    @argument("-o", "--out", metavar="VAR", help="bind the Generation (a list with --each) to VAR at once")
    @argument("--no-wait", action="store_true", help="return at once; the output keeps updating in place")
    @argument("--each", action="store_true", help="one generation per non-empty line, all in flight at once")
    @argument("--dry-run", action="store_true", help="show the cost estimate; spend nothing")
    @argument("--force", action="store_true", help="pay for a new generation even if an identical request "
                                                    "was already sent")
    @argument("--save", metavar="DIR", help="also save the outputs (PNG with metadata + JSON sidecar) to DIR")
    @argument("--vary", action="append", metavar="AXIS=V1,V2", help="a grid: one tile per value (seed, model, "
                                                                    "prompt or any model input); repeatable: "
                                                                    "rows, columns, pages")
    @argument("--public", action="store_true", help="(models) list the public catalog instead of yours")
    @line_cell_magic
    def scenario(self, line: str = "", cell: Optional[str] = None):
        """Generate images with your Scenario models, or manage jobs.

        Cell mode (the cell body is the prompt; `{name}` inserts a Python variable, `{{` a brace)::

            %%scenario [MODEL] [-a RATIO] [-n N] [--seed S] [--set NAME=VALUE ...] [-o VAR]
                       [--no-wait] [--each] [--dry-run] [--force] [--save DIR] [--vary AXIS=V1,V2 ...]

        A grid (`--vary`, one axis per flag, at most three: rows, columns, pages): every tile is its own job,
        all in flight at once, shown as one labelled sheet that fills in live; `-o VAR` binds the Grid
        (`.pick(row, col)`, `.save(dir)`). Values are comma-separated; quote names with spaces; numbers are
        numbers; `--vary prompt` alone takes one prompt per line of the cell::

            %%scenario "Hero Knight" --vary seed=1,2,3 --vary lorasScale=0.4,0.7,1
            %%scenario --vary seed=1,2 --vary model="Hero Knight","FLUX.2 dev"

        Line mode::

            %scenario models                       your models, then the public catalog's size
            %scenario models --search TEXT [--type KIND] [--public] [--all]
                                                   find models (KIND: image, video, 3d, text, lora, composition)
            %scenario model MODEL                  a model's details and inputs
            %scenario use MODEL                    the default model for %%scenario cells
            %scenario status                       backend, key (masked), requests in flight and queued
            %scenario history [N]                  the last N requests (kept across kernel restarts)
            %scenario job JOB_ID                   re-attach to a job and show its outputs
            %scenario cancel JOB_ID|all            drop queued requests, ask Scenario to cancel jobs
            %scenario wait                         wait for every request in flight (queued ones too)
            %scenario asset ASSET_ID               show any asset
            %scenario workflows                    your workflows
            %scenario workflow ID [--set NAME=VALUE ...] [-o VAR] [--no-wait]   run a workflow
            %scenario train NAME --images DIR [--type T] [--captions auto|none] [--dry-run] [--set P=V ...]
                                                   price, caption, upload and train a LoRA; shown live
            %scenario training [MODEL] [--cancel]  your trainings, or follow one live (after a restart too)
            %scenario panel [MODEL]                the widget panel
            %scenario sandbox                      switch to the embedded local sandbox
            %scenario use-credentials              switch to the credentials in the environment
            %scenario help                         this text

        Settings: %config ScenarioMagics (default_model, default_aspect, thumbnail_size, wait, reuse,
        max_cost, history_path, poll_interval_floor, job_timeout).
        """
        try:
            if cell is None:
                return self.commands.run(line)
            return self._cell(line, cell)
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None

    # -- Cell mode -------------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str):
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%scenario: {exc} (check the quotes)") from None
        args = self.scenario.parser.parse_intermixed_args(words)  # POSIX quoting: "Hero Knight" is one name
        if args.model and args.rest:  # the words before and between the options name one model: Hero Knight
            args.model, args.rest = " ".join([args.model, *args.rest]), []
        if args.vary:
            return self._grid_cell(args, cell)
        if args.rest or args.public:
            raise UsageError("%%scenario takes one MODEL; put the prompt in the cell body")
        check_variable(args.out)
        check_save_folder(args.save)
        client = self.client
        model = self._model(args.model)
        text = fill_prompt(cell, self.user_ns)
        lines = [p.strip() for p in text.splitlines() if p.strip()] if args.each else [text.strip()]
        if not lines or not all(lines):
            raise UsageError("empty prompt: write what to generate in the cell body under %%scenario")
        prompts = list(dict.fromkeys(lines))  # a line given twice is one request: one job, never two
        extra = settings(args.set)
        for flag, name in ((args.seed, "seed"), (args.num, "numOutputs")):
            if flag is not None and name in extra:
                raise UsageError(f"--set {name}= and the {'--seed' if name == 'seed' else '-n'} flag both set "
                                 f"{name}; keep one")
        runnable, routed = client.route(model)
        refuse_reserved(extra, model_inputs(model, routed))
        inputs = request_inputs(runnable, aspect=args.aspect or self._default_aspect(runnable), num=args.num,
                                seed=args.seed, settings=extra)
        bodies = [client.prepare(model, p, **inputs)[2] for p in prompts]  # validates before any spending
        if args.dry_run:
            for prompt in prompts:
                display(client.estimate(model, prompt, **inputs))
            return None
        handles: list[Optional[Generation]] = [None] * len(prompts)
        if self.reuse and not args.force:
            for index, body in enumerate(bodies):
                handles[index] = client.previous(model, body)
        fresh = [i for i, h in enumerate(handles) if h is None]
        if fresh and self.max_cost is not None:
            self._spend_guard(sum(client.estimate(model, prompts[i], **inputs).creative_units for i in fresh))
        if fresh and runnable.id != model.id and model.id not in self._routing_shown:
            self._routing_shown.add(model.id)
            print(f"{model.name} is {describe_type(model)}: it runs through {runnable.name}")
        if len(prompts) < len(lines):
            print(repeated_lines_line(lines))
        for handle in handles:
            if handle is not None:
                print(reuse_line(handle))
        try:
            sent = client.generate_many(model, [prompts[i] for i in fresh], source="magic", **inputs)
        except KeyboardInterrupt as exc:
            print(interrupted_send_line(getattr(exc, "handles", [])))
            return None
        for index, handle in zip(fresh, sent, strict=True):
            handles[index] = handle
        ready = [h for h in handles if h is not None]
        if args.out:
            by_prompt = dict(zip(prompts, ready, strict=True))
            self.user_ns[args.out] = [by_prompt[line] for line in lines] if args.each else ready[0]
        save = str(Path(args.save).expanduser()) if args.save else None
        show_generations(ready, wait=self.wait and not args.no_wait, thumbnail_size=self.thumbnail_size,
                         after=(lambda h: self._save(h, save)) if save else None)
        return None

    def _grid_cell(self, args: Any, cell: str):
        """`%%scenario --vary ...`: a grid of tiles, priced and guarded like any cell, shown as one sheet."""
        from ._grid import GridPlan
        if args.rest or args.public or args.each:
            raise UsageError("%%scenario --vary: give one MODEL (or a model axis) and no --each; each --vary "
                             "is one axis")
        check_variable(args.out)
        check_save_folder(args.save)
        vary = parse_vary(args.vary)
        text = fill_prompt(cell, self.user_ns).strip()
        if vary.get("prompt") == []:  # `--vary prompt` alone: one prompt per line of the cell
            vary["prompt"], text = [p.strip() for p in text.splitlines() if p.strip()], ""
            if not vary["prompt"]:
                raise UsageError("--vary prompt: write one prompt per line in the cell body")
        elif not text and "prompt" not in vary:
            raise UsageError("empty prompt: write what to generate in the cell body under %%scenario")
        if "seed" in vary and args.seed is not None:
            raise UsageError("--seed and --vary seed both set the seed; keep one")
        if "model" in vary and args.model:
            raise UsageError(f"MODEL ({args.model}) and --vary model both choose the model; keep one")
        client = self.client
        model = None if "model" in vary else self._model(args.model)
        first = model or client.find_model(str(vary["model"][0]))
        runnable, _ = client.route(first)
        extra = settings(args.set)
        for chosen in [first] if model else [client.find_model(str(v)) for v in vary["model"]]:
            refuse_reserved(extra, model_inputs(chosen, client.route(chosen)[1]))
        clash = sorted(set(extra) & set(vary))
        if clash:
            raise UsageError(f"--set {clash[0]}= and --vary {clash[0]} both set {clash[0]}; keep one")
        inputs = request_inputs(runnable, aspect=args.aspect or self._default_aspect(runnable), num=args.num,
                                seed=args.seed, settings=extra)
        plan = GridPlan(client, text, model=model, vary=vary, reuse=self.reuse and not args.force, inputs=inputs,
                        source="magic")
        if args.dry_run:
            total = plan.estimate()
            line = (f"Estimated cost: {total:g} CU for {len(plan.fresh)} new tile(s) of {len(plan.cells)}"
                    + (f" ({len(plan.reused)} already paid for)" if plan.reused else "") + " — dry run, nothing "
                    "was spent.")
            display({"text/plain": line, "text/markdown": line}, raw=True)
            return None
        if plan.fresh and self.max_cost is not None:
            self._spend_guard(plan.estimate())
        for m in {c.model.id: c.model for c in plan.cells}.values():
            if plan.fresh and not m.runnable and m.id not in self._routing_shown:
                self._routing_shown.add(m.id)
                print(f"{m.name} is {describe_type(m)}: it runs through {client.route(m)[0].name}")
        if plan.reused:
            print(f"Shown from history: {len(plan.reused)} of the grid's {len(plan.handles)} requests "
                  f"{'was' if len(plan.reused) == 1 else 'were'} already sent (identical), so nothing new is paid "
                  f"for {'it' if len(plan.reused) == 1 else 'them'}; add --force to generate again.")
        try:
            grid = plan.start()
        except KeyboardInterrupt:
            print("Interrupted while sending the grid. Tiles already sent go on in the background (they are in "
                  "%scenario history); running the cell again attaches to them instead of paying again.")
            return None
        if args.out:
            self.user_ns[args.out] = grid
        save = str(Path(args.save).expanduser()) if args.save else None
        show_grid(grid, wait=self.wait and not args.no_wait, after=(lambda g: self._save_grid(g, save)) if save
                  else None)
        return None

    def _save_grid(self, grid: Any, folder: str) -> None:
        paths = grid.save(folder)
        print(f"Saved the sheet, {len(paths) - 2} tile file(s) and {paths[-1].name} to {folder}")

    def _save(self, handle: Generation, folder: str) -> None:
        if handle.ok:
            paths = handle.save(folder)
            print(f"Saved {len(paths) - 1} file(s) and {paths[-1].name} to {folder}")

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
        ratio = normalise_ratio(self.default_aspect)
        return ratio if ratio in aspect_options(model) else None

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


def parse_vary(specs: list) -> dict:
    """`--vary AXIS=V1,V2` flags as {axis: [values]}: comma-separated (a value with a comma in double quotes
    inside single ones), numbers as numbers; `--vary prompt` alone means the cell's lines."""
    axes: dict = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not name or (not sep and name != "prompt"):
            raise UsageError(f"--vary takes AXIS=V1,V2 (e.g. --vary seed=1,2,3), not {spec!r}")
        if name in axes:
            raise UsageError(f"--vary {name} is given twice; put all its values in one --vary {name}=...")
        if not sep:
            axes[name] = []
            continue
        values = [v.strip() for v in next(csv.reader([text], skipinitialspace=True), [])]
        if not values or not all(values):
            raise UsageError(f"--vary {name}: an empty value in {text!r}; give values like {name}=A,B")
        axes[name] = values if name in ("model", "prompt") else [_number(v) for v in values]
    return axes


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def model_inputs(model, routed: dict) -> set:
    """The inputs that carry `model` when it runs through a base model (what `client.route` fills in)."""
    return {name for name, value in routed.items() if value in (model.id, [model.id])}


def describe_type(model) -> str:
    """Plain words for what a model is."""
    kind = model.type or ""
    if kind.endswith("composition"):
        return "a composition"
    if kind.endswith("lora"):
        return "your LoRA" if model.privacy != "public" else "a LoRA"
    return "a model"


def reuse_line(handle: Generation) -> str:
    """One line for re-run safety: which job this identical request already is, and how to pay again."""
    what = "already paid for" if handle.ok else handle.status_words()
    job = f"job {handle.job_id}" if handle.job_id else f"request {handle.request_id}"
    return (f"Shown from history: this identical request is {job} ({what}), so nothing new is paid for; "
            f"add --force to generate again.")


def repeated_lines_line(lines: list) -> str:
    """One line for `--each` lines given more than once: each is one request, sent once."""
    repeats = []
    for prompt in dict.fromkeys(lines):
        numbers = [str(i + 1) for i, line in enumerate(lines) if line == prompt]
        if len(numbers) > 1:
            shown = prompt if len(prompt) <= 40 else prompt[:39] + "…"
            repeats.append(f"{shown!r} (lines {', '.join(numbers)})")
    return (f"Repeated lines are one request each, sent once: {'; '.join(repeats)}. For more images of one "
            f"request, use -n N.")


def interrupted_send_line(handles: list) -> str:
    """After a Ctrl-C while sending: what was sent, and that it is still followed (and recorded)."""
    named = ", ".join(h.job_id or f"request {h.request_id} ({h.status_words()})" for h in handles) or "nothing"
    return (f"Interrupted. Already sent (and followed in the background; it is in %scenario history): {named}. "
            f"Running the cell again attaches to it instead of paying again; %scenario status shows it.")


def load(ipython: Any) -> None:
    """Register the magics once, as a configurable (so %config ScenarioMagics lists every setting)."""
    if any(isinstance(c, ScenarioMagics) for c in ipython.configurables):
        return
    _drop_refused_settings(ipython)
    magics = ScenarioMagics(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:  # IPython's Magics adds itself; older versions may not
        ipython.configurables.append(magics)
    key, secret, url = credentials_from_env()
    if key and secret:
        print(f"scenario_nb loaded: generations go to {url} and spend your creative units (%scenario help)")
    else:
        print("scenario_nb loaded: no credentials set, so generations run on the embedded sandbox and nothing "
              "is charged (%scenario help)")


def _drop_refused_settings(ipython: Any) -> None:
    """A `%config ScenarioMagics.x = …` that was refused stays in the shell's config (IPython stores it before the
    setting checks it), so the next load would fail on it: drop it, one line each, and load with the default."""
    section = ipython.config.get("ScenarioMagics") or {}
    probe = ScenarioMagics()
    for name in list(section):
        trait = probe.traits(config=True).get(name)
        try:
            if trait is not None:
                trait._validate(probe, section[name])  # the trait's checks without setting it (no observers)
        except TraitError as exc:
            del section[name]
            print(f"scenario_nb: ignored ScenarioMagics.{name} from your config ({exc}); using the default")


def unload(ipython: Any) -> None:
    """Remove the magics and close every session (jobs keep running on the server; the history knows them)."""
    from ._session import reset
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("scenario", None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, ScenarioMagics)]
    ipython.magics_manager.registry.pop("ScenarioMagics", None)
    reset()
