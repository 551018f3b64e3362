"""The client's training front: a LoRA trained on a folder of images (checked, priced, captioned, uploaded and
started by the engine, idempotent per name), captions on their own, trainings re-attached or listed, drafts."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._client_models import CatalogCache
from ._engine import Engine
from ._errors import InputError, NotFoundError, ScenarioError
from ._estimate import CostEstimate
from ._history import History
from ._models import Model
from ._local_images import LocalImage, load_images
from ._training import EDIT_TYPES, STANDARD_TYPES, Captions, Training, TrainingPlan


class TrainingFront:
    """Part of `ScenarioClient`: what it reads of the rest of the client is declared here."""

    _engine: Engine
    _cache: CatalogCache
    backend_id: str
    models: Callable[..., list[Model]]
    find_model: Callable[[str], Model]
    public_models: Callable[[], list[Model]]
    _own_models: Callable[[], list[Model]]

    if TYPE_CHECKING:  # the client's read-only property
        @property
        def history(self) -> History: ...

    # -- Training custom models ------------------------------------------------------------------------
    def training_types(self) -> list[str]:
        """The LoRA types `train()` takes, the most common in the catalog (public and yours) first."""
        counts: dict = {}
        try:
            for model in self.public_models() + self._own_models():
                if model.type in STANDARD_TYPES:
                    counts[model.type] = counts.get(model.type, 0) + 1
        except ScenarioError:
            pass
        return sorted(STANDARD_TYPES, key=lambda t: (-counts.get(t, 0), STANDARD_TYPES.index(t)))

    def _training_type(self, model_type: Optional[str]) -> str:
        if model_type is None:
            return self.training_types()[0]
        wanted = str(model_type).strip()
        if wanted in EDIT_TYPES:
            raise InputError(f"{wanted} is an edit LoRA: it trains on before/after pairs, which train() does not "
                             f"build yet; train a standard LoRA such as {self.training_types()[0]}")
        if wanted not in STANDARD_TYPES:
            close = difflib.get_close_matches(wanted, STANDARD_TYPES, n=2, cutoff=0.6)
            tip = f"did you mean {' or '.join(close)}?" if close else f"one of {', '.join(STANDARD_TYPES)}"
            raise InputError(f"unknown training type {wanted!r}; {tip}")
        return wanted

    @staticmethod
    def _caption_plan(captions: Any, images: list[LocalImage]) -> Union[str, dict, None]:
        """"auto", None, or {name: caption} checked against the training set's file names."""
        if captions is None or (isinstance(captions, str) and captions.strip().lower() == "none"):
            return None
        if isinstance(captions, str):
            if captions.strip().lower() == "auto":
                return "auto"
            raise InputError(f"captions is \"auto\", None or a dict {{filename: caption}}, not {captions!r}")
        if not isinstance(captions, dict):
            raise InputError("captions is \"auto\", None or a dict {filename: caption} (e.g. from "
                             "client.caption_images)")
        names = [i.name for i in images]
        for key, value in captions.items():
            if key not in names:
                raise InputError(f"captions names {key!r}, which is not one of the training images "
                                 f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
            if not isinstance(value, str):
                raise InputError(f"the caption of {key} must be text, not {type(value).__name__}")
        return {name: str(captions.get(name, "")).strip() for name in names}

    def caption_images(self, images: Any, *, details_level: str = "action",
                       max_cost: Optional[float] = None) -> Captions:
        """Caption a training set through the API (all in flight at once): an editable `{filename: caption}`
        table. Change any caption, then pass it to `train(..., captions=table)`. Captions cost a few CU each;
        `max_cost` refuses before spending when their price is over it."""
        return self._engine.caption_images(load_images(images), details_level, max_cost)

    def train(self, name: str, images: Any, *, type: Optional[str] = None,
              captions: Union[str, dict, None] = "auto", parameters: Optional[dict] = None, dry_run: bool = False,
              max_cost: Optional[float] = None, confirm: Optional[Callable[[CostEstimate], Any]] = None,
              force: bool = False) -> Union[Training, CostEstimate]:
        """Train a LoRA on a folder (or a list of paths or Pillow images); returns its live `Training`.

        Everything is checked before anything is sent or paid (the images, the type, the name, then the
        parameters by the server's own dry run). Then: the price (`dry_run=True` returns it and removes the
        throwaway model; a price over `max_cost` is refused, nothing spent; `confirm(estimate)` is called with
        it before anything is paid, and stops the training by raising), captions (`"auto"`: one caption
        per image through the API, all at once; a dict `{filename: caption}`; None: none), the upload, and the
        start of the training. The training is in the history before it starts; a new kernel follows it on.
        `type` defaults to the most common trainable LoRA type in the catalog.

        Training is idempotent per name: a training of this name already under way (here, in another kernel,
        or waiting for a slot) or done is returned and followed, nothing paid again; a draft of this name (an
        untrained model this project made) is reused, its uploaded images kept. `force=True` makes a second
        model of the same name deliberately.
        """
        name = (name or "").strip() if isinstance(name, str) else ""
        if not name:
            raise InputError("a training needs a name for its model, e.g. client.train(\"Potion Icons\", folder)")
        if len(name) > 64:
            raise InputError(f"the model name is {len(name)} characters; Scenario takes at most 64")
        model_type = self._training_type(type)
        if parameters is not None and not isinstance(parameters, dict):
            raise InputError("parameters is a dict such as {\"nbEpochs\": 4}")
        loaded = load_images(images)
        plan = TrainingPlan(name, model_type, loaded, self._caption_plan(captions, loaded), dict(parameters or {}),
                            force=bool(force))
        try:
            result = self._engine.train(plan, dry_run=dry_run, max_cost=max_cost, confirm=confirm)
        finally:
            self._cache.forget()  # a model may have been made
        if isinstance(result, Training):
            result.on_update(self._cache.forget_when_trained)
        return result

    def training(self, model: str) -> Training:
        """Re-attach to a training by model id (or by the name of one of this backend's trainings): the one
        live handle, followed to the end while it trains."""
        model = (model or "").strip()
        if not model:
            raise InputError("no model given; client.trainings() lists them")
        model_id = model
        if not model.startswith("model_"):
            rows = [r for r in self.history.trainings(self.backend_id) if r.name.lower() == model.lower()]
            if rows and rows[0].status == "preparing":
                raise InputError(f"{rows[0].name} is being prepared by {rows[0].owner} (captions, uploads): its "
                                 f"training starts there; train() of the same name waits for it and follows it")
            model_id = rows[0].model_id if rows else self.find_model(model).id
        handle = self._engine.reattach_training(model_id)
        handle.on_update(self._cache.forget_when_trained)
        return handle

    def drafts(self) -> list[Model]:
        """Untrained models this project made (a training stopped before its start, a lost answer, a model that
        could not be removed): `train` of the same name reuses one; `delete_draft` removes one."""
        return [Model.parse(m) for m in self._engine.drafts()]

    def delete_draft(self, model: str) -> Model:
        """Remove one draft, by name or id (only an untrained model this project made); returns what it was."""
        removed = Model.parse(self._engine.delete_draft(model))
        self._cache.forget(removed.id)
        return removed

    def recorded_captions(self) -> list:
        """This backend's paid captions as the history holds them (`CaptionRecord`: image digest, settings,
        state `done` / `unknown` / `sending`, caption, cost), newest first."""
        return self.history.captions(self.backend_id)

    def resume_training(self, model: str) -> Training:
        """Start now a training that waits for a slot (a start refused with 429 keeps its model and images and
        is started again by itself); by model id or name. Returns its live handle, whatever its state."""
        handle = self.training(model)
        self._engine.resume_training(handle)
        return handle

    def trainings(self) -> list[Training]:
        """This backend's trainings, newest first: every one in the history (those still training are
        followed on) and any the API lists as training that this machine never saw."""
        self._engine.recover_trainings()
        handles: list[Training] = []
        seen: set = set()
        for record in self.history.trainings(self.backend_id):
            seen.add(record.model_id)
            live = self._engine.live_training(record.model_id)
            if live is not None:
                handles.append(live)
            elif record.status == "preparing":
                continue  # a claim, being prepared elsewhere: %scenario training says so below its table
            elif not record.in_flight:
                handles.append(self._engine.finished_training(record))
            else:
                try:
                    handles.append(self._engine.reattach_training(record.model_id))
                except NotFoundError:
                    continue
        try:
            for model in self.models(status="training"):
                if model.id not in seen:
                    handles.append(self._engine.reattach_training(model.id))
        except ScenarioError:
            pass
        return handles

    def trainings_in_flight(self) -> list[Training]:
        """Trainings this client is following that have not ended."""
        return self._engine.trainings_in_flight()
