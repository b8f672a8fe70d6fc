"""Graphs on pages: the cached SVG of a blueprint, and the live "marks" laid over it.

The SVG is rendered once per blueprint version (:func:`avtomatika.graph.blueprint_svg`, off the
loop). Live data never re-renders it: a :class:`GraphMarks` lists, per node and edge id, the CSS
classes, count badge and visit count to show; ``_graph_marks.html`` carries them (in the page and in
SSE events) and ``static/studio.js`` applies them by toggling classes on the SVG's elements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from markupsafe import Markup

from ..blueprint import StateMachineBlueprint
from ..graph import GraphvizNotFound, blueprint_svg, extract, slug
from ..models import Job
from .ui import TONE_URGENCY, human, tone

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class NodeMark:
    """Live data of one state's SVG node."""

    dom_id: str
    state: str
    classes: list[str] = field(default_factory=list)
    count: int = 0
    title: str = ""


@dataclass(slots=True)
class EdgeMark:
    """Live data of one edge: ``taken`` and how often."""

    dom_id: str
    classes: list[str] = field(default_factory=list)
    visits: int = 0


@dataclass(slots=True)
class GraphMarks:
    """Everything live about one drawn graph; ``graph_id`` is the SVG's top ``<g>`` id."""

    graph_id: str
    nodes: list[NodeMark]
    edges: list[EdgeMark]

    def node(self, state: str) -> NodeMark | None:
        return next((n for n in self.nodes if n.state == state), None)


def graph_id(blueprint: StateMachineBlueprint) -> str:
    """The id graphviz gives the SVG's top group (``graph-<slug>``), as :func:`to_dot` sets it."""
    return f"graph-{slug(blueprint.name)}"


async def svg_markup(blueprint: StateMachineBlueprint) -> Markup:
    """The blueprint's inline SVG (rendered in a thread on first use), or a note saying why not."""
    loop = asyncio.get_running_loop()
    try:
        svg = await loop.run_in_executor(None, blueprint_svg, blueprint)
    except GraphvizNotFound as exc:
        logger.warning("studio: %s", exc)
        return Markup('<p class="note warn">{}</p>').format(str(exc))
    return Markup(svg)  # graphviz's output, from names escaped by to_dot


def counts_marks(blueprint: StateMachineBlueprint, by_state: Mapping[str, Mapping[str, int]]) -> GraphMarks:
    """Count badges: jobs per state, coloured by their most urgent status, broken down in a tooltip."""
    model = extract(blueprint, counts={state: sum(s.values()) for state, s in by_state.items()})
    nodes = []
    for node in model.nodes:
        statuses = by_state.get(node.id, {})
        tones = {tone(status) for status, n in statuses.items() if n}
        top = next((t for t in TONE_URGENCY if t in tones), None)
        classes = ["has-jobs", f"tone-{top}"] if top else []
        title = ", ".join(f"{n} {human(status)}" for status, n in sorted(statuses.items()) if n)
        nodes.append(NodeMark(node.dom_id, node.id, classes, node.count, title or "no jobs"))
    return GraphMarks(graph_id(blueprint), nodes, [EdgeMark(e.dom_id) for e in model.edges])


def job_marks(blueprint: StateMachineBlueprint, job: Job) -> GraphMarks:
    """The job's current state highlighted in its status's colour, and the edges it took."""
    model = extract(blueprint, job_state=job.state, job_status=job.status, visits=job.visits)
    nodes = []
    for node in model.nodes:
        classes = [c for c in node.classes if c in ("visited", "active") or c.startswith("status-")]
        if node.active:
            classes.append(f"tone-{tone(job.status)}")
        title = f"entered {node.visits} time{'s' if node.visits != 1 else ''}" if node.visits else "not visited"
        nodes.append(NodeMark(node.dom_id, node.id, classes, node.visits if node.visits > 1 else 0, title))
    edges = [EdgeMark(e.dom_id, ["taken"] if e.taken else [], e.visits) for e in model.edges]
    return GraphMarks(graph_id(blueprint), nodes, edges)
