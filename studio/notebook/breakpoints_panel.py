"""``EngineMonitor``'s breakpoints: set and remove them on a live engine, see the jobs they hold, edit a
held job's context and continue it or step it one state.

The same engine methods as the studio and the HTTP API (``set_breakpoint``, ``remove_breakpoint``,
``continue_job``), named after the actor ``notebook``. Every button is also a coroutine method, so a
cell (or a test) drives the panel without a browser.
"""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as widgets
from pydantic import ValidationError
from traitlets import Int

from avtomatika.engine import OrchestratorEngine
from avtomatika.models import ANY_STATE, Breakpoint, Job, JobStatus
from avtomatika.studio.notebook import _render
from avtomatika.studio.notebook._panel import ACTOR, MonitorPanel, Redraw, Spawn

#: Held jobs listed at most (the oldest first).
HELD_SHOWN = 200


class ContextRefused(ValueError):
    """An edited context that cannot be used; ``field`` is ``initial_data`` or ``state_history``."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def parse_context(field: str, text: str) -> dict[str, Any] | None:
    """An editor's JSON object; None when left empty (the context kept as it is)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContextRefused(field, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContextRefused(field, "must be a JSON object ({...})")
    return value


class BreakpointsPanel(MonitorPanel):
    """Breakpoints on one blueprint (the monitor's) and the jobs they hold.

    Args:
        engine: The engine, started.
        spawn: Runs a button's coroutine in the kernel's loop (the monitor's, which reports errors).
        on_change: Called (a coroutine) after each change, to re-draw the monitor.
    """

    breakpoint_count = Int(0, help="Breakpoints on the blueprint shown.").tag(sync=True)
    held_count = Int(0, help="Jobs of the blueprint held at a breakpoint.").tag(sync=True)

    def __init__(self, engine: OrchestratorEngine, spawn: Spawn, on_change: Redraw, **kwargs: Any) -> None:
        super().__init__(engine, spawn, on_change, **kwargs)
        self.blueprint = ""
        self.breakpoints: list[Breakpoint] = []
        self.held: list[Job] = []
        self._quiet = False
        self._lay_out("avtomatika-breakpoints")

    def __repr__(self) -> str:
        return f"BreakpointsPanel({self.blueprint!r}, breakpoints={self.breakpoint_count}, held={self.held_count})"

    def _build(self) -> None:
        self.state_choice = widgets.Dropdown(options=[], description="state")
        self.break_button = widgets.Button(description="Break: every new job", icon="circle", button_style="danger")
        self.list = widgets.HTML()
        self.remove_choice = widgets.Dropdown(options=[], description="breakpoint", layout={"width": "30em"})
        self.remove_button = widgets.Button(description="Remove", icon="times")
        self.held_choice = widgets.Dropdown(options=[], description="held job", layout={"width": "30em"})
        self.initial_data = widgets.Textarea(description="initial_data", layout={"width": "40em", "height": "7em"})
        self.state_history = widgets.Textarea(description="state_history", layout={"width": "40em", "height": "7em"})
        self.continue_button = widgets.Button(description="Continue", icon="play", button_style="primary")
        self.step_button = widgets.Button(description="Step (one state)", icon="step-forward")
        self.break_button.on_click(lambda _: self._spawn(self.set_breakpoint(self.state_choice.value), "break"))
        self.remove_button.on_click(lambda _: self._on_remove())
        self.continue_button.on_click(lambda _: self._on_held(step=False))
        self.step_button.on_click(lambda _: self._on_held(step=True))
        self.held_choice.observe(lambda _: None if self._quiet else self._show_held(), names="value")

    def _layout(self) -> list[widgets.Widget]:
        return [
            widgets.HTML(_render.page("<h4>Breakpoints</h4>")),
            widgets.HBox([self.state_choice, self.break_button]),
            self.list,
            widgets.HBox([self.remove_choice, self.remove_button]),
            self.held_choice,
            self.initial_data,
            self.state_history,
            widgets.HBox([self.continue_button, self.step_button]),
            self.message,
        ]

    # -- actions --------------------------------------------------------------------------------
    async def set_breakpoint(self, state: str, job_id: str | None = None) -> Breakpoint:
        """Hold every new job of the blueprint shown (or only the job ``job_id``) before ``state``'s handler."""
        blueprint = None if job_id else self.blueprint
        breakpoint = await self.engine.set_breakpoint(blueprint, state, job_id=job_id, actor=ACTOR)
        whose = f"job {job_id[:8]}" if job_id else "every new job"
        await self._changed(f"breakpoint set: {whose} is held before {state}")
        return breakpoint

    async def remove_breakpoint(self, breakpoint_id: str) -> list[Job]:
        """Remove a breakpoint; the jobs it held are continued (and returned)."""
        continued = await self.engine.remove_breakpoint(breakpoint_id, actor=ACTOR)
        await self._changed(f"breakpoint removed; {len(continued)} held job(s) continued")
        return continued

    async def continue_job(
        self,
        job_id: str,
        initial_data: dict[str, Any] | None = None,
        state_history: dict[str, Any] | None = None,
        *,
        step: bool = False,
    ) -> Job:
        """Continue a held job, its context replaced by what is given; ``step``: held again at its next state."""
        job = await self.engine.continue_job(
            job_id, ACTOR, initial_data=initial_data, state_history=state_history, step=step
        )
        await self._changed(f"job {job_id[:8]} {'stepped' if step else 'continued'}: now {job.status} in {job.state}")
        return job

    async def continue_from_editors(self, *, step: bool = False) -> Job | None:
        """Continue the held job chosen with the editors' context; an unreadable edit is shown, not sent."""
        job_id = self.held_choice.value
        if not job_id:
            self._error("choose a held job first")
            return None
        try:
            initial_data = parse_context("initial_data", self.initial_data.value)
            state_history = parse_context("state_history", self.state_history.value)
            return await self.continue_job(job_id, initial_data, state_history, step=step)
        except ContextRefused as exc:
            self._error(str(exc))
        except ValidationError as exc:  # the blueprint's input_model refused the edited initial_data
            self._error(f"initial_data: {exc.errors(include_url=False)[0]['msg']}")
        return None

    async def refresh(self, blueprint: str, states: list[str]) -> None:
        """Re-read the breakpoints of ``blueprint`` and the jobs they hold."""
        self.blueprint = blueprint
        self.breakpoints = [bp for bp in await self.engine.breakpoints() if bp.blueprint == blueprint]
        self.held = await self.engine.list_jobs(status=JobStatus.HELD, blueprint=blueprint, limit=HELD_SHOWN)
        self.breakpoint_count, self.held_count = len(self.breakpoints), len(self.held)
        if list(self.state_choice.options) != states:
            self.state_choice.options = states
        self.list.value = _render.page(breakpoints_html(self.breakpoints, self.held))
        self.remove_choice.options = [(_label(bp), bp.id) for bp in self.breakpoints]
        chosen, ids = self.held_choice.value, [j.id for j in self.held]
        self._quiet = True  # new options reset the value: the editors follow only a new choice
        try:
            self.held_choice.options = [(f"{j.id[:8]} · held at {j.state}", j.id) for j in self.held]
            self.held_choice.value = chosen if chosen in ids else (ids[0] if ids else None)
        finally:
            self._quiet = False
        if self.held_choice.value == chosen:
            self._enable()  # the same job: what is being edited stays
        else:
            self._show_held()

    def states_marked(self) -> dict[str, list[str]]:
        """Classes for the monitor's graph: each state with a breakpoint."""
        return {bp.state: ["breakpoint"] for bp in self.breakpoints if bp.state != ANY_STATE}

    # -- helpers --------------------------------------------------------------------------------
    async def _changed(self, text: str) -> None:
        self._say(text)
        await self._on_change()

    def _error(self, text: str) -> None:
        self._say(text, error=True)

    def _on_remove(self) -> None:
        if self.remove_choice.value:
            self._spawn(self.remove_breakpoint(self.remove_choice.value), "remove")
        else:
            self._error("choose a breakpoint first")

    def _on_held(self, *, step: bool) -> None:
        self._spawn(self.continue_from_editors(step=step), "step" if step else "continue")

    def _show_held(self) -> None:
        """The chosen held job's context in the editors."""
        job = next((j for j in self.held if j.id == self.held_choice.value), None)
        self.initial_data.value = json.dumps(job.initial_data, indent=2) if job else ""
        self.state_history.value = json.dumps(job.state_history, indent=2) if job else ""
        self._enable()

    def _enable(self) -> None:
        none_held = self.held_choice.value is None
        for control in (self.continue_button, self.step_button, self.initial_data, self.state_history):
            control.disabled = none_held
        self.remove_button.disabled = not self.breakpoints


def _label(breakpoint: Breakpoint) -> str:
    where = "the next state" if breakpoint.state == ANY_STATE else breakpoint.state
    whose = f"job {breakpoint.job_id[:8]}" if breakpoint.job_id else "every new job"
    return f"{where} · {whose}"


def breakpoints_html(breakpoints: list[Breakpoint], held: list[Job]) -> str:
    """The breakpoints, and how many jobs each holds."""
    if not breakpoints:
        return "<p class='muted'>No breakpoint on this blueprint: choose a state and Break.</p>"
    esc = _render.esc
    rows = []
    for breakpoint in breakpoints:
        holds = sum(1 for j in held if (j.wait or {}).get("breakpoint_id") == breakpoint.id)
        rows.append(
            f"<li><span class='bp-dot-inline'>●</span> <code>{esc(_label(breakpoint))}</code>"
            f" <span class='muted'>set by {esc(breakpoint.actor or '?')} · holds {holds}</span></li>"
        )
    return f"<ul class='breakpoints'>{''.join(rows)}</ul>"
