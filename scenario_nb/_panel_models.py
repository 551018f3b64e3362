"""The panel's model picker: the list (mine or the public catalog, filtered by name), the picked model and the
base it runs through, and a live row for each of my models still training."""

from __future__ import annotations

import html
import threading
from types import SimpleNamespace
from typing import Any, Callable, Optional

from . import _light_widgets as w

from ._errors import InputError, ScenarioError
from ._models import Model, type_words
from ._panel_style import error_line, fit_width, fixed_label, quiet
from ._training import Training

MY_MODELS, PUBLIC = "My models", "Public catalog"


class ModelPicker:
    """Part of `Panel`: what it reads of the rest of the panel is declared here."""

    client: Any
    comm: Any  # the widget's own: None once the panel is closed
    scope: w.ToggleButtons
    model_menu: w.Dropdown
    model_filter: w.Text
    model_filter_note: w.HTML
    model_hint: w.HTML
    model_message: w.HTML
    trainings: w.VBox
    training_rows: dict[str, SimpleNamespace]
    generate_button: w.Button
    cost: w.HTML
    _wanted: Optional[str]
    _listed: list[Model]
    _loader: threading.Thread
    _load_token: int
    _state_lock: threading.RLock
    _token_lock: threading.Lock
    _model: Optional[Model]
    _runnable: Optional[Model]
    _building: bool
    _build_form: Callable[[Model], None]
    _on_prompt: Callable[[Any], None]
    _refresh_snapshot: Callable[[], None]

    # -- Models --------------------------------------------------------------------------------------
    def _load_models(self, quietly: bool = False) -> threading.Thread:
        """Fill the dropdown in the background so the panel appears at once.

        The list is exactly `client.models(public=…)`, as `%scenario models [--public]` shows it. Each load
        has a token: a load overtaken by a newer one (the scope changed meanwhile) drops its result.
        `quietly`: the list stays as it is until the new one is in (the picked model and its form stay).
        """
        public = self.scope.value == PUBLIC
        with self._token_lock:  # never the state lock here: the poller thread calls this on a trained model
            self._load_token += 1
            token = self._load_token
        if not quietly:
            self._building = True
            try:
                self.model_menu.options, self.model_menu.value = [("Loading models…", "")], ""
            finally:
                self._building = False

        def load() -> None:
            try:
                models, failure = self.client.models(public=public), None
            except ScenarioError as exc:
                models, failure = [], exc
            with self._state_lock:
                if token != self._load_token or self.comm is None:
                    return  # a newer load owns the list, or the panel was closed meanwhile
                self._show_loaded(models, failure, public)
            if models and not public and token == self._load_token:
                self._follow_trainings(models)  # outside the lock: it asks the client, which may wait

        self._loader = threading.Thread(target=load, name="scenario-panel-models", daemon=True)
        self._loader.start()
        return self._loader

    def _models_changed(self) -> None:
        """This client made, trained or removed a model (in a cell, or here): my models are read again."""
        if self.scope.value == MY_MODELS:
            self._load_models(quietly=True)

    def _show_loaded(self, models: list[Model], failure: Optional[ScenarioError], public: bool) -> None:
        if failure is not None or not models:
            self.model_menu.options = [("(no models)", "")]
            self.model_message.value = error_line(str(failure)) if failure is not None else quiet(
                "No models here yet" + ("" if public else "; switch to the public catalog"))
            return
        self.model_message.value = ""
        self._listed = models
        self._show_models(self._wanted)

    def _show_models(self, wanted: Optional[str] = None) -> None:
        """The listed models whose name or id holds the filter (as `%scenario models FILTER` keeps them)."""
        with self._state_lock:
            self._show_listed(wanted)

    def _show_listed(self, wanted: Optional[str]) -> None:
        query = self.model_filter.value.strip().lower()
        models = [m for m in self._listed if query in m.name.lower() or query in m.id.lower()]
        if not models:
            self.model_filter_note.value = quiet(f"no model matches {self.model_filter.value.strip()!r}")
            return
        self.model_filter_note.value = quiet(f"{len(models)} of {len(self._listed)}") if query else ""
        options = [(f"{m.name} — {type_words(m)}" + ("" if m.trained else f" ({m.status})"), m.id)
                   for m in models]
        ids = [m.id for m in models]
        current = wanted or self.model_menu.value
        keep = current if current in ids else next((m.id for m in models if m.trained), ids[0])
        self.model_menu.layout.width = fit_width([o[0] for o in options], extra=3)
        if keep == self.model_menu.value:
            self._building = True  # the picked model stays: no rebuild of its form
            try:
                self.model_menu.options = options
                self.model_menu.value = keep
            finally:
                self._building = False
        else:
            self.model_menu.options = options
            self.model_menu.value = keep

    def _follow_trainings(self, models: list[Model]) -> None:
        """A row for each of your models in training (those this client follows, and any the list shows
        as training), updated live; when one is trained, the model list is read again so it can be used."""
        followed = {t.model_id: t for t in self.client.trainings_in_flight()}
        for model in models:
            if model.status == "training" and model.id not in followed:
                try:
                    followed[model.id] = self.client.training(model.id)
                except ScenarioError as exc:
                    self.model_message.value = error_line(f"could not follow the training of {model.name}: {exc}")
        for training in followed.values():
            with self._token_lock:  # two loads may follow the same training: one row each
                if training.model_id in self.training_rows:
                    continue
                self.training_rows[training.model_id] = SimpleNamespace()
            self._add_training_row(training)

    def _add_training_row(self, training: Training) -> None:
        name = w.HTML(f"<b>{html.escape(training.name)}</b> " + quiet(html.escape(training.type)),
                      layout=w.Layout(width="24em", max_width="100%", overflow="hidden"))
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="11.5em"))
        words = w.HTML()
        row = w.HBox([fixed_label("Training", "6em"), name, bar, words], layout=w.Layout(align_items="center",
                                                                                    flex_flow="row wrap"))
        row.add_class("scenario-training-row")
        self.training_rows[training.model_id] = SimpleNamespace(row=row, bar=bar, words=words)
        self.trainings.children = tuple(self.trainings.children) + (row,)
        reloaded: list[bool] = []

        def update(t: Training) -> None:  # poller thread: set values only
            bar.value = t.progress
            words.value = quiet(html.escape(" · ".join(t.state_words())))
            if not t.done:
                return
            bar.bar_style = "success" if t.ok else "danger"
            if t.ok and not reloaded:
                reloaded.append(True)
                words.value = quiet("trained: pick it in the model list")
                self._wanted = self.model_menu.value or None
                self._load_models()  # it is listed as trained now, and can generate
            elif not t.ok:
                reason = t.error or (str(t.exception) if t.exception else "")
                words.value = error_line(f"{t.stage_words()}" + (f": {reason}" if reason else ""))

        training.on_update(update)

    def select_model(self, text: str) -> str:
        """Pick the model whose name (or id) contains `text`, as a click in the menu would."""
        value = next((v for label, v in self.model_menu.options
                      if v and (text == v or text.lower() in label.lower())), None)
        if value is None:
            raise InputError(f"no model matching {text!r} in the panel's list")
        self.model_menu.value = value
        return value

    def _on_model(self, change) -> None:
        if not change["new"] or self._building:
            return
        with self._state_lock:
            self._pick(change["new"])

    def _pick(self, model_id: str) -> None:
        try:
            self._model = self.client.model(model_id)
            self._runnable, _ = self.client.route(self._model)
        except ScenarioError as exc:
            self._model, self._runnable = None, None
            self.model_message.value = error_line(str(exc))
            self.model_hint.value = ""
            self.generate_button.disabled = True
            self.cost.value = ""
            return
        self.model_message.value = ""
        routed = self._runnable is not self._model
        self.model_hint.value = quiet(f"runs through {self._runnable.name}") if routed else ""
        self._build_form(self._runnable)
        self.generate_button.disabled = False
        self._on_prompt(None)
        self._refresh_snapshot()  # the saved line names the model picked last

    # -- Request -------------------------------------------------------------------------------------
    def selected_model(self) -> Optional[Model]:
        return self._model
