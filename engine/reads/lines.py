"""One line of a job's timeline, as history recorded it."""

from __future__ import annotations

from ..history.base import TimelineEntry

#: Kinds of ``via`` that are edges of the graph (the others are operations: retry, release).
EDGE_KINDS = frozenset({"transition", "dispatch", "parallel", "human", "sub_blueprint"})

#: One line of a job's timeline, as history recorded it.
Line = TimelineEntry
