"""``StepDebugger``: step one job through a blueprint, one handler at a time, in a notebook.

The controls are buttons (Step, Continue, Back, Release, Answer) and every one of them has an async
method of the same name for cells and tests (``await dbg.step()``). The engine work is in
:class:`~avtomatika.studio.notebook.session.DebugSession`; this module only draws it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Int, Unicode

from ...blueprint import StateMachineBlueprint
from ...config import Config
from ...engine import OrchestratorEngine
from ...errors import AvtomatikaError
from ...graph import GraphvizNotFound, blueprint_svg
from ...models import WAITING_ON_TASKS, JobStatus, Task
from ..graphs import job_marks
from . import _render
from ._loop import Background
from .session import DebuggerError, DebugSession, Entry, debug_engine

ERROR_CODES = ("", "TRANSIENT_ERROR", "PERMANENT_ERROR", "INVALID_INPUT_ERROR")
#: Entries shown in the log (the newest).
LOG_LINES = 30


class StepDebugger(widgets.VBox):
    """Create a job of a blueprint and step it by hand: Step, Continue, breakpoints, Back.

    Args:
        target: A blueprint (the debugger makes an engine for it), or an engine from
            :func:`~avtomatika.studio.notebook.debug_engine` (start it with HTTP to let real workers in).
        initial_data: The job's input.
        blueprint: With an engine: the blueprint (or its name) to debug; the only one registered by default.
        serve: With a blueprint: serve the engine's HTTP API and studio on 127.0.0.1 (a free port), so
            real workers can answer its tasks.
        config: Settings of the engine the debugger makes.
        breakpoints: States where Continue stops before running their handler.
    """

    job_id = Unicode("", help="Id of the job being debugged.").tag(sync=True)
    state = Unicode("", help="The job's current state (highlighted in the graph).").tag(sync=True)
    status = Unicode("", help="The job's status.").tag(sync=True)
    steps = Int(0, help="Handlers run so far (Back lowers it).").tag(sync=True)
    busy = Bool(False, help="An action is under way.").tag(sync=True)

    def __init__(
        self,
        target: StateMachineBlueprint | OrchestratorEngine,
        initial_data: dict[str, Any] | None = None,
        *,
        blueprint: StateMachineBlueprint | str | None = None,
        serve: bool = False,
        config: Config | None = None,
        breakpoints: tuple[str, ...] | list[str] = (),
        **kwargs: Any,
    ) -> None:
        engine, chosen, self._owns_engine = _engine_and_blueprint(target, blueprint, config)
        self._serve = serve and self._owns_engine
        self.session = DebugSession(engine, chosen, initial_data, on_change=self._changed)
        self._background = Background(f"step-debugger-{chosen.name}", self._show_error)
        self._opening: asyncio.Task[Any] | None = None
        self._refresh_pending = False
        self._tasks: list[Task] = []
        self._build(sorted(chosen.states), breakpoints)
        super().__init__(children=self._layout(), **kwargs)
        self.add_class("avtomatika-step-debugger")
        self._render()
        self._opening = self._background.spawn(self.ready(), "open")

    def __repr__(self) -> str:
        return f"StepDebugger({self.blueprint.name!r}, job={self.job_id or None!r}, state={self.state!r})"

    # -- building -------------------------------------------------------------------------------
    def _build(self, states: list[str], breakpoints: tuple[str, ...] | list[str]) -> None:
        self.header = widgets.HTML()
        self.step_button = widgets.Button(description="Step", icon="step-forward", tooltip="Run one handler")
        self.continue_button = widgets.Button(
            description="Continue", icon="play", tooltip="Step until a breakpoint, a task, or the end"
        )
        self.back_choice = widgets.Dropdown(options=[], description="Back to", layout={"width": "22em"})
        self.back_button = widgets.Button(description="Back", icon="undo", tooltip="Restore the job as it was then")
        self.release_button = widgets.Button(description="Release", tooltip="Release the quarantined job")
        self.breakpoint_choice = widgets.SelectMultiple(
            options=states, value=[s for s in breakpoints if s in states], description="Breakpoints", rows=4
        )
        self.history_editor = widgets.Textarea(
            description="state_history",
            placeholder="state_history to go back with (JSON); left as it was, it is restored unchanged",
            layout={"width": "100%", "height": "7em"},
        )
        self.graph = widgets.HTML()
        self.now = widgets.HTML()
        self.last = widgets.HTML()
        self.task_info = widgets.HTML()
        self.answer_status = widgets.Dropdown(options=["success", "failure"], description="status")
        self.answer_data = widgets.Textarea(value="{}", description="data", layout={"width": "100%"})
        self.answer_code = widgets.Dropdown(options=ERROR_CODES, description="error code")
        self.answer_message = widgets.Text(description="message", placeholder="error message")
        self.answer_button = widgets.Button(description="Answer", icon="reply", tooltip="Submit this result")
        self.task_box = widgets.VBox(
            [
                self.task_info,
                widgets.HBox([self.answer_status, self.answer_code, self.answer_message]),
                self.answer_data,
                self.answer_button,
            ],
            layout={"display": "none", "border": "1px solid rgba(127,127,127,.35)", "padding": "4px"},
        )
        self.decision_choice = widgets.Dropdown(options=[], description="decision")
        self.decide_button = widgets.Button(description="Decide", icon="check", tooltip="Answer the approval")
        self.human_box = widgets.HBox([self.decision_choice, self.decide_button], layout={"display": "none"})
        self.log_panel = widgets.HTML()
        self.message = widgets.HTML()
        self.step_button.on_click(lambda _: self._act(self.step(), "step"))
        self.continue_button.on_click(lambda _: self._act(self.continue_(), "continue"))
        self.back_button.on_click(lambda _: self._act(self._back_from_controls(), "back"))
        self.release_button.on_click(lambda _: self._act(self.release(), "release"))
        self.answer_button.on_click(lambda _: self._act(self._answer_from_form(), "answer"))
        self.decide_button.on_click(lambda _: self._act(self.decide(self.decision_choice.value or ""), "decide"))
        self.back_choice.observe(self._snapshot_chosen, names="value")
        self.breakpoint_choice.observe(lambda _: self._render(), names="value")

    def _layout(self) -> list[widgets.Widget]:
        controls = widgets.HBox([self.step_button, self.continue_button, self.release_button])
        back = widgets.VBox([widgets.HBox([self.back_choice, self.back_button]), self.history_editor])
        side = widgets.VBox([self.breakpoint_choice, back], layout={"width": "40%"})
        return [
            self.header,
            controls,
            widgets.HBox([widgets.VBox([self.graph], layout={"width": "60%"}), side]),
            self.message,
            self.task_box,
            self.human_box,
            widgets.HBox([widgets.VBox([self.now], layout={"width": "50%"}), widgets.VBox([self.last])]),
            self.log_panel,
        ]

    # -- properties -----------------------------------------------------------------------------
    @property
    def engine(self) -> OrchestratorEngine:
        return self.session.engine

    @property
    def blueprint(self) -> StateMachineBlueprint:
        return self.session.blueprint

    @property
    def entries(self) -> list[Entry]:
        """The log: steps, answers, restores and outside changes, oldest first."""
        return self.session.entries

    @property
    def breakpoints(self) -> set[str]:
        return set(self.breakpoint_choice.value)

    @breakpoints.setter
    def breakpoints(self, states: set[str] | list[str] | tuple[str, ...]) -> None:
        unknown = set(states) - set(self.blueprint.states)
        if unknown:
            raise ValueError(f"no such states: {', '.join(sorted(unknown))}")
        self.breakpoint_choice.options = sorted(self.blueprint.states)
        self.breakpoint_choice.value = tuple(sorted(states))

    @property
    def url(self) -> str | None:
        """The engine's HTTP address when it serves (for workers' ``ORCHESTRATOR_URL``)."""
        return f"http://127.0.0.1:{self.engine.port}" if self.engine.app is not None and self.engine.port else None

    # -- actions (each also a button) -----------------------------------------------------------
    async def ready(self) -> StepDebugger:
        """Start the engine if the debugger owns it and create the job; awaited by every action."""
        if self.session.job is not None:
            return self
        if self._opening is not None and self._opening is not asyncio.current_task():
            await asyncio.shield(self._opening)
            return self
        if self._serve and not self.engine.app:
            await self.engine.start(host="127.0.0.1", port=0)
        await self.session.open()
        await self._refresh()
        return self

    async def step(self) -> Entry:
        """Run the current state's handler once and apply its action."""
        await self.ready()
        return await self._run(self.session.step())

    async def continue_(self) -> list[Entry]:
        """Step until a breakpoint, a task (or approval), the end, or a handler that raises."""
        await self.ready()
        return await self._run(self.session.continue_(self.breakpoints))

    async def back(self, index: int, state_history: dict[str, Any] | None = None) -> Entry:
        """Restore the job as it was before step ``index`` + 1 (0: as created), with ``state_history`` if given."""
        await self.ready()
        return await self._run(self.session.back(index, state_history))

    async def answer_task(
        self,
        status: str = "success",
        data: dict[str, Any] | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> Entry:
        """Answer the task the job waits for, as a worker would: ``status``, result ``data``, ``error_code``."""
        await self.ready()
        return await self._run(self.session.answer(status, data, error_code or None, message or None))

    async def release(self) -> Entry:
        """Release the job from quarantine (as the studio's Release does)."""
        await self.ready()
        return await self._run(self.session.release())

    async def decide(self, decision: str) -> Entry:
        """Answer the approval the job waits for (``await_human_approval``) with one of its decisions."""
        await self.ready()
        return await self._run(self.session.decide(decision))

    async def settled(self) -> None:
        """Wait until every button's action and every re-drawing has finished."""
        await self._background.wait()

    async def stop(self) -> None:
        """Stop the engine if the debugger made it; the widget stays as it was last drawn."""
        await self._background.cancel()
        await self.session.close()
        if self._owns_engine and self.engine.app is not None:
            await self.engine.stop()

    async def aclose(self) -> None:
        """:meth:`stop`, then close the widget (its views disappear)."""
        await self.stop()
        self.close()

    # -- plumbing -------------------------------------------------------------------------------
    async def _run(self, action: Any) -> Any:
        self.busy = True
        try:
            result = await action
            self.message.value = ""
            return result
        finally:
            self.busy = False
            await self._refresh()

    def _act(self, action: Any, what: str) -> None:
        """A button's action: run it in the kernel's loop; its error is shown, not raised."""
        self._background.spawn(action, what)

    def _show_error(self, error: BaseException) -> None:
        known = isinstance(error, AvtomatikaError | ValueError)
        text = str(error) if known else f"{type(error).__name__}: {error}"
        self.message.value = _render.page(f'<p class="error">{_render.esc(text)}</p>')

    def _changed(self) -> None:
        """An event of the job (from a step, a worker, the studio): re-draw soon, once."""
        if self._refresh_pending:
            return
        self._refresh_pending = True
        self._background.spawn(self._refresh_soon(), "refresh")

    async def _refresh_soon(self) -> None:
        await asyncio.sleep(0.05)
        self._refresh_pending = False
        await self._refresh()

    async def _refresh(self) -> None:
        if self.session.job is not None:
            await self.session.sync()
        with contextlib.suppress(GraphvizNotFound):  # graph_html shows the reason
            await asyncio.to_thread(blueprint_svg, self.blueprint)  # graphviz runs once per version
        self._tasks = await self.session.open_tasks() if self.session.job is not None else []
        self._render()

    async def _back_from_controls(self) -> Entry:
        index = self.back_choice.value
        if index is None:
            raise DebuggerError("choose a step to go back to")
        snapshot = next(s for s in self.session.snapshots if s.index == index)
        text = self.history_editor.value.strip()
        edited = _parse_json(text, "state_history") if text else None
        return await self.back(index, None if edited == snapshot.job.state_history else edited)

    async def _answer_from_form(self) -> Entry:
        data = _parse_json(self.answer_data.value.strip() or "{}", "data")
        return await self.answer_task(self.answer_status.value, data, self.answer_code.value, self.answer_message.value)

    def _snapshot_chosen(self, change: dict[str, Any]) -> None:
        snapshot = next((s for s in self.session.snapshots if s.index == change["new"]), None)
        if snapshot is not None:
            self.history_editor.value = json.dumps(snapshot.job.state_history, indent=2, sort_keys=True)

    # -- drawing --------------------------------------------------------------------------------
    def _render(self) -> None:
        session, job = self.session, self.session.job
        esc = _render.esc
        if job is None:
            self.header.value = _render.page(f"<b>{esc(self.blueprint.name)}</b> <span class='muted'>starting…</span>")
            self.graph.value = _render.page(_render.graph_html(self.blueprint))
            return
        self.job_id, self.state, self.status, self.steps = job.id, job.state, job.status, session.steps_taken
        serving = f" · serving <a href='{esc(self.url)}/studio/jobs/{esc(job.id)}' target='_blank'>{esc(self.url)}</a>"
        self.header.value = _render.page(
            f"<b>{esc(self.blueprint.name)}</b> · job <code>{esc(job.id[:8])}</code> · {_render.badge(job.status)}"
            f" · state <b class='current-state'>{esc(job.state)}</b> · step {session.steps_taken}"
            + (serving if self.url else "")
        )
        extra = {state: ["breakpoint"] for state in self.breakpoints}
        marks = job_marks(self.blueprint, job)
        self.graph.value = _render.page(_render.graph_html(self.blueprint, marks, extra), css_class="debugger-graph")
        self.now.value = _render.page(self._now_html())
        self.last.value = _render.page(_entry_html(session.entries[-1]) if session.entries else "")
        self.log_panel.value = _render.page(_log_html(session.entries))
        self._render_back_choice()
        self._render_task(self._tasks)
        self._render_decisions()
        runnable = job.status in ("pending", "running", "awaiting_retry")
        self.step_button.disabled = self.continue_button.disabled = not runnable
        self.release_button.layout.display = "" if job.status == "quarantined" else "none"

    def _now_html(self) -> str:
        job = self.session.job
        assert job is not None
        handler = self.session.next_handler(job) if job.status in ("pending", "running", "awaiting_retry") else None
        esc = _render.esc
        upcoming = (
            f"<h4>Next step</h4><div>state <b>{esc(job.state)}</b> runs <code>{esc(handler)}</code></div>"
            if handler
            else f"<h4>Now</h4><div>{_render.badge(job.status)} {esc(job.error or '')}</div>"
        )
        return (
            upcoming
            + "<h4>Context</h4><div class='muted'>initial_data</div>"
            + _render.json_block(job.initial_data)
            + "<div class='muted'>state_history</div>"
            + _render.json_block(job.state_history)
        )

    def _render_back_choice(self) -> None:
        options = [(s.label, s.index) for s in self.session.snapshots]
        if list(self.back_choice.options) != options:
            current = self.back_choice.value
            self.back_choice.options = options
            indexes = [index for _, index in options]
            self.back_choice.value = current if current in indexes else (indexes[-1] if indexes else None)

    def _render_decisions(self) -> None:
        job = self.session.job
        waiting = job is not None and job.status == JobStatus.WAITING_FOR_HUMAN
        decisions = sorted(((job.wait or {}).get("transitions") or {}) if waiting and job else {})
        if list(self.decision_choice.options) != decisions:
            self.decision_choice.options = decisions
        self.human_box.layout.display = "" if decisions else "none"

    def _render_task(self, tasks: list[Task]) -> None:
        job = self.session.job
        if not tasks or job is None or job.status not in WAITING_ON_TASKS:
            self.task_box.layout.display = "none"
            return
        task = tasks[0]
        esc = _render.esc
        held = f" · held by worker <code>{esc(task.worker_id)}</code>" if task.worker_id else ""
        where = f" or let a worker connected to {esc(self.url)} answer it" if self.url else ""
        self.task_info.value = _render.page(
            f"<h4>Task <code>{esc(task.type)}</code> is waiting ({esc(task.status)}{held})</h4>"
            f"<div>params {_render.json_block(task.params)}</div>"
            f"<div>transitions: <code>{esc(_render.short(task.transitions, 120))}</code></div>"
            f"<div class='muted'>Answer it by hand{where}.</div>"
        )
        statuses = list(dict.fromkeys([*task.transitions, "success", "failure", "cancelled"]))
        if list(self.answer_status.options) != statuses:
            self.answer_status.options = statuses
        self.task_box.layout.display = ""


def _engine_and_blueprint(
    target: StateMachineBlueprint | OrchestratorEngine,
    blueprint: StateMachineBlueprint | str | None,
    config: Config | None,
) -> tuple[OrchestratorEngine, StateMachineBlueprint, bool]:
    if isinstance(target, StateMachineBlueprint):
        return debug_engine(config=config), target, True
    if not isinstance(target, OrchestratorEngine):
        raise TypeError(f"debug a StateMachineBlueprint or an engine, not {type(target).__name__}")
    if isinstance(blueprint, StateMachineBlueprint):
        return target, blueprint, False
    if blueprint is None:
        if len(target.blueprints) != 1:
            raise ValueError(f"the engine has {len(target.blueprints)} blueprints: name one with blueprint=")
        return target, next(iter(target.blueprints.values())), False
    found = target.blueprints.get(blueprint)
    if found is None:
        raise ValueError(f"the engine has no blueprint {blueprint!r}")
    return target, found, False


def _parse_json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def _entry_html(entry: Entry) -> str:
    esc = _render.esc
    title = f"Step {entry.step}" if entry.step is not None else entry.kind.capitalize()
    parts = [f"<h4>{esc(title)} · in <b>{esc(entry.state)}</b></h4>"]
    if entry.handler:
        parts.append(f"<div>handler <code>{esc(entry.handler)}</code></div>")
    parts.append(f"<div>action: <code>{esc(entry.action)}</code></div>")
    parts.append(f"<div>now: {_render.badge(entry.status)} in <b>{esc(entry.next_state)}</b></div>")
    parts.append(f"<h4>state_history diff</h4>{_render.diff_html(entry.changes)}")
    if entry.error:
        parts.append(f"<div class='error'>{esc(entry.error)}</div>")
    if entry.traceback:
        parts.append(f"<h4>Traceback</h4><pre class='traceback'>{esc(entry.traceback)}</pre>")
    return "".join(parts)


def _log_html(entries: list[Entry]) -> str:
    if not entries:
        return "<p class='muted'>Nothing run yet: press Step or Continue.</p>"
    esc = _render.esc
    rows = [
        f"<tr><td>{entry.step if entry.step is not None else ''}</td><td>{esc(entry.kind)}</td>"
        f"<td>{esc(entry.state)}</td><td><code>{esc(_render.clip(entry.action, 100))}</code></td>"
        f"<td>{_render.badge(entry.status)} {esc(entry.next_state)}</td></tr>"
        for entry in entries[-LOG_LINES:]
    ]
    head = "<tr><th>#</th><th>what</th><th>in</th><th>action</th><th>then</th></tr>"
    return f"<h4>Log</h4><table>{head}{''.join(rows)}</table>"
