"""The ipywidgets classes the panel and the live displays use, made light: each widget opens its comm with only
the values that differ from its defaults (plus the names that say which model it is), as JupyterLab itself saves
widget state. The frontend fills in the defaults, so nothing shown changes; a notebook saved with widget state by
a tool that keeps what the kernel sent (nbclient, nbconvert) is about 1 KB lighter per widget (a default Layout
alone has some forty empty keys), which is what kept a run panel's notebook over 300 KB.

Later changes are sent as ipywidgets sends them; a frontend asking for the whole state gets all of it.
Use as `from . import _light_widgets as w`: any other name is ipywidgets' own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import ipywidgets
from ipywidgets.widgets.trait_types import InstanceDict
from ipywidgets.widgets.widget import widget_serialization

_opening = threading.local()  # the widget whose comm is being opened on this thread


class _LightOpen:
    """Mixed in before an ipywidgets class: its first state on the wire leaves its defaults out."""

    def open(self) -> None:
        _opening.widget = self
        try:
            super().open()  # type: ignore[misc]
        finally:
            _opening.widget = None

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict:
        if key is not None or getattr(_opening, "widget", None) is not self:
            return super().get_state(key, drop_defaults)  # type: ignore[misc]
        state = super().get_state(None, True)  # type: ignore[misc]
        names = [k for k in self.keys if k.startswith("_") and k not in state]
        state.update(super().get_state(names))  # type: ignore[misc]  # _model_name, _view_module, ...
        return state


_made: dict[type, type] = {}


def _light(cls: type) -> type:
    """`cls` made light (once: `ButtonStyle` is the class a light `Button`'s style takes), its own Layout and
    style (made when none is given) light too."""
    if cls in _made:
        return _made[cls]
    namespace: dict = {"__doc__": cls.__doc__, "__module__": __name__}
    traits = cls.class_traits() if hasattr(cls, "class_traits") else {}
    if "layout" in traits and cls is not ipywidgets.Layout:
        namespace["layout"] = InstanceDict(Layout).tag(sync=True, **widget_serialization)
    style = traits.get("style")
    if isinstance(style, InstanceDict) and isinstance(style.klass, type):
        namespace["style"] = InstanceDict(_light(style.klass)).tag(sync=True, **widget_serialization)
    made = _made[cls] = type(cls.__name__, (_LightOpen, cls), namespace)
    return made


__all__ = ["Accordion", "Box", "Button", "ButtonStyle", "Checkbox", "Dropdown", "FileUpload", "FloatProgress",
           "FloatSlider", "GridBox", "HBox", "HTML", "Image", "IntSlider", "Label", "Layout", "Text", "Textarea",
           "ToggleButtons", "VBox"]
if TYPE_CHECKING:  # the same API as ipywidgets' own
    from ipywidgets import (Accordion, Box, Button, ButtonStyle, Checkbox, Dropdown, FileUpload, FloatProgress,
                            FloatSlider, GridBox, HBox, HTML, Image, IntSlider, Label, Layout, Text, Textarea,
                            ToggleButtons, VBox)
else:
    Layout = _light(ipywidgets.Layout)  # first: the others' own layouts are made of it
    globals().update({name: _light(getattr(ipywidgets, name)) for name in __all__ if name != "Layout"})


def __getattr__(name: str) -> Any:
    return getattr(ipywidgets, name)
