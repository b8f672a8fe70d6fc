"""The step debugger's log: one line per thing that happened, and the details of the line chosen.

The details show the newest action (a step, an answer, a Back...) and stay on it until the next
action: a change from outside (a worker's answer, the retry backoff running out) is logged but does
not take a traceback off the screen. Clicking a line shows that line's details instead. Lines of a
branch left behind by Back are marked with the branch's number.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from avtomatika.debugger.checkpoints import LogEntry
from avtomatika.debugger.narrate import clip
from avtomatika.studio.notebook import _render

#: Lines shown in the log (the newest).
LOG_LINES = 200
_WIDTH = 90


def line_of(entry: LogEntry) -> str:
    """The log line of ``entry``: number, what, where, the action, and the status it left."""
    what = f"step {entry.step}" if entry.step is not None else entry.kind
    branch = f"  [branch {entry.branch}, left]" if entry.branch is not None else ""
    action = clip(entry.action, _WIDTH)
    flag = " !" if entry.error else "  "
    then = f"\N{RIGHTWARDS ARROW} {entry.status} in {entry.next_state}"
    return f"#{entry.seq:<3}{flag}{what:<9} {entry.state:<16} {action}  {then}{branch}"


def entry_html(entry: LogEntry) -> str:
    """The details of one log line: the handler, the action, the diff, the inputs and any traceback."""
    esc = _render.esc
    title = f"Step {entry.step}" if entry.step is not None else entry.kind.capitalize()
    left = f" <span class='badge tone-cancelled'>branch {entry.branch}, left</span>" if entry.branch else ""
    parts = [f"<h4>#{entry.seq} · {esc(title)} · in <b>{esc(entry.state)}</b>{left}</h4>"]
    if entry.handler:
        parts.append(f"<div>handler <code>{esc(entry.handler)}</code></div>")
    parts.append(f"<div>action: <code>{esc(entry.action)}</code></div>")
    parts.append(f"<div>then: {_render.badge(entry.status)} in <b>{esc(entry.next_state)}</b></div>")
    if entry.error:
        parts.append(f"<div class='error'>{esc(entry.error)}</div>")
    if entry.traceback:
        parts.append(f"<h4>Traceback</h4><pre class='traceback'>{esc(entry.traceback)}</pre>")
    parts.append(f"<h4>state_history diff</h4>{_render.diff_html(entry.changes)}")
    if "aggregation_results" in entry.context:
        parts.append("<div class='muted'>aggregation_results it received</div>")
        parts.append(_render.json_block(entry.context["aggregation_results"]))
    return "".join(parts)


class LogView(widgets.VBox):
    """The log as a list to click, and the details of the line chosen (the newest action by default)."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.pinned: int | None = None  # seq of the line whose details are shown
        self._drawing = False  # options being replaced: the Select's own value changes are not clicks
        self.details = widgets.HTML()
        self.hint = widgets.HTML()
        self.lines = widgets.Select(options=[], rows=8, layout={"width": "100%"})
        self.lines.add_class("avtomatika-log")
        self.lines.observe(self._clicked, names="value")
        super().__init__([self.details, self.hint, self.lines])

    @property
    def shown(self) -> LogEntry | None:
        """The entry whose details are on screen."""
        return next((e for e in self.entries if e.seq == self.pinned), None)

    def show(self, entries: list[LogEntry]) -> None:
        """Re-draw with ``entries``; a new action (not a change from outside) becomes the line shown."""
        newest_action = next((e for e in reversed(entries) if e.kind != "outside"), None)
        known = {e.seq for e in self.entries}
        if newest_action is not None and newest_action.seq not in known:
            self.pinned = newest_action.seq
        elif self.pinned is None and entries:
            self.pinned = entries[-1].seq
        self.entries = list(entries)
        options = [(line_of(e), e.seq) for e in entries[-LOG_LINES:]]
        self._drawing = True
        try:
            if list(self.lines.options) != options:
                self.lines.options = options
            if self.lines.value != self.pinned:
                self.lines.value = self.pinned if any(seq == self.pinned for _, seq in options) else None
        finally:
            self._drawing = False
        self.hint.value = _render.page(
            "<h4>Log</h4><span class='muted'>Click a line to show its details above; the newest action stays "
            "shown until the next one. <code>!</code> marks an error, <code>[branch n, left]</code> what Back "
            "left behind (Redo, or Back to one of its steps, returns to it).</span>"
            if entries
            else "<p class='muted'>Nothing run yet: press Step or Continue.</p>"
        )
        self._draw_details()

    def _clicked(self, change: dict[str, Any]) -> None:
        if not self._drawing and change["new"] is not None and change["new"] != self.pinned:
            self.pinned = change["new"]
            self._draw_details()

    def _draw_details(self) -> None:
        entry = self.shown
        self.details.value = _render.page(entry_html(entry)) if entry is not None else ""
