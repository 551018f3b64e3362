"""The panel's form, built from the picked model's own `inputs`: prompt, aspect, count, more settings, and the
cost estimate (a dry run half a second after the last change). `request()` reads it back, checked by the client."""

from __future__ import annotations

import html
import re
import threading
from typing import Any, Optional

from . import _light_widgets as w

from ._errors import InputError, ScenarioError
from ._models import Model, ModelInput, aspect_inputs, aspect_options, request_inputs
from ._panel_style import close_tree, error_line, fit_width, fixed_label, quiet

SIZE_INPUTS = ("aspectRatio", "width", "height")
COUNT_INPUT = "numOutputs"
DEFAULT_CHOICE = "model default"   # a real, visible option: a dropdown never shows a blank


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
        width = fit_width([o[0] for o in options], extra=3)
        return w.Dropdown(options=options, value=value, layout=w.Layout(width=width))
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


class RequestForm:
    """Part of `Panel`: what it reads of the rest of the panel is declared here."""

    client: Any
    prompt: w.Textarea
    prompt_info: w.HTML
    aspect: w.Dropdown
    aspect_note: w.HTML
    count: w.Dropdown
    settings_box: w.VBox
    cost: w.HTML
    message: w.HTML
    settings: w.Accordion
    _notes: dict[str, w.HTML]
    _form_error: bool
    _model: Optional[Model]
    _runnable: Optional[Model]
    _controls: dict[str, w.Widget]
    _cost_timer: Optional[threading.Timer]
    _token_lock: threading.Lock
    _aspect_choice: Optional[str]
    _building: bool
    _touched: bool

    def _build_form(self, model: Model) -> None:
        self._building = True
        try:
            self._build_aspect(model)
            self._build_count(model)
        finally:
            self._building = False
        controls, self._notes = {}, {}
        skip = set(SIZE_INPUTS) | {"prompt", COUNT_INPUT} | self._route_inputs()
        for spec in model.inputs:
            if spec.name in skip or spec.type in ("model", "model_array") or spec.name == "lorasScale":
                continue
            control = control_for(spec)
            control.observe(lambda _, name=spec.name: self._input_changed(name), "value")
            controls[spec.name] = control
        self._controls = controls
        width = fit_width([s.label or s.name for s in model.inputs if s.name in controls], extra=1.5)
        groups: dict[str, list] = {}
        for spec in model.inputs:
            if spec.name in controls:
                help_text = spec.description or spec.hint
                note = self._notes[spec.name] = w.HTML(layout=w.Layout(margin="0 0 0 8px"))
                note.add_class("scenario-input-note")
                row = [fixed_label(spec.label or spec.name, width), controls[spec.name], note]
                if help_text:
                    row.append(w.HTML(quiet(help_text), layout=w.Layout(margin="0 0 0 8px")))
                groups.setdefault(spec.group or "Settings", []).append(w.HBox(row, layout=w.Layout(
                    align_items="center")))
        replaced = self.settings_box.children
        self.settings_box.children = [w.VBox([w.HTML(f"<b>{html.escape(g)}</b>")] + rows)
                                      for g, rows in groups.items()]
        close_tree(replaced)  # the last model's form
        self._form_error = False

    def _build_aspect(self, model: Model) -> None:
        """New choices for the model; the user's aspect stays when this model allows it, else the panel says so."""
        labels = list(aspect_options(model))
        kept = self._matching_aspect(model, labels)
        with self.aspect.hold_sync():  # one message: the browser never shows the default between options and value
            self.aspect.options = [(DEFAULT_CHOICE, DEFAULT_CHOICE)] + [(label, label) for label in labels]
            self.aspect.disabled = not labels
            self.aspect.value = kept or DEFAULT_CHOICE
        name = self._model.name if self._model else model.name
        if self._aspect_choice and not kept:
            self.aspect_note.value = quiet(f"{name} has no {self._aspect_choice}; using the model default")
        elif not labels:
            self.aspect_note.value = quiet(f"{name} picks its own size")
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
        with self.count.hold_sync():  # as the aspect's: one message
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
            self.prompt_info.value = error_line(f"The prompt is limited to {limit} characters for this model")
        elif limit and count >= 0.8 * limit:
            self.prompt_info.value = quiet(f"{count:,} of {limit:,} characters")
        else:
            self.prompt_info.value = ""
        self._schedule_cost()

    def _in_words(self, exc: Exception) -> str:
        """An error naming the model the user picked (not the base it runs through) and each input by the
        label the form shows (not the API's field name)."""
        text = str(exc)
        if self._model is not None and self._runnable is not None and self._runnable is not self._model:
            text = text.replace(self._runnable.name, self._model.name)
        name = self._input_named(text)
        if name is not None and self._runnable is not None:
            spec = self._runnable.input(name)
            label = (spec.label if spec is not None and spec.label else name).lower()
            text = re.sub(rf"\binput {re.escape(name)}\b|\b{re.escape(name)}\b", label, text)
        return text[:1].upper() + text[1:]

    def _input_named(self, text: str) -> Optional[str]:
        """The form input an error is about, when it names one by its API name."""
        return next((name for name in self._notes if re.search(rf"\b{re.escape(name)}\b", text)), None)

    def _show_form_error(self, exc: Exception) -> None:
        """Once, next to what to fix: the input it names (More settings opens), else by Generate."""
        self._clear_form_error()
        words, name = self._in_words(exc), self._input_named(str(exc))
        if name is not None:
            self._notes[name].value = error_line(words)
            self.settings.selected_index = 0
        else:
            self.message.value = error_line(words)
        self._form_error = True

    def _input_changed(self, name: str) -> None:
        """A change to the input an error is next to clears it (checked again by the next estimate or click)."""
        note = self._notes.get(name)
        if note is not None and note.value:
            note.value = ""
            self._form_error = any(n.value for n in self._notes.values()) or bool(self.message.value)
        self._schedule_cost()

    def _clear_form_error(self) -> None:
        if not self._form_error:
            return
        for note in self._notes.values():
            note.value = ""
        self.message.value = ""
        self._form_error = False

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

    def _aspect_sent(self) -> Optional[tuple[str, frozenset]]:
        """The aspect the form asks for and the inputs it maps to (the snippet writes `--aspect`, not those)."""
        if self._runnable is None or self.aspect.value == DEFAULT_CHOICE:
            return None
        return self.aspect.value, frozenset(aspect_inputs(self._runnable, self.aspect.value))

    def _schedule_cost(self) -> None:
        """Refresh the estimate half a second after the last change (a dry run: nothing is spent)."""
        if self._building:
            return
        with self._token_lock:  # a subshell thread and the main thread may both change the form: one timer
            if self._cost_timer is not None:
                self._cost_timer.cancel()
            self._cost_timer = threading.Timer(0.5, self._refresh_cost)
            self._cost_timer.daemon = True
            self._cost_timer.start()

    def _refresh_cost(self) -> None:
        if self._model is None:
            return
        if not self.prompt.value.strip():
            self.cost.value = quiet("cost: type a prompt")
            return
        if any(isinstance(c, w.FileUpload) and c.value for c in self._controls.values()):
            self.cost.value = quiet("cost: shown after upload")
            return
        try:
            model, prompt, inputs = self.request()
            estimate = self.client.estimate(model, prompt, **inputs)
            detail = ", ".join(f"{k} {v:g}" for k, v in estimate.details.items())
            self.cost.value = (f"<b>{estimate.creative_units:g} CU</b> "
                               + quiet("estimate" + (f" ({detail})" if detail else "")))
        except InputError as exc:  # said once, where it is fixed (never also on the cost line)
            self.cost.value = ""
            if self._touched:
                self._show_form_error(exc)
            return
        except ScenarioError as exc:
            self.cost.value = error_line(self._in_words(exc)) if self._touched else ""
            return
        self._clear_form_error()  # the form is valid now: an error it showed is gone
