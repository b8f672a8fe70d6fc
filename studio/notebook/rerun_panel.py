"""``EngineMonitor``'s rerun: start a new job at a state of an ended one, with the data it had there.

Choose an ended job of the blueprint shown and a state: the editors fill with the job's
``initial_data`` and ``state_history`` as they were when it entered that state (rebuilt from history,
as the studio's rerun form does); edit them, then Rerun. The same engine method as the studio and the
HTTP API (``engine.rerun``), named after the actor ``notebook``; every button is also a coroutine
method, so a cell (or a test) drives the panel without a browser.
"""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as widgets
from pydantic import ValidationError
from traitlets import Unicode

from avtomatika.engine import OrchestratorEngine
from avtomatika.errors import AvtomatikaError, InvalidOperation
from avtomatika.models import Job, JobStatus
from avtomatika.runtime.rerun import RerunOrigin
from avtomatika.studio.notebook import _render
from avtomatika.studio.notebook._panel import ACTOR, MonitorPanel, Redraw, Spawn
from avtomatika.studio.notebook.breakpoints_panel import ContextRefused, parse_context

#: Statuses of the jobs offered for a rerun (a job in flight is not rerun).
RERUNNABLE = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUARANTINED)
#: Ended jobs offered, the newest first.
JOBS_SHOWN = 50


class RerunPanel(MonitorPanel):
    """Rerun ended jobs of one blueprint (the monitor's) from a state, their data edited.

    Args:
        engine: The engine, started.
        spawn: Runs a button's coroutine in the kernel's loop (the monitor's, which reports errors).
        on_change: Called (a coroutine) after a rerun started, to re-draw the monitor.
    """

    last_rerun = Unicode("", help="The id of the job the last rerun started.").tag(sync=True)

    def __init__(self, engine: OrchestratorEngine, spawn: Spawn, on_change: Redraw, **kwargs: Any) -> None:
        super().__init__(engine, spawn, on_change, **kwargs)
        self.blueprint = ""
        self.origin: RerunOrigin | None = None
        self._quiet = False
        self._lay_out("avtomatika-rerun")

    def __repr__(self) -> str:
        return f"RerunPanel({self.blueprint!r}, last_rerun={self.last_rerun or None!r})"

    def _build(self) -> None:
        self.job_choice = widgets.Dropdown(options=[], description="ended job", layout={"width": "30em"})
        self.state_choice = widgets.Dropdown(options=[], description="from state")
        self.source = widgets.HTML()
        self.initial_data = widgets.Textarea(description="initial_data", layout={"width": "40em", "height": "7em"})
        self.state_history = widgets.Textarea(description="state_history", layout={"width": "40em", "height": "7em"})
        self.rerun_button = widgets.Button(description="Rerun", icon="repeat", button_style="primary")
        for choice in (self.job_choice, self.state_choice):
            choice.observe(lambda _: None if self._quiet else self._spawn(self.load(), "load"), names="value")
        self.rerun_button.on_click(lambda _: self._spawn(self.rerun_from_editors(), "rerun"))

    def _layout(self) -> list[widgets.Widget]:
        return [
            widgets.HTML(_render.page("<h4>Rerun</h4>")),
            widgets.HBox([self.job_choice, self.state_choice]),
            self.source,
            self.initial_data,
            self.state_history,
            self.rerun_button,
            self.message,
        ]

    # -- actions --------------------------------------------------------------------------------
    async def load(self, job_id: str | None = None, state: str | None = None, visit: int | None = None) -> None:
        """Fill the editors with job ``job_id``'s data at ``state`` (the chosen ones by default)."""
        job_id = job_id or self.job_choice.value
        state = state or self.state_choice.value or None
        self.origin = None
        if not job_id:
            self._show("", "", "<p class='muted'>No ended job of this blueprint to rerun yet.</p>")
            return
        try:
            self.origin = await self.engine.reads.rerun_origin(job_id, state, visit)
        except AvtomatikaError as exc:
            self._show("", "", f"<p class='error'>{_render.esc(_reason(exc))}</p>")
            return
        origin = self.origin
        where = (
            f"as the job entered {origin.state} (visit {origin.visit})"
            if origin.visit
            else f"as the job ended (it never entered {origin.state})"
        )
        self._show(
            json.dumps(origin.initial_data, indent=2),
            json.dumps(origin.state_history, indent=2),
            f"<p class='muted'>The data {_render.esc(where)}.</p>",
        )

    async def rerun(
        self,
        job_id: str,
        state: str | None = None,
        *,
        initial_data: dict[str, Any] | None = None,
        state_history: dict[str, Any] | None = None,
    ) -> Job:
        """Start a new job at ``state`` of ``job_id``, with its data there replaced by what is given."""
        job = await self.engine.rerun(
            job_id, state, initial_data=initial_data, state_history=state_history, actor=ACTOR
        )
        self.last_rerun = job.id
        self._say(f"Started job {job.id[:8]} at {job.state}, a rerun of {job_id[:8]}.")
        await self._on_change()
        return job

    async def rerun_from_editors(self) -> Job | None:
        """Rerun the chosen job from the chosen state with the editors' data; a refusal is shown, not raised."""
        origin = self.origin
        if origin is None:
            self._say("choose an ended job and a state first", error=True)
            return None
        try:
            initial_data = parse_context("initial_data", self.initial_data.value)
            state_history = parse_context("state_history", self.state_history.value)
            return await self.rerun(origin.job_id, origin.state, initial_data=initial_data, state_history=state_history)
        except ContextRefused as exc:
            self._say(str(exc), error=True)
        except ValidationError as exc:  # the blueprint's input_model refused the edited initial_data
            self._say(f"initial_data: {exc.errors(include_url=False)[0]['msg']}", error=True)
        except InvalidOperation as exc:
            self._say(exc.reason, error=True)
        return None

    async def refresh(self, blueprint: str, states: list[str]) -> None:
        """Offer the blueprint's ended jobs (newest first) and its states; keep what is chosen if it still is."""
        changed = blueprint != self.blueprint
        self.blueprint = blueprint
        jobs: list[Job] = []
        for status in RERUNNABLE:
            jobs += await self.engine.list_jobs(status=status, blueprint=blueprint, limit=JOBS_SHOWN)
        jobs.sort(key=lambda j: j.updated_at, reverse=True)
        options = [(f"{j.id[:8]} · {j.status} in {j.state}", j.id) for j in jobs[:JOBS_SHOWN]]
        chosen_job, chosen_state = self.job_choice.value, self.state_choice.value
        self._quiet = True  # new options reset the values: the editors follow only a new choice
        try:
            if list(self.job_choice.options) != options:
                self.job_choice.options = options
                ids = [job_id for _, job_id in options]
                self.job_choice.value = chosen_job if chosen_job in ids else (ids[0] if ids else None)
            if list(self.state_choice.options) != states:
                self.state_choice.options = states
                self.state_choice.value = chosen_state if chosen_state in states else (states[0] if states else None)
        finally:
            self._quiet = False
        if changed or self.job_choice.value != chosen_job or self.state_choice.value != chosen_state:
            await self.load()
        self.rerun_button.disabled = self.origin is None

    # -- helpers --------------------------------------------------------------------------------
    def _show(self, initial_data: str, state_history: str, source: str) -> None:
        self.initial_data.value, self.state_history.value = initial_data, state_history
        self.source.value = _render.page(source)
        self.rerun_button.disabled = self.origin is None


def _reason(exc: AvtomatikaError) -> str:
    return exc.reason if isinstance(exc, InvalidOperation) else str(exc)
