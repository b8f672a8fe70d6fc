"""The read model: one reader of jobs, timelines, counts and workers for the API, the studio and the
notebook (``engine.reads``), deciding between live storage and history.

- :class:`JobQuery`, :class:`JobRow`, :class:`JobPage`: jobs lists (:meth:`Reader.jobs_page`).
- :class:`Timeline`: a job's history lines and what they tell (visits, tasks, fan-out branches, the
  path taken, the job at any line).
- :func:`error_signature`: what quarantined jobs failing the same way share (triage groups).
- :class:`Cursor` (:class:`InvalidCursor`): where a keyset page of jobs goes on.
- :func:`parse_time`: the one reader of times people give (API query strings, studio forms).
"""

from ..history.base import Cursor, InvalidCursor
from .changes import Change, diff
from .lines import Line
from .query import OVER_STATUSES, JobPage, JobQuery, JobRow, parse_time
from .reader import Reader
from .signature import ErrorSignature, error_signature, normalise_message
from .timeline import Timeline
from .views import Counts, JobCounts, JobDetail, NavCounts, QueueDepth, Signed, WorkerView
from .visits import Attempt, Branch, BranchCounts, Moment, TimelineRow, Transition, Visit

__all__ = [
    "OVER_STATUSES",
    "Attempt",
    "Branch",
    "BranchCounts",
    "Change",
    "Counts",
    "Cursor",
    "ErrorSignature",
    "InvalidCursor",
    "JobCounts",
    "JobDetail",
    "JobPage",
    "JobQuery",
    "JobRow",
    "Line",
    "Moment",
    "NavCounts",
    "QueueDepth",
    "Reader",
    "Signed",
    "Timeline",
    "TimelineRow",
    "Transition",
    "Visit",
    "WorkerView",
    "diff",
    "error_signature",
    "normalise_message",
    "parse_time",
]
