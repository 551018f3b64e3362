"""The panel's shared look: quiet notes, inline errors, widths that fit their labels."""

from __future__ import annotations

import html
import math

from . import _light_widgets as w

from ._html import error_html

QUIET = "color:#666;font-size:12px"


def error_line(text: str) -> str:
    return error_html(text, inline=True)


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def quiet(text: str) -> str:
    return f'<span style="{QUIET}">{html.escape(text)}</span>'


def close_tree(widgets) -> None:
    """Close widgets taken off the panel for good, with all they hold (layouts and styles too), so that neither
    the kernel nor a notebook saved with widget state keeps them."""
    todo, seen = list(widgets), set()
    while todo:
        widget = todo.pop()
        if id(widget) in seen or not isinstance(widget, w.Widget):
            continue
        seen.add(id(widget))
        todo += [*getattr(widget, "children", ()), getattr(widget, "layout", None), getattr(widget, "style", None)]
        widget.close()


def fit_width(texts, per_char: float = 0.62, extra: float = 1.5, least: float = 4) -> str:
    """A width that fits the longest text (labels are never cut)."""
    longest = max((len(str(t)) for t in texts), default=0)
    return f"{max(least, math.ceil(longest * per_char + extra))}em"


def fixed_label(text: str, width: str) -> w.Label:
    return w.Label(text, layout=w.Layout(width=width, min_width=width))
