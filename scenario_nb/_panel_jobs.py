"""The panel's job rows: one per generation, newest first, with its status, progress, seed, cost and a Cancel
button, updated from the poller thread (values only)."""

from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Callable

from . import _light_widgets as w

from ._errors import ScenarioError
from ._generation import Generation
from ._panel_style import QUIET, close_tree, error_line, quiet, sentence

# icon, model and prompt, progress, seed, cost, action: the text columns shrink on a narrow screen, the
# Cancel button never does (it was cut at 1280 px with the file browser open)
JOB_COLUMNS = "1.6em minmax(7em, 24em) minmax(5em, 12em) minmax(5em, 12em) minmax(4em, 6.5em) 7.5em"
STATUS_ICONS = {"sending": "⋯", "waiting": "⋯", "unknown": "?", "queued": "⋯", "in-progress": "◔",
                "success": "✓", "failure": "✕", "canceled": "⊘", "not-sent": "⊘"}
STATUS_COLORS = {"success": "#2e7d32", "failure": "#b00020", "canceled": "#b26a00"}


class JobRows:
    """Part of `Panel`: what it reads of the rest of the panel is declared here."""

    jobs: w.VBox
    job_rows: dict[int, SimpleNamespace]
    _add_to_gallery: Callable[[Generation], None]

    # -- Job rows ------------------------------------------------------------------------------------
    def _add_job_row(self, handle: Generation) -> None:
        cell = lambda: w.HTML(layout=w.Layout(overflow="hidden"))  # noqa: E731
        icon, model, seed, cost, note = cell(), cell(), cell(), cell(), w.HTML()
        seed.add_class("scenario-seed")
        bar = w.FloatProgress(min=0, max=1, layout=w.Layout(width="auto", max_width="11.5em", min_width="0"))
        cancel = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="7em"))
        action = w.Box([cancel], layout=w.Layout(width="7.5em"))
        grid = w.GridBox([icon, model, bar, seed, cost, action], layout=w.Layout(
            grid_template_columns=JOB_COLUMNS, align_items="center", grid_gap="0 8px", width="100%"))
        row = w.VBox([grid, note], layout=w.Layout(border_bottom="1px solid #eee", padding="2px 0"))
        row.add_class("scenario-job")
        model.value = (f'<div title="{html.escape(handle.prompt)}" style="max-width:23.5em;white-space:nowrap;'
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
            cost.value = "" if h.cost is None else f'<span style="white-space:nowrap">{h.cost:g} CU</span>'
            if h.note:
                note.value = quiet(sentence(h.note))
            if not h.done:
                return
            if action.children:
                done_with, action.children = action.children, ()  # a finished job has nothing to cancel
                close_tree(done_with)
            if h.ok:
                bar.bar_style = "success"
                if not added:
                    added.append(True)
                    self._add_to_gallery(h)
            elif h.status in ("canceled", "not-sent"):
                bar.bar_style = "warning"
                sent = "before it was sent" not in h.note
                note.value = quiet("Canceled: it made no images." if sent or not h.note else sentence(h.note))
            else:
                bar.bar_style = "danger"
                reason = h.error or (str(h.exception) if h.exception else "no reason given")
                note.value = error_line(f"Failed: {reason}" + (f" ({h.hint})" if h.hint else ""))

        handle.on_update(update)

    def cancel(self, handle: Generation) -> str:
        """Ask to cancel a job from its row; the row says what happened in plain words."""
        parts = self.job_rows.get(id(handle))
        try:
            outcome = handle.cancel()
        except ScenarioError as exc:
            if parts:
                parts.note.value = error_line(str(exc))
            return "error"
        if parts:
            parts.note.value = quiet(sentence(handle.note)) if handle.note else ""
            if outcome in ("refused", "finished", "dropped"):
                done_with, parts.action.children = parts.action.children, ()
                close_tree(done_with)
            elif outcome == "requested":
                parts.cancel.disabled = True  # the note says it was asked
        return outcome
