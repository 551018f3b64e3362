"""`Panel`: the click-first front door, built from each model's own `inputs`.

It drives the same session as the magics (one client, one poller, one history), or the client it is given
(`Panel(client=c)`, which starts no session), and keeps no logic of its own that they need: validation,
aspect mapping, cost and routing come from the shared modules. Updates from the poller thread only set
widget values. The panel is itself a widget (a VBox), so it composes and closes like any other; its saved
output also carries a static snapshot of the gallery for renders without widgets (GitHub, nbviewer,
nbconvert). Its parts, each in a module of its own: the model picker, the form, the job rows, the gallery.
"""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace
from typing import Optional

from . import _light_widgets as w

from ._errors import InputError, ScenarioError
from ._gallery import ACCENT, TILE_BOX, Item, snapshot_html
from ._generation import Generation
from ._models import Model
from ._panel_form import DEFAULT_CHOICE, RequestForm
from ._panel_gallery import VIEW_MAX, GalleryView
from ._panel_jobs import JobRows
from ._panel_models import MY_MODELS, PUBLIC, ModelPicker
from ._panel_style import close_tree, error_line, fixed_label, quiet
from ._panel_subshells import guard_comm_routing

__all__ = ["DEFAULT_CHOICE", "PUBLIC", "VIEW_MAX", "Panel"]

# Where the live panel (or its saved widget state) is drawn, the static snapshot right after it is hidden.
SNAPSHOT_STYLE = ("<style>.jp-OutputArea-child:has(.scenario-panel) + .jp-OutputArea-child "
                  ".scenario-gallery-snapshot, .output_area:has(.scenario-panel) + .output_area "
                  ".scenario-gallery-snapshot {display: none}</style>")


ROW = dict(align_items="center", flex_flow="row wrap")  # every row wraps on a narrow screen (600 px up)

# The widget's own text, saved with the notebook: nothing in it may go stale (a count, the picked model).
LIVE_LINE = "Scenario panel (a live widget: run the notebook to use it; its gallery is saved below)"


def _where(client, session) -> str:
    """Where this panel's generations go, and whether they cost anything."""
    if session is not None and session.client is client and session.backend == "sandbox":
        return "on the embedded sandbox: nothing is charged"
    return f"on {client.base_url} (key {client.api_key_masked}): spends creative units"


class Panel(ModelPicker, RequestForm, JobRows, GalleryView, w.VBox):
    """Model, prompt, aspect and count, more settings, cost, live job rows and a gallery of tiles."""

    def __init__(self, model: Optional[str] = None, client=None, **kwargs) -> None:
        guard_comm_routing()  # a click from a new tab must not be routed to a closed tab's subshell
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
        self.backend_line = w.HTML(quiet(_where(self.client, session)))
        shared = session if session is not None and session.client is client else None
        self._wanted = model or (shared.current_model if shared else None)  # `%scenario use` of that session
        self._model: Optional[Model] = None
        self._runnable: Optional[Model] = None
        self._controls: dict[str, w.Widget] = {}
        self._notes: dict[str, w.HTML] = {}          # an error next to its input, by input name
        self._form_error = False
        self._cost_timer: Optional[threading.Timer] = None
        self._aspect_choice: Optional[str] = None   # the user's own pick, kept across model changes
        self._builder = threading.local()             # `_building`, per thread (see there)
        self._touched = False                        # no error is shown before the user did anything
        self._display_id: Optional[str] = None
        self._snapshot_lock = threading.Lock()
        self._state_lock = threading.RLock()  # handlers run on subshell threads beside the main thread
        self._token_lock = threading.Lock()
        self._load_token = 0
        self._gallery_lock = threading.Lock()
        self.generations: list[Generation] = []
        self.items: list[Item] = []                  # gallery outputs, newest first
        self.job_rows: dict[int, SimpleNamespace] = {}
        self.aspects_sent: dict[int, tuple[str, frozenset]] = {}  # generation -> (aspect, the inputs it set)
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
        self.prompt = w.Textarea(placeholder="Describe what to generate…", rows=3, layout=w.Layout(width="100%"))
        self.prompt_info = w.HTML()
        self.aspect = w.Dropdown(options=[(DEFAULT_CHOICE, DEFAULT_CHOICE)], value=DEFAULT_CHOICE,
                                 layout=w.Layout(width="10em"))
        self.aspect_note = w.HTML()
        self.count = w.Dropdown(options=[("1", 1)], value=1, layout=w.Layout(width="5em"))
        self.settings_box = w.VBox()
        self.settings = w.Accordion(children=[self.settings_box], selected_index=None,
                                    layout=w.Layout(width="100%", max_width="46em"))
        self.settings.set_title(0, "More settings")
        self.cost = w.HTML(quiet("cost: pick a model"))
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="magic",
                                        disabled=True, layout=w.Layout(width="auto", min_width="9em"))
        self.message = w.HTML()
        self.jobs = w.VBox()
        self.save_folder = w.Text(value="outputs/panel", layout=w.Layout(width="14em"))
        self.save_button = w.Button(description="Save selected", icon="save", layout=w.Layout(width="auto"))
        self.save_note = w.HTML()
        self.selection_note = w.HTML(quiet("· click a tile to select it"))
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
        self.gallery_title = w.HTML("<b>Gallery</b> " + quiet("newest first"))

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
                    self.backend_line], layout=w.Layout(**ROW)),
            w.HBox([fixed_label("Model", label), self.model_menu, self.model_filter, self.model_filter_note,
                    self.model_hint], layout=w.Layout(**ROW)),
            self.model_message,
            self.trainings,
            w.HBox([fixed_label("Prompt", label), w.VBox([self.prompt, self.prompt_info], layout=w.Layout(
                flex="1 1 20em", max_width="40em", min_width="0"))], layout=w.Layout(**ROW)),
            w.HBox([fixed_label("Aspect", label), self.aspect, fixed_label("Images", "4.5em"), self.count,
                    self.aspect_note], layout=w.Layout(**ROW)),
            self.settings,
            w.HBox([self.generate_button, self.cost, self.message],
                   layout=w.Layout(align_items="center", margin="6px 0", flex_flow="row wrap")),
            self.jobs,
            w.HBox([self.gallery_title, self.selection_note], layout=w.Layout(align_items="center",
                                                                               margin="10px 0 0 0",
                                                                               flex_flow="row wrap")),
            w.HBox([fixed_label("Save to", "4.5em"), self.save_folder, self.save_button, self.save_note],
                   layout=w.Layout(**ROW)),
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
        self.client.on_models_changed(self._models_changed)  # a model made or trained in a cell shows here
        self.save_button.on_click(lambda _: self.save_selected())
        self.viewer_close.on_click(lambda _: self.close_view())
        self._load_models()

    @property
    def _building(self) -> bool:
        """True while this thread sets controls itself: their observers ignore the changes. Per thread, so a
        pick the user makes meanwhile (its message handled on another thread, a kernel subshell) still counts."""
        return getattr(self._builder, "on", False)

    @_building.setter
    def _building(self, value: bool) -> None:
        self._builder.on = value

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
        data = {"text/plain": self.summary() if self.items or self._model else ""}
        data["text/html"] = SNAPSHOT_STYLE + (snapshot_html(self.items, len(self.items)) if self.items else "")
        return data

    def _ipython_display_(self) -> None:
        """The widget, then a snapshot output that follows the gallery through its display id.

        The snapshot is a separate output so that updating it never redraws the live widget (which would
        take the focus from someone typing); saved notebooks show it where widgets cannot be drawn.
        """
        from IPython.display import display
        live = super()._repr_mimebundle_() or {}
        live["text/plain"] = LIVE_LINE  # true whenever it is read: the snapshot below says what it holds
        display(live, raw=True)
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
        close_tree(self.children)
        super().close()

    def generate(self) -> Optional[Generation]:
        """Send the form as a generation; returns its handle (the kernel is never kept waiting)."""
        with self._state_lock:  # a click may run on a subshell thread while a cell changes the form
            return self._generate()

    def _generate(self) -> Optional[Generation]:
        self._touched = True
        from ._session import current_session
        session = current_session()
        if self._follows_session and session is not None and session.client is not self.client \
                and session.client.backend_id == self.client.backend_id:
            self.client = session.client  # the same backend in a new session (e.g. a new history path)
            self.client.on_models_changed(self._models_changed)
        if self._follows_session and session is not None and session.client is not self.client:
            self.message.value = error_line(
                f"not sent: this panel was opened on {self.client.base_url}, and the session now uses "
                f"{session.client.base_url}; open a new panel (%scenario panel) to generate there")
            return None
        try:
            model, prompt, inputs = self.request()
            aspect = self._aspect_sent()
        except InputError as exc:
            self._show_form_error(exc)
            return None
        try:
            handle = self.client.generate(model, prompt, source="panel", **inputs)
        except ScenarioError as exc:
            self.message.value = error_line(self._in_words(exc))
            return None
        self._clear_form_error()
        self.message.value = ""
        if aspect is not None:
            self.aspects_sent[id(handle)] = aspect
        self.generations.append(handle)
        self._add_job_row(handle)
        return handle
