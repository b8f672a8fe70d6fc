"""``EngineMonitor``: a running engine seen from the notebook that started it.

Start the engine in the kernel's own loop (``await engine.start(host="127.0.0.1", port=0)``: a cell's
top-level ``await`` runs there), then show ``EngineMonitor(engine)``: whether the engine runs and
where the studio is, the jobs by status, the live graph of a blueprint with the jobs still in each
state, the recent jobs, and the studio's actions (start, retry, release, cancel) for the job chosen,
each offered only when that job's status allows it. Under them, the blueprint's breakpoints with the
jobs they hold (``monitor.breakpoints``: edit a held job's context, continue or step it) and its
quarantined jobs in bulk (``monitor.bulk``: release, retry or fail those selected at a capped rate),
and its ended jobs to rerun (``monitor.reruns``: a new job at a chosen state, its data there edited).
The widget follows the engine's events, re-draws at most every ``refresh_s`` seconds, and notices
an engine stopped or started from another cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Int, Unicode

from avtomatika.engine import OrchestratorEngine
from avtomatika.errors import DebuggerError
from avtomatika.events import Event
from avtomatika.graph import GraphvizNotFound, blueprint_svg, extract
from avtomatika.models import TERMINAL_STATUSES, Job, JobStatus
from avtomatika.runtime.operations import RETRYABLE
from avtomatika.studio.app import STUDIO_PREFIX
from avtomatika.studio.blueprints import LiveCounts
from avtomatika.studio.notebook import _render
from avtomatika.studio.notebook._loop import Background
from avtomatika.studio.notebook._panel import ACTOR
from avtomatika.studio.notebook._snapshot import PicturedWidget
from avtomatika.studio.notebook.breakpoints_panel import BreakpointsPanel
from avtomatika.studio.notebook.bulk_panel import BulkPanel
from avtomatika.studio.notebook.rerun_panel import RerunPanel

#: Statuses of jobs that are over: not counted on the graph, nor as live.
OVER = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})
#: How often the monitor checks whether the engine was started or stopped, in seconds.
WATCH_INTERVAL_S = 1.0


def allowed(job: Job | None) -> dict[str, bool]:
    """Which operator actions the engine accepts for ``job`` (by its status)."""
    status = job.status if job is not None else None
    return {
        "cancel": status is not None and (status not in TERMINAL_STATUSES or status == JobStatus.QUARANTINED),
        "retry": status in RETRYABLE,
        "release": status == JobStatus.QUARANTINED,
    }


class EngineMonitor(PicturedWidget):
    """Live counts per state, recent jobs and operator actions for ``engine``.

    Args:
        engine: A started engine (it may also be started after the monitor is shown).
        blueprint: The blueprint drawn first; the first registered one by default.
        recent: How many recent jobs to list.
        refresh_s: Shortest time between two re-drawings.
        host: The host in the studio's address (the engine listens on it).
    """

    studio_url = Unicode("", help="Where the studio is served, when the engine serves HTTP.").tag(sync=True)
    blueprint_name = Unicode("", help="The blueprint whose graph is shown.").tag(sync=True)
    jobs_shown = Int(0, help="Jobs in the recent jobs table.").tag(sync=True)
    live_jobs = Int(0, help="Jobs not yet finished, failed or cancelled (quarantined ones included).").tag(sync=True)
    engine_running = Bool(False, help="Whether the engine runs (its jobs move).").tag(sync=True)

    def __init__(
        self,
        engine: OrchestratorEngine,
        *,
        blueprint: str | None = None,
        recent: int = 10,
        refresh_s: float = 0.5,
        host: str = "127.0.0.1",
        **kwargs: Any,
    ) -> None:
        self.engine = engine
        self.recent = recent
        self.refresh_s = refresh_s
        self.host = host
        self.recent_jobs: list[Job] = []
        self.by_status: dict[str, int] = {}
        self._background = Background("engine-monitor", self._show_error)
        self._watcher = Background("engine-monitor-watch", self._show_error)
        self._pending = False
        names = sorted(engine.blueprints)
        self._build(names, blueprint or (names[0] if names else None))
        super().__init__("Engine monitor", "avtomatika-engine-monitor", self._layout(), **kwargs)
        self._unsubscribe = engine.events.subscribe(self._on_event)
        self._background.spawn(self.refresh(), "refresh")
        self._watcher.spawn(self._watch(), "watch")

    def __repr__(self) -> str:
        return f"EngineMonitor({self.engine!r}, studio={self.studio_url or None!r})"

    # -- building -------------------------------------------------------------------------------
    def _build(self, names: list[str], chosen: str | None) -> None:
        self.header = widgets.HTML()
        self.blueprint_choice = widgets.Dropdown(options=names, value=chosen, description="blueprint")
        self.graph = widgets.HTML()
        self.jobs = widgets.HTML()
        self.start_data = widgets.Textarea(value="{}", description="initial_data", layout={"width": "30em"})
        self.start_button = widgets.Button(description="Start job", icon="play", tooltip="Create a job")
        self.job_choice = widgets.Dropdown(options=[], description="job", layout={"width": "30em"})
        self.retry_from = widgets.Dropdown(options=[""], description="retry from", tooltip="state; empty: where it is")
        self.retry_button = widgets.Button(description="Retry", icon="redo")
        self.release_button = widgets.Button(description="Release", icon="unlock")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning")
        self.message = widgets.HTML()
        self.breakpoints = BreakpointsPanel(self.engine, self._background.spawn, self.refresh)
        self.bulk = BulkPanel(self.engine, self._background.spawn, self.refresh)
        self.reruns = RerunPanel(self.engine, self._background.spawn, self.refresh)
        self.blueprint_choice.observe(lambda _: self._background.spawn(self.refresh(), "refresh"), names="value")
        self.job_choice.observe(lambda _: self._render_actions(), names="value")
        self.start_button.on_click(lambda _: self._background.spawn(self._start_from_form(), "start"))
        self.retry_button.on_click(lambda _: self._on_job(self.retry, self.retry_from.value or None))
        self.release_button.on_click(lambda _: self._on_job(self.release))
        self.cancel_button.on_click(lambda _: self._on_job(self.cancel))

    def _layout(self) -> list[widgets.Widget]:
        start = widgets.HBox([self.start_data, self.start_button])
        actions = widgets.HBox([self.job_choice, self.retry_from, self.retry_button, self.release_button])
        return [
            self.header,
            self.blueprint_choice,
            self.graph,
            self.jobs,
            start,
            widgets.HBox([actions, self.cancel_button]),
            self.message,
            self.breakpoints,
            self.bulk,
            self.reruns,
        ]

    # -- actions --------------------------------------------------------------------------------
    async def start_job(self, initial_data: dict[str, Any] | None = None, blueprint: str | None = None) -> Job:
        """Create a job of ``blueprint`` (the one shown by default), as the studio's start form does.

        Raises:
            DebuggerError: The engine is not running (the job would never move).
        """
        name = blueprint or self.blueprint_choice.value
        if not name:
            raise ValueError("the engine has no blueprint")
        if not self.engine.running:
            raise DebuggerError("the engine is stopped: start it (await engine.start()) before starting jobs")
        job = await self.engine.create_job(name, initial_data or {})
        self._say(f"started job {job.id}")
        await self.refresh()
        return job

    async def retry(self, job_id: str, from_state: str | None = None) -> Job:
        """Run a failed, cancelled or quarantined job again (from ``from_state`` if given)."""
        return await self._done(await self.engine.retry_job(job_id, ACTOR, from_state), "retried")

    async def release(self, job_id: str, params: dict[str, Any] | None = None) -> Job:
        """Release a quarantined job (its held task dispatched again, ``params`` merged into it)."""
        return await self._done(await self.engine.release_job(job_id, ACTOR, params), "released")

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job."""
        return await self._done(await self.engine.cancel_job(job_id, ACTOR), "cancelled")

    async def settled(self) -> None:
        """Wait until the actions and re-drawings under way have finished."""
        await self._background.wait()

    def stop(self) -> None:
        """Stop following the engine (before stopping it); the widget stays as it was last drawn."""
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        for background in (getattr(self, "_watcher", None), getattr(self, "_background", None)):
            if background is not None:
                background.cancel_soon()

    def close(self) -> None:
        """Stop following the engine and close the widget (its views disappear)."""
        self.stop()
        super().close()

    async def _done(self, job: Job, what: str) -> Job:
        self._say(f"job {job.id[:8]} {what}: now {job.status} in {job.state}")
        await self.refresh()
        return job

    def _on_job(self, action: Any, *args: Any) -> None:
        job_id = self.job_choice.value
        if not job_id:
            self._show_error(ValueError("choose a job first"))
            return
        self._background.spawn(action(job_id, *args), "action")

    async def _start_from_form(self) -> None:
        try:
            data = json.loads(self.start_data.value or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"initial_data is not valid JSON: {exc}") from None
        await self.start_job(data)

    def _say(self, text: str) -> None:
        self.message.value = _render.page(f"<p class='muted'>{_render.esc(text)}</p>")

    def _show_error(self, error: BaseException) -> None:
        self.message.value = _render.page(f"<p class='error'>{_render.esc(error)}</p>")

    # -- following the engine -------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if self._pending or event.job_id is None:
            return
        self._pending = True
        self._background.spawn(self._refresh_later(), "refresh")

    async def _refresh_later(self) -> None:
        await asyncio.sleep(self.refresh_s)
        self._pending = False
        await self.refresh()

    async def _watch(self) -> None:
        """Re-draw when the engine is started or stopped (no event says so)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if self.engine.running != self.engine_running or self._url() != self.studio_url:
                self._background.spawn(self.refresh(), "refresh")

    def _url(self) -> str:
        engine = self.engine
        serving = engine.running and engine.app is not None and engine.port and engine.config.STUDIO_ENABLED
        return f"http://{self.host}:{engine.port}{STUDIO_PREFIX}" if serving else ""

    async def refresh(self) -> None:
        """Re-read counts and recent jobs from the engine and re-draw."""
        engine, name = self.engine, self.blueprint_choice.value
        blueprint = engine.blueprints.get(name) if name else None
        counts = await engine.reads.counts()
        self.recent_jobs = await engine.list_jobs(blueprint=name, limit=self.recent)
        self.engine_running, self.studio_url = engine.running, self._url()
        self.by_status = {}
        for by_state in counts.values():
            for statuses in by_state.values():
                for status, n in statuses.items():
                    self.by_status[status] = self.by_status.get(status, 0) + n
        self.live_jobs = sum(n for status, n in self.by_status.items() if status not in OVER)
        self._render_header()
        if blueprint is not None:
            await self.breakpoints.refresh(blueprint.name, list(blueprint.states))
            await self.bulk.refresh(blueprint.name, list(blueprint.states))
            await self.reruns.refresh(blueprint.name, list(blueprint.states))
            with contextlib.suppress(GraphvizNotFound):  # graph_html shows the reason
                await asyncio.to_thread(blueprint_svg, blueprint)  # graphviz runs once per version
            in_flight = await engine.reads.counts(in_flight=True)
            live = await LiveCounts.read(engine.reads, blueprint.name, None, in_flight)
            self.graph.value = _render.page(
                _render.graph_html(blueprint, live.marks(extract(blueprint)), self.breakpoints.states_marked()),
                "<p class='muted'>Badges: jobs still in each state; under a state, the jobs that ended there "
                "(history) or its fan-out's branches; a red dot: a breakpoint.</p>",
                css_class="monitor-graph",
            )
            self.retry_from.options = ["", *blueprint.states]
        self.blueprint_name = name or ""
        self.jobs.value = _render.page("<h4>Recent jobs</h4>", _render.jobs_table(self.recent_jobs, self.studio_url))
        self.jobs_shown = len(self.recent_jobs)
        options = [(f"{j.id[:8]} · {j.state} · {j.status.replace('_', ' ')}", j.id) for j in self.recent_jobs]
        current = self.job_choice.value
        self.job_choice.options = options
        values = [value for _, value in options]
        self.job_choice.value = current if current in values else (values[0] if values else None)
        self._render_actions()
        self._redraw_picture()

    def _render_header(self) -> None:
        esc = _render.esc
        if not self.engine_running:
            where = "<span class='badge tone-cancelled'>engine stopped</span> <span class='muted'>jobs do not move; "
            where += "await engine.start() to run it</span>"
        elif self.studio_url:
            where = f"studio: <a href='{esc(self.studio_url)}/' target='_blank'>{esc(self.studio_url)}</a>"
        elif self.engine.app is None:
            where = "<span class='muted'>not serving HTTP (start it with await engine.start())</span>"
        else:
            where = "<span class='muted'>studio disabled (STUDIO_ENABLED=false)</span>"
        statuses = " ".join(_render.count_badge(status, n) for status, n in sorted(self.by_status.items()) if n)
        live = f"{self.live_jobs} live job{'s' if self.live_jobs != 1 else ''}"
        self.header.value = _render.page(
            f"<b>Avtomatika engine</b> · {live} · {where}<div>{statuses or '<span class=muted>no jobs</span>'}</div>"
        )

    def _render_actions(self) -> None:
        job = next((j for j in self.recent_jobs if j.id == self.job_choice.value), None)
        can = allowed(job)
        self.cancel_button.disabled = not can["cancel"]
        self.retry_button.disabled = self.retry_from.disabled = not can["retry"]
        self.release_button.disabled = not can["release"]
        self.start_button.disabled = not self.engine.running

    def _picture_parts(self) -> list[str]:
        return [self.header.value, self.graph.value, self.jobs.value]
