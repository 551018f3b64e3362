"""The `%%scenario` cell: one request per prompt (or per `--each` line), or a grid of them (`--vary`); validated
before any spending, priced and guarded, shown from history when already paid for, then shown live.

The settings and the magic itself are in `_magics`, the line subcommands in `_commands`; like them, this reaches
the shared session through the magics object that owns it.
"""

from __future__ import annotations

import csv
import shlex
from pathlib import Path
from typing import Any, Optional

from IPython.core.error import UsageError
from IPython.display import display

from ._commands import check_save_folder, check_variable, fill_prompt, refuse_reserved, settings
from ._display import show_generations, show_grid
from ._generation import Generation
from ._errors import InputError
from ._models import aspect_inputs, request_inputs


class Cells:
    """Runs `%%scenario` cells for the magics object that owns it (its settings, its session)."""

    def __init__(self, magics: Any) -> None:
        self.magics = magics
        self._routing_shown: set = set()  # models whose "runs through" line this session already printed

    # -- One request per prompt -------------------------------------------------------------------------------------
    def run(self, line: str, cell: str):
        """Run one `%%scenario` cell: `line` its first line, `cell` its body."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%scenario: {exc} (check the quotes)") from None
        args = self.magics.scenario.parser.parse_intermixed_args(words)  # POSIX quoting: "Hero Knight" is one name
        if args.model and args.rest:  # the words before and between the options name one model: Hero Knight
            args.model, args.rest = " ".join([args.model, *args.rest]), []
        if args.vary:
            return self._grid(args, cell)
        if args.rest or args.public:
            raise UsageError("%%scenario takes one MODEL; put the prompt in the cell body")
        check_variable(args.out)
        check_save_folder(args.save)
        client = self.magics.client
        model = self._model(args.model)
        text = fill_prompt(cell, self.magics.user_ns)
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
        if self.magics.reuse and not args.force:
            for index, body in enumerate(bodies):
                handles[index] = client.previous(model, body)
        fresh = [i for i, h in enumerate(handles) if h is None]
        if fresh and self.magics.max_cost is not None:
            self.magics._spend_guard(sum(client.estimate(model, prompts[i], **inputs).creative_units for i in fresh))
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
            self.magics.user_ns[args.out] = [by_prompt[line] for line in lines] if args.each else ready[0]
        save = str(Path(args.save).expanduser()) if args.save else None
        show_generations(ready, wait=self.magics.wait and not args.no_wait, thumbnail_size=self.magics.thumbnail_size,
                         after=(lambda h: self._save(h, save)) if save else None)
        return None

    def _grid(self, args: Any, cell: str):
        """`%%scenario --vary ...`: a grid of tiles, priced and guarded like any cell, shown as one sheet."""
        from ._grid import GridPlan
        if args.rest or args.public or args.each:
            raise UsageError("%%scenario --vary: give one MODEL (or a model axis) and no --each; each --vary "
                             "is one axis")
        check_variable(args.out)
        check_save_folder(args.save)
        vary = parse_vary(args.vary)
        text = fill_prompt(cell, self.magics.user_ns).strip()
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
        client = self.magics.client
        model = None if "model" in vary else self._model(args.model)
        models = [model] if model else [client.find_model(str(v)) for v in vary["model"]]
        extra = settings(args.set)
        for chosen in models:
            refuse_reserved(extra, model_inputs(chosen, client.route(chosen)[1]))
        clash = sorted(set(extra) & set(vary))
        if clash:
            raise UsageError(f"--set {clash[0]}= and --vary {clash[0]} both set {clash[0]}; keep one")
        inputs = {}  # each model's own mapping of --aspect (or the default aspect), -n, --seed and --set
        for chosen in models:
            runnable = client.route(chosen)[0]
            inputs[chosen.id] = request_inputs(runnable, aspect=args.aspect or self._default_aspect(runnable),
                                               num=args.num, seed=args.seed, settings=extra)
        plan = GridPlan(client, text, model=model, vary=vary, reuse=self.magics.reuse and not args.force,
                        inputs_by_model=inputs, source="magic")
        if args.dry_run:
            total = plan.estimate()
            line = (f"Estimated cost: {total:g} CU for {len(plan.fresh)} new tile(s) of {len(plan.cells)}"
                    + (f" ({len(plan.reused)} already paid for)" if plan.reused else "") + " — dry run, nothing "
                    "was spent.")
            display({"text/plain": line, "text/markdown": line}, raw=True)
            return None
        if plan.fresh and self.magics.max_cost is not None:
            self.magics._spend_guard(plan.estimate())
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
            self.magics.user_ns[args.out] = grid
        save = str(Path(args.save).expanduser()) if args.save else None
        show_grid(grid, wait=self.magics.wait and not args.no_wait, after=(lambda g: self._save_grid(g, save)) if save
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
        chosen = text or self.magics.session.current_model or self.magics.default_model
        if not chosen:
            names = ", ".join(m.name for m in self.magics.client.models()[:3]) or "see %scenario models --public"
            raise UsageError(f"no model given: write %%scenario MODEL (e.g. {names}) or pick one with "
                             f"%scenario use MODEL")
        return self.magics.client.find_model(chosen)

    def _default_aspect(self, model) -> Optional[str]:
        """`default_aspect` when this model offers it as `--aspect` would find it (21:9 too, which reduces to
        7:3), else None: the model's own default."""
        if not self.magics.default_aspect:
            return None
        try:
            aspect_inputs(model, self.magics.default_aspect)
        except InputError:
            return None
        return self.magics.default_aspect


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
