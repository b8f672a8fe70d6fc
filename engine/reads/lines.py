"""One line of a job's timeline (:class:`~avtomatika.history.Line`, as history recorded it), and the
kinds of edge a line may say were taken."""

from __future__ import annotations

from ..history.base import Line

#: Kinds of ``via`` that are edges of the graph (the others are operations: retry, release).
EDGE_KINDS = frozenset({"transition", "dispatch", "parallel", "human", "sub_blueprint"})

__all__ = ["EDGE_KINDS", "Line"]
