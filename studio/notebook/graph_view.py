"""``GraphView``: a blueprint's graph at full width, with zoom, where a click on a state toggles a breakpoint;
``BreakpointList``: the same breakpoints as checkboxes.

The kernel draws (the studio's cached SVG with live marks, see :mod:`._render`) and sends the HTML as
``value``; the front end (``static/notebook/graph_view.js``, an anywidget ES module) only lays it out
and reports clicks by changing ``breakpoints``, which the debugger observes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
from traitlets import Bool, Float, List, Unicode

from avtomatika.studio.render import STATIC_DIR

_HERE = Path(STATIC_DIR) / "notebook"


class GraphView(anywidget.AnyWidget):  # type: ignore[misc]
    """The graph's HTML (``value``), its zoom, and the breakpoints a click on a state toggles."""

    _esm = _HERE / "graph_view.js"
    _css = _HERE / "graph_view.css"

    value = Unicode("", help="The graph as HTML (a <style> and the marked <svg>).").tag(sync=True)
    breakpoints = List(Unicode(), help="States a click has marked as breakpoints.").tag(sync=True)
    zoom = Float(0.0, help="Scale of the drawing; 0 fits it to the width, never below readable labels.").tag(sync=True)
    clickable = Bool(True, help="Whether a click on a state toggles its breakpoint.").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layout.width = "100%"

    def __repr__(self) -> str:
        return f"GraphView(breakpoints={list(self.breakpoints)!r}, zoom={self.zoom})"

    def toggle(self, state: str) -> None:
        """What a click on ``state`` does: add it to the breakpoints, or take it out."""
        current = list(self.breakpoints)
        self.breakpoints = [s for s in current if s != state] if state in current else [*current, state]


class BreakpointList(widgets.HBox):
    """A checkbox per state: ``value`` lists the states checked (and the graph's clicks change it too)."""

    value = List(Unicode(), help="States checked as breakpoints, in the order of the states.")

    def __init__(self, states: list[str], value: list[str]) -> None:
        self._boxes: dict[str, widgets.Checkbox] = {}
        self._label = widgets.HTML("<b>Breakpoints</b>&nbsp;", layout={"width": "auto"})
        super().__init__(layout={"flex_flow": "row wrap", "align_items": "center"})
        self.add_class("avtomatika-breakpoints")
        self.observe(self._changed, names="value")
        self.set_states(states)
        self.value = [s for s in states if s in value]

    def set_states(self, states: list[str]) -> None:
        """One checkbox per state (kept when the state still exists)."""
        if list(self._boxes) == states:
            return
        boxes = {s: self._boxes.get(s) or self._box(s) for s in states}
        self._boxes = boxes
        self.children = [self._label, *boxes.values()]
        self.value = [s for s in self.value if s in boxes]

    def _box(self, state: str) -> widgets.Checkbox:
        box = widgets.Checkbox(value=False, description=state, indent=False, layout={"width": "auto"})
        box.observe(lambda change: self._ticked(state, change["new"]), names="value")
        return box

    def _ticked(self, state: str, on: bool) -> None:
        chosen = set(self.value) | {state} if on else set(self.value) - {state}
        ordered = [s for s in self._boxes if s in chosen]
        if ordered != list(self.value):
            self.value = ordered

    def _changed(self, change: dict[str, Any]) -> None:
        for state, box in self._boxes.items():
            box.value = state in change["new"]
