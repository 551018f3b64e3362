"""The `%scenario` training subcommands: train (and resume), training, and the drafts and paid workbench
requests beside the models and history tables. They reach the shared session through the magics object."""

from __future__ import annotations

import time
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ._commands import NAME_WORDS, _parse, _required, _words, check_variable, settings, training_parameters
from ._display import show_training
from ._errors import NotFoundError, ScenarioError
from ._html import table_bundle


class TrainingCommands:
    """`%scenario train|training ...`, and the training parts of `models` and `history`."""

    def __init__(self, magics: Any) -> None:
        self.magics = magics  # the ScenarioMagics that owns these: its settings, session and shell

    @property
    def client(self):
        return self.magics.client

    def cmd_train(self, rest: list) -> None:
        if rest[:1] == ["resume"]:  # %scenario train resume NAME: a training waiting for a slot, started now
            self._resume(_words(rest[1:]))
            return
        args = _parse("train", rest, (("name",), NAME_WORDS), (("--images",), {"default": ""}),
                      (("--type",), {}), (("--captions",), {"choices": ("auto", "none"), "default": "auto"}),
                      (("--dry-run",), {"action": "store_true"}), (("--set",), {"action": "append"}),
                      (("-o", "--out"), {}), (("--no-wait",), {"action": "store_true"}),
                      (("--force",), {"action": "store_true"}))
        name = _required(_words(args.name), "model name", "train", "e.g. %scenario train Potion Icons --images icons/")
        images = _required(args.images, "--images DIR", "train", "a folder of 5–15 images of at least 1024 px")
        check_variable(args.out)
        parameters = training_parameters(settings(args.set))
        magics = self.magics
        limit = magics.max_cost

        def guard(estimate: Any) -> None:  # the same rule as generations: over max_cost, ask or refuse
            if limit is not None and estimate.creative_units > limit:
                magics._spend_guard(estimate.creative_units)

        try:
            result = self.client.train(name, images, type=args.type, parameters=parameters, dry_run=args.dry_run,
                                       captions=None if args.captions == "none" else "auto", confirm=guard,
                                       force=args.force)
        except KeyboardInterrupt:  # Ctrl-C: one line on where it stopped, never a traceback
            if any(t.name == name for t in self.client.trainings_in_flight()):
                print(f"Stopped while the training of {name} was being started: it may be running; "
                      f'%scenario training "{name}" follows it')
            elif self._prepared_elsewhere(name):
                print(f"Stopped waiting for the training of {name} that another kernel prepares: nothing was sent "
                      f'from here; %scenario training "{name}" follows it once it starts')
            elif self._creation_lost(name):
                print(f"Stopped while its model was being created: nothing was charged for the training; the model "
                      f'may exist as a draft (%scenario models --drafts), reused by %scenario train "{name}"')
            else:
                print(f"Stopped before the training of {name} started: nothing was charged for the training "
                      f"and its model was removed")
            return
        if args.dry_run:
            display(result)
            return
        if args.out:
            magics.user_ns[args.out] = result
        show_training(result, wait=magics.wait and not args.no_wait)

    def _creation_lost(self, name: str) -> bool:
        """Whether this name's newest model creation has no answer (stopped while it waited)."""
        try:
            rows = [r for r in self.client.history.workbench(self.client.backend_id, name) if r.kind == "model"]
        except ScenarioError:
            return False
        return bool(rows) and rows[0].status in ("unknown", "sending")

    def _prepared_elsewhere(self, name: str) -> bool:
        """Whether another process holds this name's claim (a `preparing` row it wrote)."""
        from ._history_trainings import this_process
        try:
            rows = self.client.history.trainings(self.client.backend_id)
        except ScenarioError:
            return False
        return any(r.status == "preparing" and r.name.lower() == name.lower() and r.owner != this_process()
                   for r in rows)

    def _resume(self, name: str) -> None:
        name = _required(name, "model name", "train resume", 'e.g. %scenario train resume "Potion Icons"')
        try:
            handle = self.client.resume_training(name)
        except NotFoundError:
            raise UsageError(f"no training of {name!r} on {self.client.base_url}; %scenario training lists "
                             f"them") from None
        if handle.status != "waiting":
            print(f"{handle.name} ({handle.model_id}) is not waiting for a slot: {handle.stage_words()}")
        show_training(handle, wait=self.magics.wait)

    def cmd_training(self, rest: list) -> None:
        from ._training import eta_words
        args = _parse("training", rest, (("model",), NAME_WORDS), (("-o", "--out"), {}),
                      (("--no-wait",), {"action": "store_true"}), (("--cancel",), {"action": "store_true"}))
        args.model = _words(args.model)
        check_variable(args.out)
        client = self.client
        if args.cancel and not args.model.strip():
            raise UsageError("%scenario training --cancel: name the model whose training to cancel")
        if not args.model.strip():
            handles = client.trainings()
            if not handles:
                print("No trainings on this backend yet; %scenario train NAME --images DIR starts one")
                return
            rows = []
            for t in handles:
                left = t.remaining
                rows.append((t.name, t.model_id, t.type, t.status, "" if t.done else t.stage_words(),
                             f"{t.progress:.0%}", "" if left is None else eta_words(left),
                             "" if t.cost is None else f"{t.cost:g}", len(t.images)))
            display(table_bundle(["name", "model", "type", "status", "stage", "progress", "ETA", "cost", "images"],
                                 rows), raw=True)
            self.workbench_lines()
            return
        try:
            handle = client.training(args.model)
        except NotFoundError:
            raise UsageError(f"no training of {args.model!r} on {client.base_url}; %scenario training lists "
                             f"them") from None
        if args.out:
            self.magics.user_ns[args.out] = handle
        if args.cancel:
            handle.cancel()
            print(f"{handle.name} ({handle.model_id}): {handle.note}")
            return
        show_training(handle, wait=self.magics.wait and not args.no_wait)

    def delete_draft(self, name: str) -> None:
        """`%scenario models delete NAME`: one draft, said what it is, then removed."""
        name = _required(name, "model name", "models delete", 'e.g. %scenario models delete "Potion Icons"')
        removed = self.client.delete_draft(name)
        print(f"Removed the draft {removed.name} ({removed.id}, {removed.type}, never trained, "
              f"{removed.raw.get('trainingImagesNumber', 0)} training images)")

    def drafts(self) -> None:
        """`%scenario models --drafts`: untrained models this project made."""
        drafts = self.client.drafts()
        if not drafts:
            print("No drafts: every model this project made was trained or removed")
            return
        display(table_bundle(["name", "id", "type", "training images"],
                             [(m.name, m.id, m.type, m.raw.get("trainingImagesNumber", 0)) for m in drafts]), raw=True)
        print("A draft is reused by %scenario train of its name; %scenario models delete NAME removes one")

    def workbench_lines(self) -> None:
        """The workbench's paid requests beside the table: captions (made, reused, lost) and trainings whose
        state needs a word (a start whose answer was lost, one waiting for a slot), with how to resolve each."""
        client = self.client
        try:
            captions = client.recorded_captions()
            rows = client.history.trainings(client.backend_id)
        except ScenarioError as exc:  # the tables above were shown; this is extra
            print(f"(the workbench's requests could not be read: {exc})")
            return
        done = [c for c in captions if c.status == "done"]
        unsure = [c for c in captions if c.status != "done"]
        if captions:
            cost = sum(c.cost or 0 for c in done)
            print(f"captions: {len(done)} made ({cost:g} CU), reused by any later training of the same images")
        if unsure:
            print(f"captions with a lost answer: {len(unsure)} ({', '.join(c.name for c in unsure[:5])}): they may "
                  f"have been charged and are not asked again; pass captions={{...}} to write them")
        self._workbench_steps(client)
        for row in rows:
            if row.status == "preparing":
                print(f'training {row.name}: being prepared by {row.owner} (model, captions, uploads); a train of '
                      f'the same name waits for it and follows it. If that kernel is gone, %scenario train '
                      f'"{row.name}" takes it over (its model and paid captions are reused)')
            elif row.status == "unknown":
                print(f'training {row.name} ({row.model_id}): start sent, answer lost; followed until the model '
                      f'shows whether it started (%scenario training "{row.name}")')
            elif row.status == "waiting":
                print(f'training {row.name} ({row.model_id}): waiting for a training slot, model and captioned '
                      f'images kept; it starts by itself, or now with %scenario train resume "{row.name}"')

    @staticmethod
    def _workbench_steps(client: Any) -> None:
        """Models created and training images uploaded (each a row of the history, `kind` model / upload): how
        many, and each whose answer was lost with how it is settled."""
        try:
            steps = client.history.workbench(client.backend_id)
        except ScenarioError:
            return
        made = [r for r in steps if r.kind == "model" and r.status == "success"]
        sent = [r for r in steps if r.kind == "upload" and r.status == "success"]
        if made or sent:
            cost = sum(r.cost or 0 for r in made + sent)
            print(f"models created: {len(made)} · training images uploaded: {len(sent)} ("
                  + (f"{cost:g} CU" if cost else "Scenario names no price for either") + ")")
        lost = [r for r in steps if r.status == "unknown" or (r.status == "sending" and  # not one under way now
                                                               time.time() - (r.updated_at or 0) > 120)]
        for row in lost[:5]:
            image = row.prompt.removeprefix("training image ")
            what = "creating the model" if row.kind == "model" else f"uploading {image}"
            print(f'{what} of {row.model_name}: the answer was lost, it may exist (unknown); the next %scenario train '
                  f'"{row.model_name}" looks for it ' + ("by name" if row.kind == "model" else "on the model's "
                                                          "training images") + " and settles it")
