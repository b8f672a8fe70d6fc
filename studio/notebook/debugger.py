"""``StepDebugger``: step one job through a blueprint, one handler at a time, in a notebook.

The controls are buttons (Step, Continue, Back, Redo, Release, Answer...) and every one of them has an
async method of the same name for cells and tests (``await dbg.step()``). The engine work is in
:class:`~avtomatika.debugger.session.DebugSession`; the pieces of the screen are collaborators
(:class:`GraphView`, :class:`BreakpointList`, :class:`TaskForm`, :class:`ApprovalBox`,
:class:`LogView`, :class:`BackControls`, :class:`StateEditor`); this module puts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Int, Unicode

from avtomatika.blueprint import Problem, StateMachineBlueprint
from avtomatika.config import Config
from avtomatika.debugger import DebugSession, debug_engine
from avtomatika.debugger.answers import result_of
from avtomatika.debugger.checkpoints import LogEntry
from avtomatika.debugger.preview import Preview
from avtomatika.engine import OrchestratorEngine
from avtomatika.errors import AvtomatikaError, DebuggerError
from avtomatika.graph import GraphvizNotFound, blueprint_svg, extract
from avtomatika.models import Task
from avtomatika.studio.graphs import JobPath, job_marks
from avtomatika.studio.notebook import _panels, _render
from avtomatika.studio.notebook._loop import Background
from avtomatika.studio.notebook._snapshot import PicturedWidget
from avtomatika.studio.notebook.blueprint_view import blueprint_key
from avtomatika.studio.notebook.graph_view import BreakpointList, GraphView
from avtomatika.studio.notebook.log_view import LogView, entry_html
from avtomatika.studio.notebook.pending import ApprovalBox, TaskForm
from avtomatika.studio.notebook.time_travel import BackControls, StateEditor

#: How often the debugger looks for a blueprint changed by a cell (a handler re-defined), in seconds.
WATCH_INTERVAL_S = 0.5


class StepDebugger(PicturedWidget):
    """Create a job of a blueprint and step it by hand: Step, Continue, breakpoints, Back and Redo.

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
    steps = Int(0, help="Handlers run so far on the current line (Back lowers it).").tag(sync=True)
    busy = Bool(False, help="An action is under way.").tag(sync=True)
    valid = Bool(True, help="The blueprint has no validation error (stepping is off otherwise).").tag(sync=True)

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
        self._watcher = Background(f"step-debugger-watch-{chosen.name}", self._show_error)
        self._open_lock = asyncio.Lock()
        self._refresh_pending = False
        self._tasks: list[Task] = []
        self._coming: Preview | None = None
        self._problems: list[Problem] = chosen.validate()
        self._watched = blueprint_key(chosen)
        self._build(list(chosen.states), breakpoints)
        super().__init__(f"Step debugger of {chosen.name}", "avtomatika-step-debugger", self._layout(), **kwargs)
        self._render()
        self._background.spawn(self.ready(), "open")
        self._watcher.spawn(self._watch(), "watch")

    def __repr__(self) -> str:
        return f"StepDebugger({self.blueprint.name!r}, job={self.job_id or None!r}, state={self.state!r})"

    # -- building -------------------------------------------------------------------------------
    def _build(self, states: list[str], breakpoints: tuple[str, ...] | list[str]) -> None:
        self.header = widgets.HTML()
        self.step_button = widgets.Button(description="Step", icon="step-forward", tooltip="Run one handler")
        self.continue_button = widgets.Button(
            description="Continue", icon="play", tooltip="Step until a breakpoint, a task, or the end"
        )
        self.release_button = widgets.Button(description="Release", tooltip="Release the quarantined job")
        self.graph = GraphView()
        self.breakpoint_list = BreakpointList(states, list(breakpoints))
        widgets.link((self.graph, "breakpoints"), (self.breakpoint_list, "value"))
        self.travel = BackControls()
        self.message = widgets.HTML()
        self.task_form = TaskForm()
        self.approval = ApprovalBox(lambda decision: self._act(self.decide(decision), "decide"))
        self.now = widgets.HTML()
        self.editor = StateEditor()
        self.log_view = LogView()
        self.step_button.on_click(lambda _: self._act(self.step(), "step"))
        self.continue_button.on_click(lambda _: self._act(self.continue_(), "continue"))
        self.release_button.on_click(lambda _: self._act(self.release(), "release"))
        self.travel.back_button.on_click(lambda _: self._act(self._back_from_controls(), "back"))
        self.travel.redo_button.on_click(lambda _: self._act(self.redo(), "redo"))
        self.task_form.answer_button.on_click(lambda _: self._act(self._answer_from_form(), "answer"))
        self.task_form.exhaust_button.on_click(lambda _: self._act(self._exhaust_from_form(), "exhaust"))
        self.editor.save_button.on_click(lambda _: self._act(self._edit_from_editor(), "edit"))
        self.breakpoint_list.observe(lambda _: self._render(), names="value")

    def _layout(self) -> list[widgets.Widget]:
        controls = widgets.HBox(
            [self.step_button, self.continue_button, self.release_button, self.travel.row],
            layout={"flex_flow": "row wrap"},
        )
        edit = widgets.Accordion([self.editor], titles=("Edit state_history here",))
        now = widgets.VBox([self.now, edit], layout={"width": "45%", "padding": "0 1em 0 0"})
        details = widgets.VBox([self.log_view.details], layout={"width": "55%"})
        return [
            self.header,
            controls,
            self.graph,
            self.breakpoint_list,
            self.message,
            self.task_form,
            self.approval,
            widgets.HBox([now, details]),
            widgets.VBox([self.log_view.hint, self.log_view.lines]),
            self.travel.editor,
        ]

    # -- properties -----------------------------------------------------------------------------
    @property
    def engine(self) -> OrchestratorEngine:
        return self.session.engine

    @property
    def blueprint(self) -> StateMachineBlueprint:
        return self.session.blueprint

    @property
    def entries(self) -> list[LogEntry]:
        """The log: steps, answers, restores, edits and outside changes, oldest first."""
        return self.session.entries

    @property
    def open_tasks(self) -> list[Task]:
        """The tasks the job waited on when last drawn (``await dbg.session.open_tasks()`` reads them now)."""
        return list(self._tasks)

    @property
    def breakpoints(self) -> set[str]:
        return set(self.breakpoint_list.value)

    @breakpoints.setter
    def breakpoints(self, states: set[str] | list[str] | tuple[str, ...]) -> None:
        unknown = set(states) - set(self.blueprint.states)
        if unknown:
            raise ValueError(f"no such states: {', '.join(sorted(unknown))}")
        self.breakpoint_list.set_states(list(self.blueprint.states))
        self.breakpoint_list.value = [s for s in self.blueprint.states if s in set(states)]

    @property
    def url(self) -> str | None:
        """The engine's HTTP address when it serves (for workers' ``ORCHESTRATOR_URL``)."""
        return f"http://127.0.0.1:{self.engine.port}" if self.engine.app is not None and self.engine.port else None

    # -- actions (each also a button) -----------------------------------------------------------
    async def ready(self) -> StepDebugger:
        """Start the engine if the debugger owns it and create the job; awaited by every action.

        Raises:
            DebuggerError: The blueprint is invalid (every error listed); the debugger opens once it is fixed.
        """
        async with self._open_lock:
            if self.session.job is None:
                self._problems = self.blueprint.validate()
                errors = [str(p) for p in self._problems if p.severity == "error"]
                if errors:
                    self._render()
                    raise DebuggerError(
                        f"blueprint '{self.blueprint.name}' is invalid; fix it first:\n- " + "\n- ".join(errors)
                    )
                if self._serve and not self.engine.app:
                    await self.engine.start(host="127.0.0.1", port=0)
                await self.session.open()
                await self._refresh()
        return self

    async def step(self) -> LogEntry:
        """Run the current state's handler once and apply its action."""
        await self.ready()
        return await self._run(self.session.step())

    async def continue_(self) -> list[LogEntry]:
        """Step until a breakpoint, a task (or approval), the end, or a handler that raises."""
        await self.ready()
        return await self._run(self.session.continue_(self.breakpoints))

    async def back(self, step: int | None = None, state_history: dict[str, Any] | None = None) -> LogEntry:
        """Go back to the state after ``step`` steps (the previous step by default), with ``state_history`` if given.

        What followed is kept as a branch (``redo()`` returns to it). ``back(dbg.steps, state_history)``
        edits the job where it is.
        """
        await self.ready()
        return await self._run(self.session.back(step, state_history))

    async def redo(self) -> LogEntry:
        """Forward again along the branch the last Back left (one checkpoint at a time)."""
        await self.ready()
        return await self._run(self.session.redo())

    async def restore(self, checkpoint_id: int, state_history: dict[str, Any] | None = None) -> LogEntry:
        """Go to any checkpoint, of the current line or of a branch (``dbg.session.tree.checkpoints``)."""
        await self.ready()
        return await self._run(self.session.restore(checkpoint_id, state_history))

    async def edit(self, state_history: dict[str, Any]) -> LogEntry:
        """Replace the job's ``state_history`` where it is now (the next step sees it)."""
        await self.ready()
        return await self._run(self.session.edit(state_history))

    async def answer_task(
        self,
        status: str = "success",
        data: dict[str, Any] | None = None,
        error_code: str | None = None,
        message: str | None = None,
        task_id: str | None = None,
    ) -> LogEntry:
        """Answer an open task as a worker would: ``status``, result ``data``, ``error_code``.

        Args:
            task_id: Which open task (its id, or the start of it); the first open one by default.
                A fan-out has one per branch: ``dbg.open_tasks`` lists them.
        """
        await self.ready()
        result = result_of(status, data, error_code or None, message or None)
        return await self._run(self.session.answer(result, task_id))

    async def exhaust_retries(self, task_id: str | None = None, message: str = "failed by hand") -> LogEntry:
        """Fail an open task with ``TRANSIENT_ERROR`` until its retries are spent (its ``failure`` transition next)."""
        await self.ready()
        return await self._run(self.session.exhaust(task_id, message))

    async def release(self) -> LogEntry:
        """Release the job from quarantine (as the studio's Release does)."""
        await self.ready()
        return await self._run(self.session.release())

    async def decide(self, decision: str) -> LogEntry:
        """Answer the approval the job waits for (``await_human_approval``) with one of its decisions."""
        await self.ready()
        return await self._run(self.session.decide(decision))

    async def settled(self) -> None:
        """Wait until every button's action and every re-drawing has finished."""
        await self._background.wait()

    async def stop(self) -> None:
        """Stop the engine if the debugger made it; the widget stays as it was last drawn."""
        await self._watcher.cancel()
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
        self.message.value = _render.page(f'<pre class="error">{_render.esc(text)}</pre>')

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

    async def _watch(self) -> None:
        """Follow the blueprint: a cell that re-defines a handler may make it invalid, or fix it."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            key = blueprint_key(self.blueprint)
            if key == self._watched:
                continue
            self._watched = key
            if self.session.job is None and not any(p.severity == "error" for p in self.blueprint.validate()):
                self._background.spawn(self.ready(), "open")
            else:
                self._background.spawn(self._refresh(), "refresh")

    async def _refresh(self) -> None:
        self._problems = self.blueprint.validate()
        with contextlib.suppress(GraphvizNotFound):  # graph_html shows the reason
            await asyncio.to_thread(blueprint_svg, self.blueprint)  # graphviz runs once per version
        if self.session.job is not None:
            job = await self.session.sync()
            self._tasks = await self.session.answers.open_tasks(job)
            self._coming = await self.session.preview()
        self._render()

    async def _back_from_controls(self) -> LogEntry:
        checkpoint_id, state_history = self.travel.read()
        return await self.restore(checkpoint_id, state_history)

    async def _answer_from_form(self) -> LogEntry:
        task = self.task_form.chosen
        if task is None:
            raise DebuggerError("the job waits for no task to answer")
        status, data, code, message = self.task_form.read()
        entry = await self.answer_task(status, data, code, message, task.id)
        self.task_form.answered(task.id)
        return entry

    async def _exhaust_from_form(self) -> LogEntry:
        task = self.task_form.chosen
        if task is None:
            raise DebuggerError("the job waits for no task to fail")
        return await self.exhaust_retries(task.id, self.task_form.message.value or "failed by hand")

    async def _edit_from_editor(self) -> LogEntry:
        entry = await self.edit(self.editor.read())
        self.editor.saved()
        self._render()
        return entry

    # -- drawing --------------------------------------------------------------------------------
    def _render(self) -> None:
        session, job = self.session, self.session.job
        errors = sum(p.severity == "error" for p in self._problems)
        self.valid = errors == 0
        self.header.value = _render.page(
            _panels.header_html(self.blueprint.name, job, session.steps_taken, self.url, errors)
        )
        self.breakpoint_list.set_states(list(self.blueprint.states))
        extra = {state: ["breakpoint"] for state in self.breakpoints}
        path = JobPath(job.state, job.status, job.visits, session.tree.moves()) if job is not None else None
        marks = job_marks(extract(self.blueprint), path) if path is not None else None
        self.graph.value = _render.page(_render.graph_html(self.blueprint, marks, extra), css_class="debugger-graph")
        self.now.value = _render.page(_panels.now_html(job, self._coming if job else None, self._problems))
        runnable = job is not None and job.status in _panels.RUNNABLE
        self.step_button.disabled = self.continue_button.disabled = not (runnable and self.valid)
        if job is None:
            self.travel.row.layout.display = self.travel.editor.layout.display = "none"
            self._redraw_picture()
            return
        self.job_id, self.state, self.status, self.steps = job.id, job.state, job.status, session.steps_taken
        self.travel.row.layout.display = self.travel.editor.layout.display = ""
        self.travel.show(session.tree, session.steps_taken)
        self.task_form.show(
            self._tasks if job.status in ("waiting_for_worker", "waiting_for_parallel_tasks") else [], self.url
        )
        self.approval.show(job)
        self.editor.show(job.state_history)
        self.log_view.show(session.entries)
        self.release_button.layout.display = "" if job.status == "quarantined" else "none"
        self._redraw_picture()

    def _picture_parts(self) -> list[str]:
        """The static picture: header, graph, the next step and the last action."""
        shown = self.log_view.shown
        return [
            self.header.value,
            self.graph.value,
            self.now.value,
            _render.page(entry_html(shown)) if shown is not None else "",
        ]


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
