"""Graphs on pages: the cached SVG of a blueprint version, and the live "marks" laid over it.

The SVG is rendered once per blueprint version (:func:`avtomatika.graph.model_svg`, off the loop),
today's or one history kept, and anchored for marks (:func:`avtomatika.studio.marks.anchored`). Live
data never re-renders it: a :class:`GraphMarks` lists, per node and edge id, the CSS classes, count
badge, note (a fan-out's branches, the jobs that ended there) and tooltip to show. How they look is
:mod:`avtomatika.studio.marks`' alone: ``_graph_marks.html`` carries them drawn (in the page and in
SSE events) for ``static/studio.js`` to put in place, and the notebook lays them over the SVG itself.

On a job's page the edges marked ``taken`` are exactly those its timeline recorded: the handler
that ran (default or which ``.when()``) and the answer (a result's status, a decision) name the
edge, so two edges between the same states are told apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

from avtomatika.graph import EdgeModel, GraphModel, GraphvizNotFound, extract, model_svg, slug
from avtomatika.models import Job
from avtomatika.reads import BranchCounts, JobDetail, Moment, Timeline, Transition, Visit
from avtomatika.studio.marks import EdgeMark, GraphMarks, NodeMark, anchored
from avtomatika.studio.ui import TONE_URGENCY, compact_number, human, tone

if TYPE_CHECKING:
    from avtomatika.engine import OrchestratorEngine

logger = logging.getLogger(__name__)

#: Statuses of jobs that ended, in the order a state's note lists them.
ENDED_ORDER = ("finished", "failed", "cancelled", "lost")


def graph_id(model: GraphModel) -> str:
    """The id graphviz gives the SVG's top group (``graph-<slug>``), as :func:`to_dot` sets it."""
    return f"graph-{slug(model.blueprint)}"


async def svg_markup(model: GraphModel) -> Markup:
    """The model's inline SVG (rendered in a thread on first use), or a note saying why not."""
    loop = asyncio.get_running_loop()
    try:
        svg = await loop.run_in_executor(None, lambda: anchored(model_svg(model)))
    except GraphvizNotFound as exc:
        logger.warning("studio: %s", exc)
        return Markup('<p class="note warn">{}</p>').format(str(exc))
    return Markup(svg)  # graphviz's output, from names escaped by to_dot


# -- a blueprint's jobs -------------------------------------------------------------------------------
def _breakdown(statuses: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {human(status)}" for status, n in sorted(statuses.items()) if n)


def ended_note(ended: Mapping[str, int]) -> str:
    """``1.2k finished · 3 failed``: the jobs that ended in a state, most common kinds first."""
    return " · ".join(f"{compact_number(ended[s])} {s}" for s in ENDED_ORDER if ended.get(s))


def counts_marks(
    model: GraphModel,
    in_flight: Mapping[str, Mapping[str, int]],
    ended: Mapping[str, Mapping[str, int]] | None = None,
    fan_outs: Mapping[str, BranchCounts] | None = None,
) -> GraphMarks:
    """Badges of the jobs in each state now (coloured by their most urgent status), the jobs that
    ended there apart (a note under the state), a fan-out's branches, and the breakdown as tooltip."""
    ended, fan_outs = ended or {}, fan_outs or {}
    nodes = []
    for node in model.nodes:
        statuses = in_flight.get(node.id, {})
        tones = {tone(status) for status, n in statuses.items() if n}
        top = next((t for t in TONE_URGENCY if t in tones), None)
        classes = ["has-jobs", f"tone-{top}"] if top else []
        here = ended.get(node.id, {})
        fan_out = fan_outs.get(node.id)
        lines = [node.id, f"in flight: {_breakdown(statuses) or 'none'}"]
        if fan_out is not None and fan_out.total:
            lines.append(f"fan-out branches: {fan_out.label}")
        if here:
            lines.append(f"ended here (history): {_breakdown(here)}")
        lines.append("click: the jobs in this state")
        note = fan_out.label if fan_out is not None and fan_out.total else ended_note(here)
        if note and fan_out is None:
            classes.append("ended-note")
        nodes.append(NodeMark(node.dom_id, node.id, classes, sum(statuses.values()), "\n".join(lines), note))
    return GraphMarks(graph_id(model), nodes, [EdgeMark(e.dom_id) for e in model.edges])


# -- one job --------------------------------------------------------------------------------------------
def taken_edges(model: GraphModel, transitions: Sequence[Transition]) -> tuple[dict[str, int], list[Transition]]:
    """How often each edge (by dom id) was taken, and the moves on no edge of the graph.

    A move names its edge by kind, label and the condition of the handler that chose it; a line
    recorded before edges were named matches only when its two states have a single edge.
    """
    by_pair: dict[tuple[str, str], list[EdgeModel]] = {}
    for edge in model.edges:
        by_pair.setdefault((edge.source, edge.target), []).append(edge)
    visits: dict[str, int] = {}
    off_graph: list[Transition] = []
    for move in transitions:
        if not move.on_graph or move.source is None:
            continue
        found = _edge_of(by_pair.get((move.source, move.target), []), move)
        if found is None:
            off_graph.append(move)
        else:
            visits[found.dom_id] = visits.get(found.dom_id, 0) + 1
    return visits, off_graph


def _edge_of(candidates: list[EdgeModel], move: Transition) -> EdgeModel | None:
    if move.kind is None:
        return candidates[0] if len(candidates) == 1 else None
    for edge in candidates:
        if (edge.kind, edge.label, edge.condition) == (move.kind, move.label, move.condition):
            return edge
    return next((e for e in candidates if e.kind == "declared"), None)


@dataclass(slots=True)
class JobPath:
    """Where a job is (or was, at a moment) and how it got there, for :func:`job_marks`."""

    state: str
    status: str
    visits: Mapping[str, int]
    transitions: Sequence[Transition]
    #: The branches of each state's fan-out (its last visit's; as they were, at a moment).
    fan_outs: Mapping[str, BranchCounts] = field(default_factory=dict)
    #: The state it was created in: the start state, unless it is a rerun from another (None: unknown).
    began: str | None = None


def job_marks(model: GraphModel, path: JobPath, today: GraphModel | None = None) -> GraphMarks:
    """The job's state in its status's colour, the states it entered (with how often), exactly the edges
    it took (with how often), its fan-out's branches; with ``today`` (a newer version of the blueprint),
    the states and edges that are no longer there or whose code changed."""
    gone_states, changed, gone_edges = _differences(model, today)
    nodes = []
    for node in model.nodes:
        count = path.visits.get(node.id, 0)
        classes = ["visited"] if count else []
        lines = [node.id, f"entered {count} time{'s' if count != 1 else ''}" if count else "not entered"]
        note = ""
        if node.id == path.state:
            classes += ["active", f"status-{slug(path.status)}", f"tone-{tone(path.status)}"]
            lines.append(f"now: {human(path.status)}")
        fan_out = path.fan_outs.get(node.id)
        if fan_out is not None and fan_out.total:
            note = fan_out.label
            lines.append(f"fan-out: {note}")
        if node.id in gone_states:
            classes.append("gone")
            lines.append("not in today's blueprint")
        elif node.id in changed:
            classes.append("changed")
            lines.append("its handlers' code changed since")
        lines.append("click: its visits, tasks, inputs and outputs")
        nodes.append(NodeMark(node.dom_id, node.id, classes, count if count > 1 else 0, "\n".join(lines), note))
    visits, off_graph = taken_edges(model, path.transitions)
    edges = []
    for edge in model.edges:
        classes = ["taken"] if edge.dom_id in visits else []
        if edge.dom_id in gone_edges:
            classes.append("gone")
        edges.append(EdgeMark(edge.dom_id, classes, visits.get(edge.dom_id, 0)))
    start = next((n for n in model.nodes if n.is_start), None)
    if start is not None and path.visits and path.began in (None, start.id):
        edges.append(EdgeMark(f"entry-{slug(model.blueprint)}-edge", ["taken"], 1))
    return GraphMarks(graph_id(model), nodes, edges, off_graph)


def _edge_key(edge: EdgeModel) -> tuple[str, str, str, str, str | None]:
    return edge.source, edge.target, edge.kind, edge.label, edge.condition


def _differences(model: GraphModel, today: GraphModel | None) -> tuple[set[str], set[str], set[str]]:
    """States no longer in ``today``, states whose code changed, edges (dom ids) no longer in it."""
    if today is None or today.version == model.version:
        return set(), set(), set()
    states_now = {n.id for n in today.nodes}
    gone = {n.id for n in model.nodes if n.id not in states_now}
    changed = {s for s, code in model.code.items() if s in today.code and today.code[s] != code}
    edges_now = {_edge_key(e) for e in today.edges}
    gone_edges = {e.dom_id for e in model.edges if _edge_key(e) not in edges_now}
    return gone, changed, gone_edges


def fan_outs(visits: Sequence[Visit]) -> dict[str, BranchCounts]:
    """Each state's fan-out branches at a glance: its last visit that fanned out."""
    return {v.state: v.counts for v in visits if v.fan_out}


def path_of(job: Job, timeline: Timeline | None) -> JobPath:
    """Where the job is and the moves its timeline recorded (its own visit counts while history has none)."""
    if timeline is None or not timeline.lines:
        return JobPath(job.state, job.status, job.visits, [])
    visits = timeline.visit_counts or job.visits
    began = timeline.visits[0].state if timeline.visits else None
    return JobPath(job.state, job.status, visits, timeline.transitions, fan_outs(timeline.visits), began)


def moment_path(moment: Moment) -> JobPath:
    """Where the job was at a moment of its timeline, and how it had got there."""
    began = moment.all_visits[0].state if moment.all_visits else None
    return JobPath(moment.state, moment.status, moment.visits, moment.transitions, fan_outs(moment.all_visits), began)


class JobGraph:
    """The graph a job ran on (the version it was created on, as history kept it) and today's.

    Args:
        ran_on: The graph to draw: the job's version's (None: its blueprint is not registered).
        today: Today's graph of the blueprint, to mark what changed since.
        note: Why the graph drawn is not the one the job ran on, if so.
    """

    def __init__(self, ran_on: GraphModel | None, today: GraphModel | None, note: str = "") -> None:
        self.ran_on = ran_on
        self.today = today
        self.note = note

    @classmethod
    async def of(cls, engine: OrchestratorEngine, detail: JobDetail) -> JobGraph:
        job = detail.job
        blueprint = engine.blueprints.get(job.blueprint)
        today = extract(blueprint) if blueprint is not None else None
        version = detail.blueprint_version or (detail.timeline.blueprint_version if detail.timeline else None)
        if version is None or (today is not None and version == today.version):
            return cls(today, today)
        kept = await engine.reads.graph(job.blueprint, version)
        if kept is not None:
            return cls(kept, today)
        if today is None:
            return cls(None, None)
        note = f"The graph of version {version}, which this job ran on, was not kept; today's ({today.version}) is"
        return cls(today, today, note + " shown.")

    def marks(self, path: JobPath) -> GraphMarks | None:
        return job_marks(self.ran_on, path, self.today) if self.ran_on is not None else None

    async def svg(self, job: Job) -> Markup:
        if self.ran_on is None:
            return Markup('<p class="note warn">Blueprint {} is not registered on this engine.</p>').format(
                escape(job.blueprint)
            )
        return await svg_markup(self.ran_on)


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """How today's blueprint differs from the version a job ran on, in words."""

    ran_on: str
    today: str
    removed_states: list[str]
    added_states: list[str]
    changed_states: list[str]
    removed_edges: list[str]
    added_edges: list[str]

    @property
    def same(self) -> bool:
        return self.ran_on == self.today


def version_diff(model: GraphModel, today: GraphModel) -> VersionDiff:
    """What changed between the version ``model`` draws and ``today``."""
    gone, changed, _ = _differences(model, today)
    then_states = {n.id for n in model.nodes}
    then_edges = {_edge_key(e) for e in model.edges}
    now_edges = {_edge_key(e) for e in today.edges}
    return VersionDiff(
        model.version,
        today.version,
        sorted(gone),
        sorted(n.id for n in today.nodes if n.id not in then_states),
        sorted(changed),
        sorted(_edge_text(e) for e in model.edges if _edge_key(e) not in now_edges),
        sorted(_edge_text(e) for e in today.edges if _edge_key(e) not in then_edges),
    )


def _edge_text(edge: EdgeModel) -> str:
    label = f" ({edge.label})" if edge.label else ""
    when = f" when {edge.condition}" if edge.condition else ""
    return f"{edge.source} \N{RIGHTWARDS ARROW} {edge.target}{label}{when}"
