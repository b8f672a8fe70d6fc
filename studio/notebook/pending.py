"""What a debugged job waits for, as forms: its open tasks (each with its own answer) and an approval.

:class:`TaskForm` lists every open task (a fan-out's branches too) with a picker, and keeps one draft
answer per task, so answering branch 2 never starts from branch 1's data. :class:`ApprovalBox` shows
the approval's message and one button per decision. Both only collect input: the debugger runs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from avtomatika.debugger.narrate import short
from avtomatika.models import Job, Task

from . import _render

ERROR_CODES = ("", "TRANSIENT_ERROR", "PERMANENT_ERROR", "INVALID_INPUT_ERROR")
_BOX = {"border": "1px solid rgba(127,127,127,.35)", "padding": "4px", "margin": "4px 0"}


@dataclass(slots=True)
class Draft:
    """One task's answer being written."""

    status: str = "success"
    data: str = "{}"
    code: str = ""
    message: str = ""


def parse_object(text: str, what: str) -> dict[str, Any]:
    """``text`` as a JSON object; ValueError saying what is wrong otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


class TaskForm(widgets.VBox):
    """Every open task of the job, a picker, and the chosen task's own answer."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.drafts: dict[str, Draft] = {}
        self._shown: str | None = None
        self.heading = widgets.HTML()
        self.picker = widgets.Dropdown(options=[], description="task", layout={"width": "40em"})
        self.info = widgets.HTML()
        self.status = widgets.Dropdown(options=["success", "failure"], description="status")
        self.code = widgets.Dropdown(options=ERROR_CODES, description="error code")
        self.message = widgets.Text(description="message", placeholder="error message")
        self.data = widgets.Textarea(value="{}", description="data", layout={"width": "100%", "height": "6em"})
        self.answer_button = widgets.Button(description="Answer", icon="reply", tooltip="Submit this task's result")
        self.exhaust_button = widgets.Button(
            description="Exhaust retries",
            icon="times",
            tooltip="Fail it with TRANSIENT_ERROR until JOB_MAX_RETRIES is spent: then its failure transition",
            layout={"width": "auto"},
        )
        self.picker.observe(self._picked, names="value")
        super().__init__(
            [
                self.heading,
                self.picker,
                self.info,
                widgets.HBox([self.status, self.code, self.message]),
                self.data,
                widgets.HBox([self.answer_button, self.exhaust_button]),
            ],
            layout={**_BOX, "display": "none"},
        )
        self.add_class("avtomatika-task-form")

    @property
    def chosen(self) -> Task | None:
        """The task the form answers now."""
        return next((t for t in self.tasks if t.id == self.picker.value), None)

    def show(self, tasks: list[Task], url: str | None) -> None:
        """List ``tasks`` (hidden when there are none); the chosen one stays chosen while it is open."""
        self.tasks = tasks
        self.drafts = {k: v for k, v in self.drafts.items() if any(t.id == k for t in tasks)}
        self.layout.display = "" if tasks else "none"
        if not tasks:
            self._shown = None
            return
        count = len(tasks)
        options = [(_task_label(i, count, t), t.id) for i, t in enumerate(tasks, 1)]
        if list(self.picker.options) != options:
            keep = self.picker.value if any(t.id == self.picker.value for t in tasks) else tasks[0].id
            self._save()
            self._shown = None
            self.picker.options = options
            self.picker.value = keep
        self._load(self.picker.value)
        fan_out = f" (a fan-out into <b>{_render.esc(tasks[0].aggregate_into)}</b>)" if tasks[0].aggregate_into else ""
        self.heading.value = _render.page(f"<h4>{count} open task{'s' if count != 1 else ''}{fan_out}</h4>")
        self.picker.layout.display = "" if count > 1 else "none"
        self._describe(url)

    def read(self) -> tuple[str, dict[str, Any], str | None, str | None]:
        """The chosen task's answer: status, data, error code, message."""
        data = parse_object(self.data.value.strip() or "{}", "data")
        return self.status.value, data, self.code.value or None, self.message.value or None

    def answered(self, task_id: str) -> None:
        """Forget the draft of a task that was answered."""
        self.drafts.pop(task_id, None)
        if self._shown == task_id:
            self._shown = None

    # -- drafts ---------------------------------------------------------------------------------
    def _picked(self, change: dict[str, Any]) -> None:
        self._save(change["old"])
        self._load(change["new"])
        chosen = self.chosen
        if chosen is not None:
            self._describe(None)

    def _save(self, task_id: str | None = None) -> None:
        task_id = task_id or self._shown
        if task_id:
            self.drafts[task_id] = Draft(self.status.value, self.data.value, self.code.value, self.message.value)

    def _load(self, task_id: str | None) -> None:
        if task_id is None or task_id == self._shown:
            return
        task = next((t for t in self.tasks if t.id == task_id), None)
        draft = self.drafts.get(task_id) or Draft()
        statuses = list(dict.fromkeys([*(task.transitions if task else {}), "success", "failure", "cancelled"]))
        if list(self.status.options) != statuses:
            self.status.options = statuses
        self.status.value = draft.status if draft.status in statuses else statuses[0]
        self.data.value, self.code.value, self.message.value = draft.data, draft.code, draft.message
        self._shown = task_id

    def _describe(self, url: str | None) -> None:
        task = self.chosen
        if task is None:
            return
        esc = _render.esc
        held = f" · held by worker <code>{esc(task.worker_id)}</code>" if task.worker_id else ""
        where = f" or let a worker connected to {esc(url)} answer it" if url else ""
        retry = f" · attempt {task.attempt}" if task.attempt > 1 else ""
        self.info.value = _render.page(
            f"<div>Task <code>{esc(task.type)}</code> <code class='muted'>{esc(task.id[:8])}</code>"
            f" ({esc(task.status)}{held}{retry})</div>"
            f"<div>params {_render.json_block(task.params)}</div>"
            f"<div>transitions: <code>{esc(short(task.transitions, 120))}</code></div>"
            f"<div class='muted'>Answer it by hand{where}. Its <code>data</code> is merged into state_history"
            + (
                ", and reaches the aggregator under <code>aggregation_results[task_id]['data']</code>"
                if task.aggregate_into
                else ""
            )
            + ".</div>"
        )


def _task_label(index: int, count: int, task: Task) -> str:
    return f"{index} of {count} · {task.type} · {short(task.params, 48)}"


class ApprovalBox(widgets.VBox):
    """The approval a job waits for: its message, where it came from, and a button per decision.

    Args:
        on_decide: Called with the decision whose button was pressed.
    """

    def __init__(self, on_decide: Callable[[str], None]) -> None:
        self.on_decide = on_decide
        self.info = widgets.HTML()
        self.buttons = widgets.HBox()
        self.decisions: list[str] = []
        super().__init__([self.info, self.buttons], layout={**_BOX, "display": "none"})
        self.add_class("avtomatika-approval")

    def show(self, job: Job | None) -> None:
        """Show the approval ``job`` waits for, or hide (it waits for none)."""
        wait = (job.wait or {}) if job is not None else {}
        decisions = sorted(wait.get("transitions") or {}) if wait.get("kind") == "human" else []
        self.layout.display = "" if decisions else "none"
        if not decisions or job is None:
            self.decisions = []
            return
        esc = _render.esc
        where = ", ".join(f"{esc(d)} \N{RIGHTWARDS ARROW} {esc(s)}" for d, s in sorted(wait["transitions"].items()))
        self.info.value = _render.page(
            f"<h4>Waiting for an approval</h4><blockquote class='approval-message'>{esc(wait.get('message') or '')}"
            f"</blockquote><div class='muted'>integration <code>{esc(wait.get('integration') or '')}</code>: a label "
            "the engine stores and shows; it sends nothing. The decision comes from this box, or from "
            f"<code>POST /_public/webhooks/approval/{esc(job.id)}</code> (with the job owner's client token). "
            f"Decisions: {where}.</div>"
        )
        if decisions != self.decisions:
            self.decisions = decisions
            self.buttons.children = [self._button(d) for d in decisions]

    def _button(self, decision: str) -> widgets.Button:
        button = widgets.Button(description=decision, tooltip=f"Decide {decision!r}", layout={"width": "auto"})
        button.on_click(lambda _: self.on_decide(decision))
        return button
