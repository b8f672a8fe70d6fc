"""The bulk form: an action on many jobs as an operator asks for it, read and checked before anything
starts, and the review shown before confirming ("Release 12 jobs with edited params?").

The jobs are named one by one (``job_id``, repeated, or ``job_ids`` separated by spaces, as a review
carries them), by quarantine group (``signature``: every job quarantined with it) or by the jobs
list's filter (``select=filter`` with the filter's fields), resolved to ids here, at most
:data:`~avtomatika.runtime.bulk.MAX_JOBS`. Every problem is kept by the name of the field it
is about, so the page shows it next to that field; nothing here answers 5xx on any input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from avtomatika.models import BulkKind
from avtomatika.reads import Change, diff
from avtomatika.runtime.bulk import MAX_JOBS, MAX_RATE

from .actions import parse_params
from .filters import query_of
from .keys import data_key, engine_key
from .middleware import StudioError
from .render import user_of

#: The rate a bulk action runs at unless the operator says otherwise (jobs per second).
DEFAULT_RATE_PER_S = 10.0
#: What the form's ``action`` may be, and the engine's kind for each: a release with edited params is
#: the engine's release with ``params``.
ACTIONS: dict[str, BulkKind] = {
    "release": BulkKind.RELEASE,
    "release-edited": BulkKind.RELEASE,
    "retry": BulkKind.RETRY,
    "fail": BulkKind.FAIL,
    "cancel": BulkKind.CANCEL,
    "rerun": BulkKind.RERUN,
}
#: The actions the jobs list offers (the quarantine's form has its own buttons).
JOBS_LIST_ACTIONS = ("retry", "rerun", "cancel")


@dataclass(slots=True)
class BulkForm:
    """A posted bulk form: the action, its jobs, its rate and options, and what is wrong with it."""

    action: str
    job_ids: list[str] = field(default_factory=list)
    rate_per_s: float = DEFAULT_RATE_PER_S
    rate_text: str = ""
    params_text: str = ""
    params: dict[str, Any] | None = None
    from_state: str | None = None
    reason: str | None = None
    #: Problems by the field they are about (``params``, ``rate_per_s``, ``job_id``...).
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> BulkKind:
        return ACTIONS[self.action]

    @property
    def options(self) -> dict[str, Any]:
        """The engine's options for this action."""
        found = {"params": self.params, "from_state": self.from_state, "reason": self.reason}
        found["state"] = self.from_state  # a rerun's: the state its new jobs start at
        names = {
            BulkKind.RELEASE: "params",
            BulkKind.RETRY: "from_state",
            BulkKind.RERUN: "state",
            BulkKind.FAIL: "reason",
        }
        name = names.get(self.kind)
        return {name: found[name]} if name else {}

    @property
    def question(self) -> str:
        """What the confirm asks: the action, the count, and how."""
        n = len(self.job_ids)
        jobs = f"{n:,} job{'s' if n != 1 else ''}"
        how = {
            "release": " as they are",
            "release-edited": " with edited params",
            "retry": f" from {self.from_state}" if self.from_state else " where they stopped",
            "fail": f" with the reason “{self.reason}”" if self.reason else " (no reason given)",
            "cancel": "",
            "rerun": f" as new jobs from {self.from_state}" if self.from_state else " as new jobs from the start",
        }[self.action]
        return f"{self.kind.capitalize()} {jobs}{how}?"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.kind.value,
            "count": len(self.job_ids),
            "rate_per_s": self.rate_per_s,
            "options": self.options,
            "question": self.question if self.action in ACTIONS else None,
            "errors": self.errors,
        }


@dataclass(slots=True)
class Sample:
    """A release's edit shown on one selected job: its held task's params before and after."""

    job_id: str
    task_type: str | None
    changes: list[Change]


def _rate(form: BulkForm, text: str) -> None:
    form.rate_text = text
    if not text:
        return
    try:
        rate = float(text)
    except ValueError:
        form.errors["rate_per_s"] = "Rate: a number of jobs per second, such as 10."
        return
    if not (0 < rate <= MAX_RATE) or math.isnan(rate):
        form.errors["rate_per_s"] = f"Rate: above 0 and at most {MAX_RATE:g} jobs per second."
        return
    form.rate_per_s = rate


def _options(request: web.Request, form: BulkForm, posted: MultiMapping[Any]) -> None:
    if form.action == "release-edited":
        form.params_text = str(posted.get("params") or "")
        try:
            form.params = parse_params(request, form.params_text)
        except StudioError as exc:
            form.errors["params"] = f"Params: {exc.message}"
        else:
            if form.params is None:
                form.errors["params"] = 'Params: write the fields to change as a JSON object: {"codec": "h264"}.'
    if form.action in ("retry", "rerun"):
        form.from_state = str(posted.get("from_state") or "").strip() or None
    if form.action == "rerun" and user_of(request).scope is not None:  # each rerun is a monthly attempt
        form.errors["action"] = "A rerun in bulk is for operators; rerun your jobs one by one from their pages."
    if form.action == "fail":
        form.reason = str(posted.get("reason") or "").strip() or None


async def _selected(request: web.Request, form: BulkForm, posted: MultiMapping[Any]) -> None:
    """The jobs named, or those matching the posted filter (at most MAX_JOBS, else an error)."""
    if posted.get("select") == "filter":
        try:
            query, _ = query_of(request, time.time(), posted)
        except StudioError as exc:
            form.errors["select"] = exc.message
            return
        form.job_ids = await request.app[data_key].job_ids(query, MAX_JOBS)
        if len(form.job_ids) > MAX_JOBS:
            form.errors["select"] = (
                f"More than {MAX_JOBS:,} jobs match this filter, the most one bulk action takes: narrow the filter."
            )
    else:
        named = [str(j) for j in posted.getall("job_id", [])] + str(posted.get("job_ids") or "").split()
        if groups := {str(key) for key in posted.getall("signature", [])}:  # quarantine groups taken whole
            index = await request.app[data_key].quarantine_index(client=user_of(request).scope)
            named += [entry.job.id for entry in index if entry.signature.key in groups]
        form.job_ids = list(dict.fromkeys(j for j in named if j))
        if len(form.job_ids) > MAX_JOBS:
            form.errors["job_id"] = f"{len(form.job_ids):,} jobs selected; at most {MAX_JOBS:,} per bulk action."
        session = user_of(request)
        if session.scope is not None:  # a client's session acts on its own jobs only
            reads = request.app[data_key]
            form.job_ids = [j for j in form.job_ids if (job := await reads.job(j)) and session.sees(job.client)]
    if not form.job_ids and not form.errors.get("select"):
        form.errors["job_id"] = "Nothing selected: select jobs first."


async def read_form(request: web.Request, posted: MultiMapping[Any]) -> BulkForm:
    """The posted bulk form, read and checked; its ``errors`` say what is wrong."""
    action = str(posted.get("action") or "")
    form = BulkForm(action if action in ACTIONS else "release")
    if action not in ACTIONS:
        form.errors["action"] = f"Unknown action {action!r}; one of: {', '.join(ACTIONS)}."
        return form
    _rate(form, str(posted.get("rate_per_s") or "").strip())
    _options(request, form, posted)
    await _selected(request, form, posted)
    return form


async def sample_of(request: web.Request, form: BulkForm) -> Sample | None:
    """For a release with edited params: the edit on the first selected job's held task, as a diff."""
    if form.action != "release-edited" or form.params is None or not form.job_ids:
        return None
    job = await request.app[data_key].job(form.job_ids[0])
    if job is None:
        return None
    held = await request.app[engine_key].current_tasks(job, limit=1)
    if not held:
        return Sample(job.id, None, [])
    before = held[0].params
    return Sample(job.id, held[0].type, diff(before, {**before, **form.params}))
