"""`Panel`: the click-first front door, built from each model's own `inputs`.

It drives the same session as the magics (one client, one poller, one history) and keeps no logic of its
own that they need: validation, aspect mapping, cost and routing come from the shared modules. Updates
from the poller thread only set widget values.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Optional

import ipywidgets as w

from ._display import magic_text
from ._errors import ScenarioError
from ._generation import Generation
from ._models import Model, ModelInput, aspect_options, request_inputs

SIZE_INPUTS = ("aspectRatio", "width", "height")
GALLERY_THUMB = 192


def _error_html(text: str) -> str:
    return f'<span style="color:#b00020">✗ {html.escape(text)}</span>'


def control_for(spec: ModelInput) -> w.Widget:
    """One widget for one model input, chosen by its type (allowed values, ranges, booleans, files)."""
    label = spec.label or spec.name
    style = {"description_width": "11em"}
    common: dict = {"description": label, "style": style, "layout": w.Layout(width="34em")}
    if spec.type in ("file", "file_array"):
        return w.FileUpload(accept="image/*", multiple=spec.type == "file_array", description=label)
    if spec.allowed_values:
        options = [("(default)", None)] + [(str(v), v) for v in spec.allowed_values]
        return w.Dropdown(options=options, value=None, **common)
    if spec.type == "boolean":
        return w.Checkbox(value=bool(spec.default), indent=False, description=label)
    if spec.type == "number" and spec.min is not None and spec.max is not None and spec.has_default \
            and spec.max - spec.min <= 100000:
        integral = all(float(x).is_integer() for x in (spec.min, spec.max, spec.step or 1, spec.default or 0))
        cls = w.IntSlider if integral else w.FloatSlider
        return cls(value=spec.default, min=spec.min, max=spec.max, step=spec.step or (1 if integral else 0.01),
                   continuous_update=False, **common)
    placeholder = spec.raw.get("placeholder") or ("empty: the model decides" if spec.type != "string" else "")
    if spec.type.endswith("_array"):
        placeholder = placeholder or "comma-separated"
    return w.Text(value="" if spec.default in (None, [], "") else str(spec.default), placeholder=placeholder,
                  continuous_update=False, **common)


class Panel:
    """Model dropdown, prompt, aspect selector, more settings, cost, live jobs and a gallery."""

    def __init__(self, model: Optional[str] = None, client=None) -> None:
        from ._session import get_session
        session = get_session()
        self.client = client or session.client
        self._wanted = model or session.current_model
        self._model: Optional[Model] = None
        self._runnable: Optional[Model] = None
        self._controls: dict[str, w.Widget] = {}
        self._cost_timer: Optional[threading.Timer] = None
        self.generations: list[Generation] = []
        self._cards: list[tuple[w.Checkbox, Generation, str]] = []

        self.scope = w.ToggleButtons(options=["My models", "Public catalog"], value="My models")
        self.model_menu = w.Dropdown(options=[("Loading models…", None)], value=None, description="Model",
                                     layout=w.Layout(width="34em"))
        self.message = w.HTML()
        self.prompt = w.Textarea(placeholder="Describe what to generate…", rows=3, layout=w.Layout(width="46em"))
        self.prompt_info = w.HTML()
        self.aspect = w.Dropdown(options=[("(model default)", None)], value=None, description="Aspect")
        self.settings_box = w.VBox()
        self.settings = w.Accordion(children=[self.settings_box], selected_index=None)
        self.settings.set_title(0, "More settings")
        self.cost = w.HTML("<i>cost: pick a model</i>")
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="magic",
                                        disabled=True)
        self.jobs = w.VBox()
        self.gallery = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.large = w.Image(format="png", layout=w.Layout(max_width="768px", display="none"))
        self.large_caption = w.HTML()
        self.save_folder = w.Text(value="outputs/panel", description="Save to")
        self.save_button = w.Button(description="Save selected", icon="save")
        self.copy_box = w.Textarea(rows=3, layout=w.Layout(width="46em", display="none"))
        self.widget = w.VBox([
            w.HTML("<b>Scenario</b>"), self.scope, self.model_menu, self.message, self.prompt, self.prompt_info,
            self.aspect, self.settings, w.HBox([self.generate_button, self.cost]), self.jobs,
            w.HTML("<b>Gallery</b> (newest first)"), self.gallery, w.HBox([self.save_folder, self.save_button]),
            self.copy_box, self.large_caption, self.large])

        self.scope.observe(lambda _: self._load_models(), "value")
        self.model_menu.observe(self._on_model, "value")
        self.prompt.observe(self._on_prompt, "value")
        self.aspect.observe(lambda _: self._schedule_cost(), "value")
        self.generate_button.on_click(lambda _: self.generate())
        self.save_button.on_click(lambda _: self.save_selected())
        self._load_models()

    def wait_ready(self, timeout: float = 60) -> "Panel":
        """Block until the model list is loaded (for scripts and tests; the UI never waits)."""
        self._loader.join(timeout)
        return self

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)

    # -- Models --------------------------------------------------------------------------------------
    def _load_models(self) -> threading.Thread:
        """Fill the dropdown in the background so the panel appears at once."""
        public = self.scope.value == "Public catalog"
        self.model_menu.options, self.model_menu.value = [("Loading models…", None)], None

        def load() -> None:
            try:
                models = self.client.public_models() if public else self.client.models()
                models = [m for m in models if m.status in ("trained", "")]
                if public:
                    models = [m for m in models if m.runnable]
            except ScenarioError as exc:
                self.model_menu.options = [("(no models)", None)]
                self.message.value = _error_html(str(exc))
                return
            if not models:
                self.model_menu.options = [("(no models)", None)]
                self.message.value = _error_html("no trained models here yet" + (
                    "" if public else "; switch to the public catalog"))
                return
            self.model_menu.options = [(f"{m.name} · {m.type}", m.id) for m in models]
            ids = [m.id for m in models]
            self.model_menu.value = self._wanted if self._wanted in ids else ids[0]

        self._loader = threading.Thread(target=load, name="scenario-panel-models", daemon=True)
        self._loader.start()
        return self._loader

    def _on_model(self, change) -> None:
        if not change["new"]:
            return
        try:
            self._model = self.client.model(change["new"])
            self._runnable, _ = self.client.route(self._model)
        except ScenarioError as exc:
            self.message.value = _error_html(str(exc))
            self.generate_button.disabled = True
            return
        self.message.value = "" if self._runnable is self._model else \
            f"<i>{html.escape(self._model.name)} runs through {html.escape(self._runnable.name)}</i>"
        self._build_form(self._runnable)
        self.generate_button.disabled = False
        self._on_prompt(None)
        self._schedule_cost()

    def _build_form(self, model: Model) -> None:
        options = aspect_options(model)
        self.aspect.options = [("(model default)", None)] + [(label, label) for label in options]
        self.aspect.value = None
        controls = {}
        skip = set(SIZE_INPUTS) | {"prompt"}
        for spec in model.inputs:
            if spec.name in skip or spec.name in self._route_inputs():
                continue
            control = control_for(spec)
            control.observe(lambda _: self._schedule_cost(), "value")
            controls[spec.name] = control
        self._controls = controls
        groups: dict[str, list] = {}
        for spec in model.inputs:
            if spec.name in controls:
                help_text = spec.description or spec.hint
                row = [controls[spec.name]] + ([w.HTML(f"<small>{html.escape(help_text)}</small>")]
                                               if help_text else [])
                groups.setdefault(spec.group or "Settings", []).append(w.HBox(row))
        self.settings_box.children = [w.VBox([w.HTML(f"<b>{html.escape(g)}</b>")] + rows)
                                      for g, rows in groups.items()]

    def _route_inputs(self) -> set:
        if self._model is None or self._runnable is None or self._model is self._runnable:
            return set()
        return set(self.client.route(self._model)[1])

    def _on_prompt(self, change) -> None:
        spec = self._runnable.prompt_input if self._runnable else None
        limit = spec.max_length if spec else None
        count = len(self.prompt.value)
        if limit and count > limit:
            self.prompt.value = self.prompt.value[:limit]
            self.prompt_info.value = _error_html(f"the prompt is limited to {limit} characters for this model")
        else:
            self.prompt_info.value = f"<small>{count}{f' / {limit}' if limit else ''} characters</small>"
        self._schedule_cost()

    # -- Request -------------------------------------------------------------------------------------
    def selected_model(self) -> Optional[Model]:
        return self._model

    def request(self) -> tuple[Model, str, dict]:
        """(model, prompt, inputs) from the form, checked by the shared validation (raises InputError)."""
        if self._model is None or self._runnable is None:
            from ._errors import InputError
            raise InputError("pick a model first")
        settings: dict[str, Any] = {}
        for name, control in self._controls.items():
            spec = self._runnable.input(name)
            value = control.value
            if isinstance(control, w.FileUpload):
                if value:
                    ids = [self.client.upload_image(bytes(f["content"]), name=f["name"]) for f in value]
                    settings[name] = ids if spec.type == "file_array" else ids[0]
                continue
            if value in (None, ""):
                continue
            if spec.has_default and value == spec.default:
                continue
            settings[name] = value
        inputs = request_inputs(self._runnable, aspect=self.aspect.value, settings=settings)
        prompt = self.prompt.value.strip()
        self.client.prepare(self._model, prompt, **inputs)  # validates: required rules, ranges, lengths
        return self._model, prompt, inputs

    def _schedule_cost(self) -> None:
        """Refresh the estimate half a second after the last change (a dry run: nothing is spent)."""
        if self._cost_timer is not None:
            self._cost_timer.cancel()
        self._cost_timer = threading.Timer(0.5, self._refresh_cost)
        self._cost_timer.daemon = True
        self._cost_timer.start()

    def _refresh_cost(self) -> None:
        try:
            model, prompt, inputs = self.request()
            if not prompt:
                self.cost.value = "<i>cost: type a prompt</i>"
                return
            if any(isinstance(c, w.FileUpload) and c.value for c in self._controls.values()):
                self.cost.value = "<i>cost: shown after upload</i>"
                return
            estimate = self.client.estimate(model, prompt, **inputs)
            self.cost.value = f"<b>{estimate}</b> <small>(estimate)</small>"
        except ScenarioError as exc:
            self.cost.value = _error_html(str(exc))

    def generate(self) -> Optional[Generation]:
        """Send the form as a generation; returns its handle (the kernel is never kept waiting)."""
        try:
            model, prompt, inputs = self.request()
            handle = self.client.generate(model, prompt, _source="panel", **inputs)
        except ScenarioError as exc:
            self.message.value = _error_html(str(exc))
            return None
        self.message.value = ""
        self.generations.append(handle)
        self._add_job_row(handle)
        return handle

    # -- Jobs and gallery ----------------------------------------------------------------------------
    def _add_job_row(self, handle: Generation) -> None:
        status = w.HTML()
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="12em"))
        cancel = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="8em"))
        row = w.HBox([bar, status, cancel])
        self.jobs.children = (row,) + tuple(self.jobs.children)

        def on_cancel(_) -> None:
            handle.cancel()  # its note says what happened (on the real API: refused, it will finish)

        cancel.on_click(on_cancel)
        added = []

        def update(h: Generation) -> None:  # poller thread: set values only
            bar.value = h.progress
            if h.done and h.exception is not None:
                bar.bar_style = "danger"
                status.value = _error_html(str(h.exception))
            else:
                note = f"<br><small>{html.escape(h.note)}</small>" if h.note else ""
                status.value = f"<code>{html.escape(h.summary().splitlines()[0])}</code>{note}"
            if h.done:
                cancel.disabled = True
                if h.ok:
                    bar.bar_style = "success"
                    if not added:
                        added.append(True)
                        self._add_to_gallery(h)

        handle.on_update(update)

    def _add_to_gallery(self, handle: Generation) -> None:
        cards = []
        for asset_id in handle.asset_ids:
            thumb = w.Image(value=self.client.store.thumbnail_png(asset_id, GALLERY_THUMB), format="png",
                            layout=w.Layout(max_width=f"{GALLERY_THUMB}px"))
            pick = w.Checkbox(value=False, indent=False, description="select")
            view = w.Button(description="View", icon="search", layout=w.Layout(width="6em"))
            copy = w.Button(description="%%scenario", icon="copy", layout=w.Layout(width="8em"),
                            tooltip="copy as %%scenario")
            caption = w.HTML(
                f"<small>{html.escape(handle.prompt[:60])}<br>{html.escape(handle.model_name)} · seed "
                f"{handle.seed} · {handle.job_id} · {'' if handle.cost is None else f'{handle.cost:g} CU'}</small>",
                layout=w.Layout(max_width=f"{GALLERY_THUMB + 20}px"))
            view.on_click(lambda _, a=asset_id, h=handle: self.show_large(h, a))
            copy.on_click(lambda _, h=handle: self.copy_as_magic(h))
            self._cards.append((pick, handle, asset_id))
            cards.append(w.VBox([thumb, caption, w.HBox([pick, view, copy])]))
        self.gallery.children = tuple(cards) + tuple(self.gallery.children)

    def show_large(self, handle: Generation, asset_id: str) -> None:
        self.large.value = self.client.store.thumbnail_png(asset_id, 1024)
        self.large.layout.display = None
        self.large_caption.value = f"<code>{html.escape(handle.summary())}</code>"

    def copy_as_magic(self, handle: Generation) -> str:
        text = magic_text(handle)
        self.copy_box.value = text
        self.copy_box.layout.display = None
        return text

    def save_selected(self) -> list:
        """Save the selected images (PNG with metadata + JSON sidecar) to the folder."""
        picked: dict[int, tuple[Generation, list]] = {}
        for box, handle, asset_id in self._cards:
            if box.value:
                picked.setdefault(id(handle), (handle, []))[1].append(asset_id)
        if not picked:
            self.message.value = _error_html("select images in the gallery first")
            return []
        paths = []
        try:
            for handle, assets in picked.values():
                paths += handle.save(self.save_folder.value, only=assets)
        except ScenarioError as exc:
            self.message.value = _error_html(str(exc))
            return paths
        self.message.value = f"Saved {sum(p.suffix == '.png' for p in paths)} image(s) to " \
                             f"{html.escape(self.save_folder.value)}"
        return paths
