"""``BlueprintView``: a blueprint's graph that follows the cells adding handlers, with its problems.

The view polls ``blueprint.version`` (a cached hash, cheap to read) and the identity of the
registered handlers from a small task in the kernel's event loop, and re-draws only when one of them
changed: a new state, edge or condition, or a handler re-defined in a cell. Drawing reuses the
studio's cached SVG (:func:`avtomatika.graph.blueprint_svg`), rendered off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Float, Int, Unicode

from avtomatika.blueprint import StateMachineBlueprint
from avtomatika.graph import GraphvizNotFound, blueprint_svg
from avtomatika.studio.notebook import _render
from avtomatika.studio.notebook._loop import Background, running_loop
from avtomatika.studio.notebook._snapshot import PicturedWidget

#: How often the view looks for changes, in seconds.
POLL_INTERVAL_S = 0.5


def blueprint_key(blueprint: StateMachineBlueprint) -> tuple[Any, ...]:
    """What the view draws from: the graph's version and which functions handle which states."""
    handlers = tuple(
        (info.name, tuple(id(spec.function) for spec in info.handlers())) for info in blueprint.states.values()
    )
    return blueprint.version, handlers


class BlueprintView(PicturedWidget):
    """The graph of ``blueprint``, re-drawn as handlers are added in later cells, with validation
    problems listed under it.

    Args:
        blueprint: The blueprint being written.
        auto_refresh: Look for changes twice a second (in the kernel's loop); else call :meth:`refresh`.
    """

    blueprint_name = Unicode(help="Name of the blueprint shown.").tag(sync=True)
    version = Unicode(help="The blueprint version drawn (changes with states, edges and conditions).").tag(sync=True)
    errors = Int(0, help="Validation errors of the version drawn; the engine refuses the blueprint while > 0.").tag(
        sync=True
    )
    warnings = Int(0, help="Validation warnings of the version drawn.").tag(sync=True)
    auto_refresh = Bool(True, help="Re-draw by itself when the blueprint changes.").tag(sync=True)
    interval_s = Float(POLL_INTERVAL_S, help="Seconds between looks for changes.")

    def __init__(self, blueprint: StateMachineBlueprint, *, auto_refresh: bool = True, **kwargs: Any) -> None:
        self._blueprint = blueprint
        self._drawn: tuple[Any, ...] | None = None
        self._background = Background(f"blueprint-view-{blueprint.name}", self._show_error)
        self._poller: asyncio.Task[None] | None = None
        self.header = widgets.HTML()
        self.graph = widgets.HTML()
        self.problems = widgets.HTML()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="Re-draw now")
        self.auto_toggle = widgets.Checkbox(value=auto_refresh, description="auto-refresh", indent=False)
        self.refresh_button.on_click(lambda _: self.refresh())
        toolbar = widgets.HBox([self.header, self.refresh_button, self.auto_toggle])
        super().__init__(
            f"Blueprint {blueprint.name}", "avtomatika-blueprint-view", [toolbar, self.graph, self.problems], **kwargs
        )
        widgets.link((self.auto_toggle, "value"), (self, "auto_refresh"))
        self.auto_refresh = auto_refresh
        self.observe(self._auto_changed, names="auto_refresh")
        self.refresh()
        if auto_refresh:
            self._start_polling()

    def __repr__(self) -> str:
        return f"BlueprintView({self._blueprint.name!r}, version={self.version!r})"

    def _picture_parts(self) -> list[str]:
        return [self.header.value, self.graph.value, self.problems.value]

    @property
    def blueprint(self) -> StateMachineBlueprint:
        return self._blueprint

    # -- drawing ----------------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Re-draw if the blueprint changed since the last drawing (always with ``force``); True if it did."""
        key = blueprint_key(self._blueprint)
        if key == self._drawn and not force:
            return False
        self._draw(key)
        return True

    def _draw(self, key: tuple[Any, ...]) -> None:
        blueprint = self._blueprint
        problems = blueprint.validate()
        self.errors = sum(p.severity == "error" for p in problems)
        self.warnings = len(problems) - self.errors
        self.blueprint_name, self.version = blueprint.name, blueprint.version
        states = len(blueprint.states)
        self.header.value = _render.page(
            f"<b>{_render.esc(blueprint.name)}</b> "
            f'<span class="muted">· {states} state{"s" if states != 1 else ""} · version {self.version}</span>'
        )
        self.graph.value = _render.page(_render.graph_html(blueprint))
        self.problems.value = _render.page(_render.problems_html(problems))
        self._drawn = key
        self._redraw_picture()

    def _show_error(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        self.problems.value = _render.page(f'<p class="error">{_render.esc(text)}</p>')

    # -- following the blueprint ------------------------------------------------------------------
    def _auto_changed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._start_polling()
        else:
            self.stop()

    def _start_polling(self) -> None:
        if self._poller is not None and not self._poller.done():
            return
        if running_loop() is None:  # outside a kernel: refresh() by hand
            return
        self._poller = self._background.spawn(self._poll(), "poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            key = blueprint_key(self._blueprint)
            if key == self._drawn:
                continue
            with contextlib.suppress(GraphvizNotFound):  # graph_html shows the reason
                await asyncio.to_thread(blueprint_svg, self._blueprint)  # a thread: the kernel stays responsive
            self._draw(key)

    async def wait_drawn(self, timeout_s: float = 10.0) -> None:
        """Wait until the drawing shows the blueprint as it is now (for cells and tests)."""
        async with asyncio.timeout(timeout_s):
            while blueprint_key(self._blueprint) != self._drawn:  # noqa: ASYNC110 - the blueprint has no events
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        """Stop following the blueprint (``refresh()`` still works)."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    def close(self) -> None:
        self.stop()
        super().close()
