"""`%%scenario` and `%scenario`: the notebook front door onto the shared session.

This module holds the settings (`%config ScenarioMagics`) and the magic itself; running a `%%scenario` cell
lives in `_cells.py`, the line subcommands in `_commands.py`, and showing generations in `_display.py`.
Validation, aspect mapping, cost, the ledger and following jobs live in the shared modules the panel uses too.
"""

from __future__ import annotations

from typing import Any, Optional

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Float, Int, TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from ._cells import Cells
from ._commands import SUBCOMMANDS, Commands
from ._training_commands import TrainingCommands
from ._thumbnails import DEFAULT_THUMBNAIL_SIZE
from ._errors import ScenarioError
from ._env import credentials_from_env
from ._models import is_aspect


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
        self.training_commands = TrainingCommands(self)
        self.cells = Cells(self)

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

        Cell mode: the cell body is the prompt; {name} inserts a Python
        variable, {{ a brace.

            %%scenario [MODEL] [-a RATIO] [-n N] [--seed S] [-o VAR]
                       [--set NAME=VALUE ...] [--no-wait] [--each]
                       [--dry-run] [--force] [--save DIR]
                       [--vary AXIS=V1,V2 ...]

        A grid (--vary, one axis per flag, at most three: rows, columns,
        pages): every tile is its own job, all in flight at once, shown as
        one labelled sheet that fills in live; -o VAR binds the Grid
        (.pick(row, col), .save(dir)). Values are comma-separated; quote
        names with spaces; numbers are numbers; --vary prompt alone takes
        one prompt per line of the cell. For example:

            %%scenario "Hero Knight" --vary seed=1,2,3 --vary lorasScale=0.4,0.7,1
            %%scenario --vary seed=1,2 --vary model="Hero Knight","FLUX.2 dev"

        Line mode:

            %scenario models           your models, then the catalog's size
                read afresh; a name resolves to a model made in another
                kernel within a minute (this kernel's changes: at once)
            %scenario models --search TEXT [--type KIND] [--public] [--all]
                find models (KIND: image, video, 3d, text, lora, composition)
            %scenario model MODEL      a model's details and inputs
            %scenario use MODEL        the default model for %%scenario cells
            %scenario status           backend, key (masked), requests in
                                       flight and queued
            %scenario history [N]      the last N requests (kept across
                                       kernel restarts)
            %scenario job JOB_ID       re-attach to a job, show its outputs
            %scenario cancel JOB_ID|all
                drop queued requests, ask Scenario to cancel jobs
            %scenario wait             wait for every request in flight
            %scenario asset ASSET_ID   show any asset as what it is (image,
                                       video player, 3D model link, text)
            %scenario workflows        your workflows
            %scenario workflow ID [--set NAME=VALUE ...] [-o VAR] [--no-wait]
                run a workflow
            %scenario train NAME --images DIR [--type T]
                            [--captions auto|none] [--dry-run] [--set P=V ...]
                price, caption, upload and train a LoRA; shown live
            %scenario training [MODEL] [--cancel]
                your trainings, or follow one live (after a restart too)
            %scenario train resume NAME | models --drafts | models delete NAME
                a training waiting for a slot; untrained models (drafts)
            %scenario panel [MODEL]    the widget panel
            %scenario sandbox          switch to the embedded local sandbox
            %scenario sandbox reset    empty its world: this home's models,
                                       trainings, jobs and assets
            %scenario use-credentials  switch to the credentials in the
                                       environment
            %scenario help             this text

        Settings: %config ScenarioMagics (default_model, default_aspect,
        thumbnail_size, wait, reuse, max_cost, history_path,
        poll_interval_floor, job_timeout).
        """
        try:
            if cell is None:
                return self.commands.run(line)
            return self.cells.run(line, cell)
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None







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


# IPython's @magic_arguments puts its usage first, as a reST literal block ("::"): `%scenario?` and
# `%scenario help` show plain text, so the marker goes (the usage stays, indented as before).
ScenarioMagics.scenario.__doc__ = (ScenarioMagics.scenario.__doc__ or "").removeprefix("::\n\n")


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
