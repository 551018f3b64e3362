"""`Panel`: the click-first front door, built from each model's own `inputs`.

It drives the same session as the magics (one client, one poller, one history), or the client it is given
(`Panel(client=c)`, which starts no session), and keeps no logic of its own that they need: validation,
aspect mapping, cost and routing come from the shared modules. Updates from the poller thread only set
widget values. The panel is itself a widget (a VBox), so it composes and closes like any other; its saved
output also carries a static snapshot of the gallery for renders without widgets (GitHub, nbviewer,
nbconvert).
"""

from __future__ import annotations

import html
import json
import math
import threading
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import ipywidgets as w

from ._html import error_html, magic_text
from ._thumbnails import thumbnail_grid
from ._errors import InputError, ScenarioError
from ._gallery import (ACCENT, TILE, TILE_BOX, TILE_INNER, Item, caption_html, code_html, image_area, other_area,
                       snapshot_html)
from ._generation import Generation
from ._models import Model, ModelInput, aspect_inputs, aspect_options, request_inputs, type_words
from ._training import Training

SIZE_INPUTS = ("aspectRatio", "width", "height")
COUNT_INPUT = "numOutputs"
DEFAULT_CHOICE = "model default"   # a real, visible option: a dropdown never shows a blank
VIEW_MAX = 1024                    # the View shows the image at its real size, up to this
QUIET = "color:#666;font-size:12px"
JOB_COLUMNS = "1.6em 24em 12em 12em 6.5em 7.5em"  # icon, model and prompt, progress, seed, cost, action
STATUS_ICONS = {"sending": "⋯", "waiting": "⋯", "unknown": "?", "queued": "⋯", "in-progress": "◔",
                "success": "✓", "failure": "✕", "canceled": "⊘", "not-sent": "⊘"}
STATUS_COLORS = {"success": "#2e7d32", "failure": "#b00020", "canceled": "#b26a00"}
MY_MODELS, PUBLIC = "My models", "Public catalog"
# Where the live panel (or its saved widget state) is drawn, the static snapshot right after it is hidden.
SNAPSHOT_STYLE = ("<style>.jp-OutputArea-child:has(.scenario-panel) + .jp-OutputArea-child "
                  ".scenario-gallery-snapshot, .output_area:has(.scenario-panel) + .output_area "
                  ".scenario-gallery-snapshot {display: none}</style>")


def _error_html(text: str) -> str:
    return error_html(text, inline=True)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _quiet(text: str) -> str:
    return f'<span style="{QUIET}">{html.escape(text)}</span>'


def _em(texts, per_char: float = 0.62, extra: float = 1.5, least: float = 4) -> str:
    """A width that fits the longest text (labels are never cut)."""
    longest = max((len(str(t)) for t in texts), default=0)
    return f"{max(least, math.ceil(longest * per_char + extra))}em"


def _label(text: str, width: str) -> w.Label:
    return w.Label(text, layout=w.Layout(width=width, min_width=width))


def control_for(spec: ModelInput) -> w.Widget:
    """One widget for one model input, chosen by its type (allowed values, ranges, booleans, files)."""
    if spec.type in ("file", "file_array"):
        many = spec.type == "file_array"
        return w.FileUpload(accept="image/*", multiple=many, description="Choose images" if many else "Choose image",
                            layout=w.Layout(width="auto"))
    if spec.allowed_values:
        values = list(spec.allowed_values)
        if spec.has_default and spec.default in values:
            options = [(f"{v} (default)" if v == spec.default else str(v), v) for v in values]
            value = spec.default
        else:
            options, value = [(DEFAULT_CHOICE, DEFAULT_CHOICE)] + [(str(v), v) for v in values], DEFAULT_CHOICE
        return w.Dropdown(options=options, value=value, layout=w.Layout(width=_em([o[0] for o in options], extra=3)))
    if spec.type == "boolean":
        return w.Checkbox(value=bool(spec.default), indent=False, layout=w.Layout(width="auto"))
    if spec.type == "number" and spec.min is not None and spec.max is not None and spec.has_default \
            and spec.max - spec.min <= 100000:
        integral = all(float(x).is_integer() for x in (spec.min, spec.max, spec.step or 1, spec.default or 0))
        cls = w.IntSlider if integral else w.FloatSlider
        return cls(value=spec.default, min=spec.min, max=spec.max, step=spec.step or (1 if integral else 0.01),
                   continuous_update=False, layout=w.Layout(width="22em"))
    placeholder = spec.raw.get("placeholder") or ("empty: the model decides" if spec.type != "string" else "")
    if spec.type.endswith("_array"):
        placeholder = placeholder or "comma-separated"
    return w.Text(value="" if spec.default in (None, [], "") else str(spec.default), placeholder=placeholder,
                  continuous_update=False, layout=w.Layout(width="22em"))



def _where(client, session) -> str:
    """Where this panel's generations go, and whether they cost anything."""
    if session is not None and session.client is client and session.backend == "sandbox":
        return "on the embedded sandbox: nothing is charged"
    return f"on {client.base_url} (key {client.api_key_masked}): spends creative units"

class Panel(w.VBox):
    """Model, prompt, aspect and count, more settings, cost, live job rows and a gallery of tiles."""

    def __init__(self, model: Optional[str] = None, client=None, **kwargs) -> None:
        super().__init__(**kwargs)
        from ._session import Session, current_session, get_session
        session: Optional[Session]
        self._follows_session = client is None  # then it refuses to bill a backend the session has left
        if client is None:
            session = get_session()
            client = session.client
        else:  # used as given: no shared session (nor its embedded sandbox) is started for it
            session = current_session()
        self.client = client
        self.backend_line = w.HTML(_quiet(_where(self.client, session)))
        shared = session if session is not None and session.client is client else None
        self._wanted = model or (shared.current_model if shared else None)  # `%scenario use` of that session
        self._model: Optional[Model] = None
        self._runnable: Optional[Model] = None
        self._controls: dict[str, w.Widget] = {}
        self._cost_timer: Optional[threading.Timer] = None
        self._aspect_choice: Optional[str] = None   # the user's own pick, kept across model changes
        self._building = False
        self._touched = False                        # no error is shown before the user did anything
        self._display_id: Optional[str] = None
        self._snapshot_lock = threading.Lock()
        self._gallery_lock = threading.Lock()
        self.generations: list[Generation] = []
        self.items: list[Item] = []                  # gallery outputs, newest first
        self.job_rows: dict[int, SimpleNamespace] = {}
        self.training_rows: dict[str, SimpleNamespace] = {}  # model id -> its row in the trainings list

        self.add_class("scenario-panel")
        self.layout = w.Layout(padding="8px 4px", max_width="1100px")
        self.scope = w.ToggleButtons(options=[MY_MODELS, PUBLIC], value=MY_MODELS,
                                     style={"button_width": "auto"})
        self.model_menu = w.Dropdown(options=[("Loading models…", "")], value="", layout=w.Layout(width="20em"))
        self.model_hint = w.HTML()
        self.model_filter = w.Text(placeholder="filter by name", continuous_update=False,
                                   layout=w.Layout(width="11em"))
        self.model_filter_note = w.HTML()
        self._listed: list[Model] = []
        self.model_message = w.HTML()
        self.trainings = w.VBox()  # your models still training: a row each, with its progress
        self.trainings.add_class("scenario-trainings")
        self.prompt = w.Textarea(placeholder="Describe what to generate…", rows=3, layout=w.Layout(width="40em"))
        self.prompt_info = w.HTML()
        self.aspect = w.Dropdown(options=[(DEFAULT_CHOICE, DEFAULT_CHOICE)], value=DEFAULT_CHOICE,
                                 layout=w.Layout(width="10em"))
        self.aspect_note = w.HTML()
        self.count = w.Dropdown(options=[("1", 1)], value=1, layout=w.Layout(width="5em"))
        self.settings_box = w.VBox()
        self.settings = w.Accordion(children=[self.settings_box], selected_index=None,
                                    layout=w.Layout(width="46em"))
        self.settings.set_title(0, "More settings")
        self.cost = w.HTML(_quiet("cost: pick a model"))
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="magic",
                                        disabled=True, layout=w.Layout(width="auto", min_width="9em"))
        self.message = w.HTML()
        self.jobs = w.VBox()
        self.save_folder = w.Text(value="outputs/panel", layout=w.Layout(width="14em"))
        self.save_button = w.Button(description="Save selected", icon="save", layout=w.Layout(width="auto"))
        self.save_note = w.HTML()
        self.selection_note = w.HTML(_quiet("· click a tile to select it"))
        self.viewer_image = w.Image(format="jpeg", layout=w.Layout(object_fit="contain", max_width="100%",
                                                                   max_height="640px", flex="0 1 auto"))
        self.viewer_info = w.HTML(layout=w.Layout(flex="1 1 300px", min_width="260px", margin="0 0 0 14px"))
        self.viewer_close = w.Button(description="Close", icon="times", layout=w.Layout(width="auto"))
        self.viewer = w.VBox([w.HBox([w.HTML("<b>View</b>"), self.viewer_close],
                                     layout=w.Layout(justify_content="space-between", width="100%")),
                              w.HBox([self.viewer_image, self.viewer_info],
                                     layout=w.Layout(align_items="flex-start", flex_flow="row wrap"))],
                             layout=w.Layout(display="none", border=f"1px solid {ACCENT}", padding="8px",
                                             margin="6px 0 10px 0"))
        self.viewer.add_class("scenario-viewer")
        self.gallery = w.GridBox(layout=w.Layout(
            grid_template_columns=f"repeat(auto-fill, {TILE_BOX}px)", grid_gap="12px", width="100%",
            overflow="visible"))
        self.gallery.add_class("scenario-gallery")
        self.gallery_title = w.HTML("<b>Gallery</b> " + _quiet("newest first"))

        for widget, name in ((self.model_menu, "model"), (self.aspect, "aspect"), (self.count, "count"),
                             (self.prompt, "prompt-input"), (self.generate_button, "generate"),
                             (self.message, "generate-note"), (self.save_button, "save"),
                             (self.save_note, "save-note"), (self.selection_note, "selection-note"),
                             (self.aspect_note, "aspect-note"), (self.model_hint, "model-hint"),
                             (self.cost, "cost")):
            widget.add_class(f"scenario-{name}")
        label = "6em"
        self.children = [
            w.HBox([w.HTML("<b style='font-size:15px'>Scenario</b>", layout=w.Layout(width=label)), self.scope,
                    self.backend_line], layout=w.Layout(align_items="center")),
            w.HBox([_label("Model", label), self.model_menu, self.model_filter, self.model_filter_note,
                    self.model_hint], layout=w.Layout(align_items="center")),
            self.model_message,
            self.trainings,
            w.HBox([_label("Prompt", label), w.VBox([self.prompt, self.prompt_info])]),
            w.HBox([_label("Aspect", label), self.aspect, _label("Images", "4.5em"), self.count, self.aspect_note],
                   layout=w.Layout(align_items="center")),
            self.settings,
            w.HBox([self.generate_button, self.cost, self.message],
                   layout=w.Layout(align_items="center", margin="6px 0")),
            self.jobs,
            w.HBox([self.gallery_title, self.selection_note], layout=w.Layout(align_items="center",
                                                                               margin="10px 0 0 0")),
            w.HBox([_label("Save to", "4.5em"), self.save_folder, self.save_button, self.save_note],
                   layout=w.Layout(align_items="center")),
            self.viewer,
            self.gallery,
        ]

        self.scope.observe(lambda _: self._load_models(), "value")
        self.model_filter.observe(lambda _: self._show_models(), "value")
        self.model_menu.observe(self._on_model, "value")
        self.prompt.observe(self._on_prompt, "value")
        self.aspect.observe(self._on_aspect, "value")
        self.count.observe(lambda _: self._schedule_cost(), "value")
        self.generate_button.on_click(lambda _: self.generate())
        self.save_button.on_click(lambda _: self.save_selected())
        self.viewer_close.on_click(lambda _: self.close_view())
        self._load_models()

    # -- Being a widget ------------------------------------------------------------------------------
    @property
    def widget(self) -> "Panel":
        """The panel itself (kept for code written when the panel only held a widget)."""
        return self

    def wait_ready(self, timeout: float = 60) -> "Panel":
        """Block until the model list is loaded (for scripts and tests; the UI never waits)."""
        self._loader.join(timeout)
        return self

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """One meaningful line: what a static render shows instead of `VBox(children=…)`."""
        model = self._model.name if self._model else "no model picked"
        images = sum(1 for i in self.items if i.kind == "image")
        running = sum(1 for g in self.generations if not g.done)
        text = f"Scenario panel · {model} · {images} image{'s' * (images != 1)} in the gallery"
        if running:
            text += f" · {running} job{'s' * (running != 1)} running"
        if self.items:
            text += f" · newest: {self.items[0].handle.prompt[:60]!r}"
        return text

    def _repr_mimebundle_(self, **kwargs) -> dict:
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self.summary()
        if self.items:
            data["text/html"] = snapshot_html(self.items, len(self.items))
        return data

    def snapshot_bundle(self) -> dict:
        """The gallery as static HTML, hidden by CSS wherever the live panel is drawn right above it."""
        data = {"text/plain": self.summary() if self.items else ""}
        data["text/html"] = SNAPSHOT_STYLE + (snapshot_html(self.items, len(self.items)) if self.items else "")
        return data

    def _ipython_display_(self) -> None:
        """The widget, then a snapshot output that follows the gallery through its display id.

        The snapshot is a separate output so that updating it never redraws the live widget (which would
        take the focus from someone typing); saved notebooks show it where widgets cannot be drawn.
        """
        from IPython.display import display
        display(self._repr_mimebundle_(), raw=True)
        self._display_id = self._display_id or uuid.uuid4().hex
        display(self.snapshot_bundle(), raw=True, display_id=self._display_id)

    def _refresh_snapshot(self) -> None:
        if self._display_id is None or self.comm is None:
            return
        from IPython.display import update_display
        with self._snapshot_lock:
            update_display(self.snapshot_bundle(), raw=True, display_id=self._display_id)

    def close(self) -> None:
        """Close the panel and every widget in it; running jobs go on (they are in the history)."""
        if self._cost_timer is not None:
            self._cost_timer.cancel()
        todo = list(self.children)
        seen = set()
        while todo:
            widget = todo.pop()
            if id(widget) in seen:
                continue
            seen.add(id(widget))
            todo += list(getattr(widget, "children", ()))
            widget.close()
        super().close()

    # -- Models --------------------------------------------------------------------------------------
    def _load_models(self) -> threading.Thread:
        """Fill the dropdown in the background so the panel appears at once.

        The list is exactly `client.models(public=…)`, as `%scenario models [--public]` shows it.
        """
        public = self.scope.value == PUBLIC
        self._building = True
        self.model_menu.options, self.model_menu.value = [("Loading models…", "")], ""
        self._building = False

        def load() -> None:
            try:
                models = self.client.models(public=public)
            except ScenarioError as exc:
                self.model_menu.options = [("(no models)", "")]
                self.model_message.value = _error_html(str(exc))
                return
            if not models:
                self.model_menu.options = [("(no models)", "")]
                self.model_message.value = _quiet("No models here yet" + ("" if public else
                                                                    "; switch to the public catalog"))
                return
            self.model_message.value = ""
            self._listed = models
            self._show_models(self._wanted)
            if not public:
                self._follow_trainings(models)

        self._loader = threading.Thread(target=load, name="scenario-panel-models", daemon=True)
        self._loader.start()
        return self._loader

    def _show_models(self, wanted: Optional[str] = None) -> None:
        """The listed models whose name or id holds the filter (as `%scenario models FILTER` keeps them)."""
        query = self.model_filter.value.strip().lower()
        models = [m for m in self._listed if query in m.name.lower() or query in m.id.lower()]
        if not models:
            self.model_filter_note.value = _quiet(f"no model matches {self.model_filter.value.strip()!r}")
            return
        self.model_filter_note.value = _quiet(f"{len(models)} of {len(self._listed)}") if query else ""
        options = [(f"{m.name} — {type_words(m)}" + ("" if m.trained else f" ({m.status})"), m.id)
                   for m in models]
        ids = [m.id for m in models]
        current = wanted or self.model_menu.value
        keep = current if current in ids else next((m.id for m in models if m.trained), ids[0])
        self.model_menu.layout.width = _em([o[0] for o in options], extra=3)
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
                    self.model_message.value = _error_html(f"could not follow the training of {model.name}: {exc}")
        for training in followed.values():
            if training.model_id not in self.training_rows:
                self._add_training_row(training)

    def _add_training_row(self, training: Training) -> None:
        name = w.HTML(f"<b>{html.escape(training.name)}</b> " + _quiet(html.escape(training.type)),
                      layout=w.Layout(width="24em", overflow="hidden"))
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="11.5em"))
        words = w.HTML()
        row = w.HBox([_label("Training", "6em"), name, bar, words], layout=w.Layout(align_items="center"))
        row.add_class("scenario-training-row")
        self.training_rows[training.model_id] = SimpleNamespace(row=row, bar=bar, words=words)
        self.trainings.children = tuple(self.trainings.children) + (row,)
        reloaded: list[bool] = []

        def update(t: Training) -> None:  # poller thread: set values only
            bar.value = t.progress
            words.value = _quiet(html.escape(" · ".join(t.state_words())))
            if not t.done:
                return
            bar.bar_style = "success" if t.ok else "danger"
            if t.ok and not reloaded:
                reloaded.append(True)
                words.value = _quiet("trained: pick it in the model list")
                self._wanted = self.model_menu.value or None
                self._load_models()  # it is listed as trained now, and can generate
            elif not t.ok:
                reason = t.error or (str(t.exception) if t.exception else "")
                words.value = _error_html(f"{t.stage_words()}" + (f": {reason}" if reason else ""))

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
        try:
            self._model = self.client.model(change["new"])
            self._runnable, _ = self.client.route(self._model)
        except ScenarioError as exc:
            self._model, self._runnable = None, None
            self.model_message.value = _error_html(str(exc))
            self.model_hint.value = ""
            self.generate_button.disabled = True
            self.cost.value = ""
            return
        self.model_message.value = ""
        routed = self._runnable is not self._model
        self.model_hint.value = _quiet(f"runs through {self._runnable.name}") if routed else ""
        self._build_form(self._runnable)
        self.generate_button.disabled = False
        self._on_prompt(None)

    def _build_form(self, model: Model) -> None:
        self._building = True
        try:
            self._build_aspect(model)
            self._build_count(model)
        finally:
            self._building = False
        controls = {}
        skip = set(SIZE_INPUTS) | {"prompt", COUNT_INPUT} | self._route_inputs()
        for spec in model.inputs:
            if spec.name in skip or spec.type in ("model", "model_array") or spec.name == "lorasScale":
                continue
            control = control_for(spec)
            control.observe(lambda _: self._schedule_cost(), "value")
            controls[spec.name] = control
        self._controls = controls
        width = _em([s.label or s.name for s in model.inputs if s.name in controls], extra=1.5)
        groups: dict[str, list] = {}
        for spec in model.inputs:
            if spec.name in controls:
                help_text = spec.description or spec.hint
                row = [_label(spec.label or spec.name, width), controls[spec.name]]
                if help_text:
                    row.append(w.HTML(_quiet(help_text), layout=w.Layout(margin="0 0 0 8px")))
                groups.setdefault(spec.group or "Settings", []).append(w.HBox(row, layout=w.Layout(
                    align_items="center")))
        self.settings_box.children = [w.VBox([w.HTML(f"<b>{html.escape(g)}</b>")] + rows)
                                      for g, rows in groups.items()]

    def _build_aspect(self, model: Model) -> None:
        """New choices for the model; the user's aspect stays when this model allows it, else the panel says so."""
        labels = list(aspect_options(model))
        self.aspect.options = [(DEFAULT_CHOICE, DEFAULT_CHOICE)] + [(label, label) for label in labels]
        self.aspect.disabled = not labels
        kept = self._matching_aspect(model, labels)
        self.aspect.value = kept or DEFAULT_CHOICE
        name = self._model.name if self._model else model.name
        if self._aspect_choice and not kept:
            self.aspect_note.value = _quiet(f"{name} has no {self._aspect_choice}; using the model default")
        elif not labels:
            self.aspect_note.value = _quiet(f"{name} picks its own size")
        else:
            self.aspect_note.value = ""

    def _matching_aspect(self, model: Model, labels: list) -> Optional[str]:
        choice = self._aspect_choice
        if not choice:
            return None
        if choice in labels:
            return choice
        try:
            wanted = aspect_inputs(model, choice)
        except InputError:
            return None
        options = aspect_options(model)
        return next((label for label in labels if options[label] == wanted), None)

    def _build_count(self, model: Model) -> None:
        spec = model.input(COUNT_INPUT)
        if spec is None:
            self.count.options, self.count.value, self.count.disabled = [("1", 1)], 1, True
            return
        low, high = int(spec.min or 1), int(min(spec.max or 4, 10))
        self.count.options = [(str(n), n) for n in range(low, high + 1)]
        self.count.value = int(spec.default) if spec.has_default and spec.default else low
        self.count.disabled = False

    def _route_inputs(self) -> set:
        if self._model is None or self._runnable is None or self._model is self._runnable:
            return set()
        return set(self.client.route(self._model)[1])

    def _on_aspect(self, change) -> None:
        if not self._building:
            self._touched = True
            self._aspect_choice = None if change["new"] == DEFAULT_CHOICE else change["new"]
            self.aspect_note.value = ""
        self._schedule_cost()

    def _on_prompt(self, change) -> None:
        if change is not None:
            self._touched = True
        spec = self._runnable.prompt_input if self._runnable else None
        limit = spec.max_length if spec else None
        count = len(self.prompt.value)
        if limit and count > limit:
            self.prompt.value = self.prompt.value[:limit]
            self.prompt_info.value = _error_html(f"The prompt is limited to {limit} characters for this model")
        elif limit and count >= 0.8 * limit:
            self.prompt_info.value = _quiet(f"{count:,} of {limit:,} characters")
        else:
            self.prompt_info.value = ""
        self._schedule_cost()

    # -- Request -------------------------------------------------------------------------------------
    def selected_model(self) -> Optional[Model]:
        return self._model

    def _in_words(self, exc: Exception) -> str:
        """An error naming the model the user picked, not the base model it runs through."""
        text = str(exc)
        if self._model is not None and self._runnable is not None and self._runnable is not self._model:
            text = text.replace(self._runnable.name, self._model.name)
        return text[:1].upper() + text[1:]

    def request(self) -> tuple[Model, str, dict]:
        """(model, prompt, inputs) from the form, checked by the shared validation (raises InputError)."""
        if self._model is None or self._runnable is None:
            raise InputError("pick a model first")
        settings: dict[str, Any] = {}
        specs = {spec.name: spec for spec in self._runnable.inputs}
        for name, control in self._controls.items():
            spec = specs[name]
            value = control.value
            if isinstance(control, w.FileUpload):
                if value:
                    ids = [self.client.upload_image(bytes(f["content"]), name=f["name"]) for f in value]
                    settings[name] = ids if spec.type == "file_array" else ids[0]
                continue
            if value in (None, "", DEFAULT_CHOICE):
                continue
            if spec.has_default and value == spec.default:
                continue
            settings[name] = value
        count_spec = self._runnable.input(COUNT_INPUT)
        if count_spec is not None and not (count_spec.has_default and self.count.value == count_spec.default):
            settings[COUNT_INPUT] = self.count.value
        aspect = None if self.aspect.value == DEFAULT_CHOICE else self.aspect.value
        inputs = request_inputs(self._runnable, aspect=aspect, settings=settings)
        prompt = self.prompt.value.strip()
        self.client.prepare(self._model, prompt, **inputs)  # validates: required rules, ranges, lengths
        return self._model, prompt, inputs

    def _schedule_cost(self) -> None:
        """Refresh the estimate half a second after the last change (a dry run: nothing is spent)."""
        if self._building:
            return
        if self._cost_timer is not None:
            self._cost_timer.cancel()
        self._cost_timer = threading.Timer(0.5, self._refresh_cost)
        self._cost_timer.daemon = True
        self._cost_timer.start()

    def _refresh_cost(self) -> None:
        if self._model is None:
            return
        if not self.prompt.value.strip():
            self.cost.value = _quiet("cost: type a prompt")
            return
        if any(isinstance(c, w.FileUpload) and c.value for c in self._controls.values()):
            self.cost.value = _quiet("cost: shown after upload")
            return
        try:
            model, prompt, inputs = self.request()
            estimate = self.client.estimate(model, prompt, **inputs)
            detail = ", ".join(f"{k} {v:g}" for k, v in estimate.details.items())
            self.cost.value = (f"<b>{estimate.creative_units:g} CU</b> "
                               + _quiet("estimate" + (f" ({detail})" if detail else "")))
        except ScenarioError as exc:
            self.cost.value = _error_html(self._in_words(exc)) if self._touched else ""

    def generate(self) -> Optional[Generation]:
        """Send the form as a generation; returns its handle (the kernel is never kept waiting)."""
        self._touched = True
        from ._session import current_session
        session = current_session()
        if self._follows_session and session is not None and session.client is not self.client \
                and session.client.backend_id == self.client.backend_id:
            self.client = session.client  # the same backend in a new session (e.g. a new history path)
        if self._follows_session and session is not None and session.client is not self.client:
            self.message.value = _error_html(
                f"not sent: this panel was opened on {self.client.base_url}, and the session now uses "
                f"{session.client.base_url}; open a new panel (%scenario panel) to generate there")
            return None
        try:
            model, prompt, inputs = self.request()
            handle = self.client.generate(model, prompt, source="panel", **inputs)
        except ScenarioError as exc:
            self.message.value = _error_html(self._in_words(exc))
            return None
        self.message.value = ""
        self.generations.append(handle)
        self._add_job_row(handle)
        return handle

    # -- Job rows ------------------------------------------------------------------------------------
    def _add_job_row(self, handle: Generation) -> None:
        cell = lambda: w.HTML(layout=w.Layout(overflow="hidden"))  # noqa: E731
        icon, model, seed, cost, note = cell(), cell(), cell(), cell(), w.HTML()
        seed.add_class("scenario-seed")
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="11.5em"))
        cancel = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="7em"))
        action = w.Box([cancel], layout=w.Layout(width="7.5em"))
        grid = w.GridBox([icon, model, bar, seed, cost, action], layout=w.Layout(
            grid_template_columns=JOB_COLUMNS, align_items="center", grid_gap="0 8px"))
        row = w.VBox([grid, note], layout=w.Layout(border_bottom="1px solid #eee", padding="2px 0"))
        row.add_class("scenario-job")
        model.value = (f'<div title="{html.escape(handle.prompt)}" style="width:23.5em;white-space:nowrap;'
                       f'overflow:hidden;text-overflow:ellipsis;line-height:1.3">{html.escape(handle.model_name)} '
                       f'<span style="{QUIET}">{html.escape(handle.prompt)}</span></div>')
        parts = SimpleNamespace(row=row, icon=icon, bar=bar, seed=seed, cost=cost, note=note, action=action,
                                cancel=cancel)
        self.job_rows[id(handle)] = parts
        self.jobs.children = (row,) + tuple(self.jobs.children)
        cancel.on_click(lambda _: self.cancel(handle))
        added: list[bool] = []

        def update(h: Generation) -> None:  # poller thread: set values only
            bar.value = h.progress
            icon.value = (f'<span title="{html.escape(h.status)}" style="font-weight:bold;color:'
                          f'{STATUS_COLORS.get(h.status, "#666")}">{STATUS_ICONS.get(h.status, "·")}</span>')
            seeds = [s for s in h.seeds if s is not None] or ([h.seed] if h.seed is not None else [])
            seed.value = "" if not seeds else (
                f'<span title="{html.escape(", ".join(map(str, seeds)))}" style="white-space:nowrap">'
                f'seed {seeds[0]}{f" +{len(seeds) - 1}" if len(seeds) > 1 else ""}</span>')
            cost.value = "" if h.cost is None else f"{h.cost:g} CU"
            if h.note:
                note.value = _quiet(_sentence(h.note))
            if not h.done:
                return
            if action.children:
                action.children = ()  # a finished job has nothing to cancel
            if h.ok:
                bar.bar_style = "success"
                if not added:
                    added.append(True)
                    self._add_to_gallery(h)
            elif h.status in ("canceled", "not-sent"):
                bar.bar_style = "warning"
                sent = "before it was sent" not in h.note
                note.value = _quiet("Canceled: it made no images." if sent or not h.note else _sentence(h.note))
            else:
                bar.bar_style = "danger"
                reason = h.error or (str(h.exception) if h.exception else "no reason given")
                note.value = _error_html(f"Failed: {reason}" + (f" ({h.hint})" if h.hint else ""))

        handle.on_update(update)

    def cancel(self, handle: Generation) -> str:
        """Ask to cancel a job from its row; the row says what happened in plain words."""
        parts = self.job_rows.get(id(handle))
        try:
            outcome = handle.cancel()
        except ScenarioError as exc:
            if parts:
                parts.note.value = _error_html(str(exc))
            return "error"
        if parts:
            parts.note.value = _quiet(_sentence(handle.note)) if handle.note else ""
            if outcome in ("refused", "finished", "dropped"):
                parts.action.children = ()
            elif outcome == "requested":
                parts.cancel.disabled = True  # the note says it was asked
        return outcome

    # -- Gallery -------------------------------------------------------------------------------------
    def _items_for(self, handle: Generation) -> list[Item]:
        items = []
        for index, output in enumerate(handle.outputs):
            item = Item(handle=handle, index=index, asset_id=output.asset_id,
                        kind="image" if output.is_image else output.kind, path=str(output.path))
            if output.is_image and output.path.is_file():
                image = self.client.store.open_image(output.path)
                item.thumb, item.mime, item.width, item.height = thumbnail_grid([image], TILE)
            elif output.is_image:
                item.kind = "image (not downloaded)"
            items.append(item)
        if not items and handle.text:  # text models answer with words, not files
            items.append(Item(handle=handle, index=0, asset_id="", kind="text", text=handle.text))
        return items

    def _tile(self, item: Item) -> w.VBox:
        caption = w.HTML(caption_html(item), layout=w.Layout(width=f"{TILE_INNER}px", margin="0"))
        code = w.HTML(layout=w.Layout(display="none", margin="0"))
        buttons, overlay = [], None
        if item.kind == "image":
            overlay = w.Button(description="", tooltip=item.handle.prompt,
                               style=w.ButtonStyle(button_color="transparent"))
            overlay.add_class("scenario-tile-select")
            area = image_area(item, overlay)
            overlay.on_click(lambda _, it=item: self.toggle(it))
            view = w.Button(description="View", icon="search", layout=w.Layout(width="auto"))
            view.on_click(lambda _, it=item: self.view(it))
            buttons.append(view)
        else:
            area = other_area(item)
        as_magic = w.Button(description="As %%scenario", icon="code", layout=w.Layout(width="auto"),
                            tooltip="show the %%scenario cell that makes this image")
        as_magic.on_click(lambda _, it=item: self.show_magic(it))
        buttons.append(as_magic)
        tile = w.VBox([area, caption, w.HBox(buttons, layout=w.Layout(margin="4px 0 0 0")), code],
                      layout=w.Layout(width=f"{TILE_BOX}px", padding="6px", border="1px solid #e3e3e3",
                                      align_items="flex-start"))
        tile.add_class("scenario-tile")
        item.widgets = {"tile": tile, "code": code, "caption": caption, "overlay": overlay}
        return tile

    def _add_to_gallery(self, handle: Generation) -> None:
        items = self._items_for(handle)
        tiles = [self._tile(item) for item in items]
        with self._gallery_lock:  # newest request first, whichever job finishes first
            rank = {id(g): n for n, g in enumerate(self.generations)}
            mine = rank.get(id(handle), len(rank))
            at = sum(1 for i in self.items if rank.get(id(i.handle), len(rank)) > mine)
            self.items = self.items[:at] + items + self.items[at:]
            children = list(self.gallery.children)
            self.gallery.children = tuple(children[:at] + tiles + children[at:])
        self._refresh_snapshot()

    def toggle(self, item: Item) -> None:
        """Select or unselect a tile (what clicking its image does)."""
        item.selected = not item.selected
        tile = item.widgets["tile"]
        tile.layout.border = f"2px solid {ACCENT}" if item.selected else "1px solid #e3e3e3"
        tile.layout.padding = "5px" if item.selected else "6px"
        overlay = item.widgets.get("overlay")
        if overlay is not None:
            overlay.style.button_color = "rgba(47,111,222,0.22)" if item.selected else "transparent"
        picked = sum(i.selected for i in self.items)
        self.selection_note.value = _quiet(f"· {picked} selected" if picked else "· click a tile to select it")
        self.save_note.value = ""

    def view(self, item: Item) -> None:
        """Open the image above the gallery at its real size (capped), with its full provenance."""
        image = self.client.store.open_image(Path(item.path))
        data, mime, width, height = thumbnail_grid([image], VIEW_MAX)
        self.viewer_image.format = mime.split("/")[1]
        self.viewer_image.value = data
        handle = item.handle
        rows = [("Prompt", handle.prompt), ("Model", handle.model_name)]
        if handle.base_model_id:
            rows.append(("Runs through", handle.base_model_id))
        rows += [("Seed", item.seed), ("Size", f"{image.width} × {image.height}"
                                       + (f" (shown at {width} × {height})" if width != image.width else "")),
                 ("Cost", item.cost_text or "—"), ("Job", handle.job_id), ("Asset", item.asset_id),
                 ("Made", datetime.fromtimestamp(handle.finished_at or handle.submitted_at).strftime(
                     "%Y-%m-%d %H:%M")),
                 ("Inputs", json.dumps({k: v for k, v in handle.inputs.items() if k != "prompt"},
                                       sort_keys=True))]
        cells = "".join(f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top;color:#666;'
                        f'font-weight:normal">{html.escape(k)}</th><td style="text-align:left;padding:2px 0;'
                        f'word-break:break-word">{html.escape(str(v))}</td></tr>'
                        for k, v in rows)
        self.viewer_info.value = f'<table style="font-size:12px;line-height:1.45">{cells}</table>'
        self.viewer.layout.display = "flex"

    def show_large(self, handle: Generation, asset_id: str) -> None:
        """View by job and asset id (for code)."""
        self.view(next(i for i in self.items if i.handle is handle and i.asset_id == asset_id))

    def close_view(self) -> None:
        self.viewer.layout.display = "none"

    def magic_for(self, item: Item) -> str:
        """The exact `%%scenario` cell for this one image: its own seed, one image."""
        inputs = {k: v for k, v in item.handle.inputs.items() if k != "numOutputs"}
        if item.seed is not None:
            inputs["seed"] = item.seed
        one = SimpleNamespace(model_id=item.handle.model_id, base_model_id=item.handle.base_model_id,
                              inputs=inputs, seed=item.seed, prompt=item.handle.prompt)
        return magic_text(one)

    def show_magic(self, item: Item) -> str:
        """Show the image's cell in its tile, ready to select and copy (the tile widens to hold it)."""
        text = self.magic_for(item)
        code, tile = item.widgets["code"], item.widgets["tile"]
        if code.layout.display == "none" or not code.value:
            code.value = code_html(text, width=2 * TILE_BOX - 2)
            code.layout.display = None
            tile.layout.width = f"{2 * TILE_BOX + 12}px"
            tile.layout.grid_column = "span 2"
        else:
            code.layout.display = "none"
            tile.layout.width = f"{TILE_BOX}px"
            tile.layout.grid_column = None
        return text

    def copy_as_magic(self, handle: Generation) -> str:
        """The `%%scenario` cell that reproduces a whole generation."""
        return magic_text(handle)

    def save_selected(self) -> list:
        """Save the selected images (PNG with metadata + JSON sidecar) to the folder; say so by the button."""
        picked: dict[int, tuple[Generation, list]] = {}
        for item in self.items:
            if item.selected and item.kind == "image":
                picked.setdefault(id(item.handle), (item.handle, []))[1].append(item.asset_id)
        if not picked:
            self.save_note.value = _error_html("Click a tile to select it first")
            return []
        paths = []
        try:
            for handle, assets in picked.values():
                paths += handle.save(self.save_folder.value, only=assets)
        except ScenarioError as exc:
            self.save_note.value = _error_html(str(exc))
            return paths
        count = sum(p.suffix == ".png" for p in paths)
        self.save_note.value = f"✓ Saved {count} image{'s' * (count != 1)} to " \
                               f"<code>{html.escape(self.save_folder.value)}</code>"
        return paths
