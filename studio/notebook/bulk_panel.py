"""``EngineMonitor``'s bulk actions: release, retry or fail the quarantined jobs selected, at a capped
rate, with the action's progress followed until it ends (and a button to cancel it).

The engine's bulk actions (``engine.bulk``), as the HTTP API's ``POST /api/v1/bulk`` starts them:
each job's operation is the single-job one, recorded with the bulk action's id and the actor
``notebook``. Every button is also a coroutine method.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ipywidgets as widgets
from traitlets import Int, Unicode

from avtomatika.engine import OrchestratorEngine
from avtomatika.models import BulkAction, BulkKind, BulkStatus, Job, JobStatus
from avtomatika.studio.notebook import _render
from avtomatika.studio.notebook._panel import ACTOR, MonitorPanel, Redraw, Spawn

#: What the panel does to quarantined jobs.
KINDS = (BulkKind.RELEASE, BulkKind.RETRY, BulkKind.FAIL)
#: Quarantined jobs listed at most (the newest first).
LISTED = 500
#: The rate offered first, in jobs per second.
DEFAULT_RATE = 10.0


class BulkPanel(MonitorPanel):
    """Quarantined jobs of one blueprint (the monitor's), selected and acted on in bulk.

    Args:
        engine: The engine, started.
        spawn: Runs a button's coroutine in the kernel's loop (the monitor's, which reports errors).
        on_change: Called (a coroutine) when a bulk action ends, to re-draw the monitor.
        poll_s: How often a running bulk action's progress is read.
    """

    bulk_id = Unicode("", help="The bulk action shown (the last one started).").tag(sync=True)
    bulk_status = Unicode("", help="Its status: running, finished or cancelled.").tag(sync=True)
    handled = Int(0, help="Jobs it has dealt with so far.").tag(sync=True)
    total = Int(0, help="Jobs it names.").tag(sync=True)

    def __init__(
        self, engine: OrchestratorEngine, spawn: Spawn, on_change: Redraw, *, poll_s: float = 0.2, **kwargs: Any
    ) -> None:
        super().__init__(engine, spawn, on_change, **kwargs)
        self.poll_s = poll_s
        self.quarantined: list[Job] = []
        self.action: BulkAction | None = None
        self._lay_out("avtomatika-bulk")

    def __repr__(self) -> str:
        return f"BulkPanel(quarantined={len(self.quarantined)}, bulk={self.bulk_id or None!r})"

    def _build(self) -> None:
        self.jobs = widgets.SelectMultiple(options=[], description="quarantined", layout={"width": "40em"}, rows=6)
        self.select_all = widgets.Button(description="Select all", icon="check-square")
        self.kind = widgets.Dropdown(options=[str(k) for k in KINDS], value="release", description="action")
        self.rate = widgets.BoundedFloatText(value=DEFAULT_RATE, min=0.1, max=1000, description="jobs/s")
        self.params = widgets.Textarea(description="params", placeholder='release: merged in, e.g. {"x": 1}')
        self.from_state = widgets.Dropdown(options=[""], description="from state", tooltip="retry; empty: where it is")
        self.reason = widgets.Text(description="reason", placeholder="fail: why")
        self.start_button = widgets.Button(description="Apply to selected", icon="forward", button_style="warning")
        self.cancel_button = widgets.Button(description="Cancel bulk", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress")
        self.select_all.on_click(lambda _: setattr(self.jobs, "value", tuple(j.id for j in self.quarantined)))
        self.start_button.on_click(lambda _: self._spawn(self.start_from_form(), "bulk"))
        self.cancel_button.on_click(lambda _: self._spawn(self.cancel(), "bulk-cancel"))
        self.jobs.observe(lambda _: self._label_start(), names="value")
        self.kind.observe(lambda _: self._label_start(), names="value")

    def _layout(self) -> list[widgets.Widget]:
        return [
            widgets.HTML(_render.page("<h4>Quarantined jobs, in bulk</h4>")),
            widgets.HBox([self.jobs, self.select_all]),
            widgets.HBox([self.kind, self.rate]),
            widgets.HBox([self.params, widgets.VBox([self.from_state, self.reason])]),
            widgets.HBox([self.start_button, self.cancel_button]),
            self.progress,
            self.message,
        ]

    # -- actions --------------------------------------------------------------------------------
    async def start(self, kind: str, job_ids: list[str], rate_per_s: float, **options: Any) -> BulkAction:
        """Start ``kind`` (release, retry, fail) on ``job_ids`` at ``rate_per_s`` jobs a second; its
        progress is followed in the background (``await monitor.settled()`` waits for its end)."""
        action = await self.engine.bulk.start(kind, job_ids, rate_per_s=rate_per_s, actor=ACTOR, **options)
        self._show(action)
        self.jobs.value = ()
        self._spawn(self._follow(action.id), "bulk-progress")
        return action

    async def start_from_form(self) -> BulkAction | None:
        """Start the action chosen on the jobs selected, with the form's options."""
        job_ids = list(self.jobs.value)
        if not job_ids:
            self._say("select jobs first", error=True)
            return None
        kind = BulkKind(self.kind.value)
        options: dict[str, Any] = {}
        if kind == BulkKind.RELEASE and self.params.value.strip():
            try:
                options["params"] = json.loads(self.params.value)
            except json.JSONDecodeError as exc:
                self._say(f"params: not valid JSON: {exc}", error=True)
                return None
            if not isinstance(options["params"], dict):
                self._say("params must be a JSON object ({...})", error=True)
                return None
        elif kind == BulkKind.RETRY:
            options["from_state"] = self.from_state.value or None
        elif kind == BulkKind.FAIL:
            options["reason"] = self.reason.value.strip() or None
        return await self.start(kind, job_ids, float(self.rate.value), **options)

    async def cancel(self) -> BulkAction | None:
        """Cancel the bulk action shown before its next job (the jobs done so far stay done)."""
        if not self.bulk_id:
            return None
        action = await self.engine.bulk.cancel(self.bulk_id, ACTOR)
        self._show(action)
        return action

    async def refresh(self, blueprint: str, states: list[str]) -> None:
        """Re-read the quarantined jobs of ``blueprint``; the jobs still quarantined stay selected."""
        jobs = await self.engine.list_jobs(status=JobStatus.QUARANTINED, blueprint=blueprint, limit=LISTED)
        self.quarantined = jobs
        selected = set(self.jobs.value)
        self.jobs.options = [(_job_label(j), j.id) for j in jobs]
        self.jobs.value = tuple(j.id for j in jobs if j.id in selected)
        if list(self.from_state.options) != ["", *states]:
            self.from_state.options = ["", *states]
        self._label_start()

    # -- helpers --------------------------------------------------------------------------------
    async def _follow(self, bulk_id: str) -> None:
        while True:
            action = await self.engine.bulk.get(bulk_id)
            if bulk_id == self.bulk_id:
                self._show(action)
            if action.status != BulkStatus.RUNNING:
                break
            await asyncio.sleep(self.poll_s)
        await self._on_change()

    def _show(self, action: BulkAction) -> None:
        self.action = action
        self.bulk_id, self.bulk_status = action.id, str(action.status)
        self.handled, self.total = action.handled, action.total
        self.progress.max = max(action.total, 1)
        self.progress.value = action.handled
        self.progress.bar_style = {"running": "info", "finished": "success"}.get(action.status, "warning")
        self.cancel_button.disabled = action.status != BulkStatus.RUNNING
        skipped = f" · {action.skipped} skipped" if action.skipped else ""
        first = f" (first: {action.problems[0][1]})" if action.problems else ""
        self._say(
            f"{action.kind} of {action.total} job(s) at {action.rate_per_s:g}/s: {action.status} · "
            f"{action.handled} handled · {action.done} done{skipped}{first}"
        )

    def _label_start(self) -> None:
        count = len(self.jobs.value)
        self.start_button.description = f"{str(self.kind.value).capitalize()} {count} selected"
        self.start_button.disabled = count == 0


def _job_label(job: Job) -> str:
    error = (job.error or "").splitlines()[0][:60] if job.error else ""
    return f"{job.id[:8]} · {job.state} · {error}"
