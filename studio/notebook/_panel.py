"""What ``EngineMonitor``'s panels (breakpoints, bulk actions, reruns) share: the engine, how a button's
coroutine runs (the monitor's loop, which reports errors), how the monitor is re-drawn after a change,
and a message line under the panel."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import ipywidgets as widgets

from avtomatika.engine import OrchestratorEngine
from avtomatika.studio.notebook import _render

#: The actor named in events and history for what is done from the notebook.
ACTOR = "notebook"

#: Runs a coroutine (a button's) in the kernel's loop, named for its error report.
Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]
#: Re-draws the monitor.
Redraw = Callable[[], Coroutine[Any, Any, None]]


class MonitorPanel(widgets.VBox):
    """A panel of the monitor; a subclass lays its widgets out in ``children``, ``message`` last.

    Each subclass defines ``_build`` (creates its widgets) and ``_layout`` (them, top to bottom).

    Args:
        engine: The engine, started.
        spawn: Runs a button's coroutine in the kernel's loop.
        on_change: Called after a change, to re-draw the monitor.
    """

    _build: Callable[[], None]
    _layout: Callable[[], list[widgets.Widget]]

    def __init__(self, engine: OrchestratorEngine, spawn: Spawn, on_change: Redraw, **kwargs: Any) -> None:
        self.engine = engine
        self._spawn = spawn
        self._on_change = on_change
        self.message = widgets.HTML()
        super().__init__(**kwargs)

    def _lay_out(self, css_class: str) -> None:
        """Build the subclass's widgets (``_build``) and show them (``_layout``), once its state is set."""
        self._build()
        self.children = self._layout()
        self.add_class(css_class)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.value = _render.page(f"<p class='{'error' if error else 'muted'}'>{_render.esc(text)}</p>")
