"""Marks on a drawn graph, in one place: what they are, where they go on the cached SVG, how they look.

A :class:`GraphMarks` lists, per node and edge id, the live data of one drawn graph (classes, count,
note, tooltip, visits); :mod:`avtomatika.studio.graphs` computes them for a blueprint's jobs or one job.
A blueprint version's SVG is rendered by graphviz once and live data never re-renders it: once per SVG,
:func:`anchored` adds an empty *anchor* to each node and edge group, a nested ``<svg class="mark">`` over
the node's shape (or at the middle of the edge), so that a mark is drawn relative to it and needs no
geometry of its own. :func:`overlay` draws one node's or edge's marks for its anchor (count badge,
breakpoint dot, the note under a state, an edge's visit count): every rule of how marks look is there.

Both faces use it: the notebook lays a whole :class:`GraphMarks` over the anchored SVG in the kernel
(:func:`mark_svg`); the studio's pages and SSE events carry the same overlays in ``_graph_marks.html``,
and ``static/studio.js`` only puts them into the anchors and sets the classes (and tooltips), live.
"""

from __future__ import annotations

import functools
import html
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from avtomatika.reads import Transition
from avtomatika.studio.ui import compact_number

_GROUP = re.compile(r'<g id="(?P<id>[^"]*)" class="(?P<cls>[^"]*)">')
_G_TAG = re.compile(r"<g\b|</g>")
_SHAPE = re.compile(r"<(?P<tag>path|polygon|ellipse)\b(?P<attrs>[^>]*)/?>")
_ATTR = re.compile(r'\s(?P<name>[\w-]+)="(?P<value>[^"]*)"')
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")
_ANCHOR = re.compile(r'<svg class="mark" data-for="(?P<id>[^"]*)"(?P<rest>[^>]*)></svg>')
#: Points per cubic Bézier segment when measuring an edge's length.
_STEPS = 16


@dataclass(slots=True)
class NodeMark:
    """Live data of one state's SVG node: classes, a count badge, a note under it, a tooltip."""

    dom_id: str
    state: str
    classes: list[str] = field(default_factory=list)
    count: int = 0
    title: str = ""
    note: str = ""


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
    #: A job's moves the graph shows no edge for (a target computed in code, not declared).
    off_graph: list[Transition] = field(default_factory=list)

    def node(self, state: str) -> NodeMark | None:
        return next((n for n in self.nodes if n.state == state), None)


# -- anchors, once per SVG ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=128)
def anchored(svg: str) -> str:
    """``svg`` with an empty ``<svg class="mark" data-for="<group id>">`` at the end of each node and edge
    group: over the node's first shape, or at the middle of the edge's path. An anchored SVG is left as it is."""
    parts: list[str] = []
    done = 0
    for group in _GROUP.finditer(svg):
        kinds = group["cls"].split()
        if "node" not in kinds and "edge" not in kinds:
            continue
        end = _group_end(svg, group.end())
        shape = _SHAPE.search(svg, group.end(), end)
        if shape is None or svg.find('<svg class="mark"', group.end(), end) != -1:  # no shape, or anchored
            continue
        attributes = dict((m["name"], m["value"]) for m in _ATTR.finditer(shape["attrs"]))
        place = _edge_middle(attributes) if "edge" in kinds else _node_box(shape["tag"], attributes)
        if place is None:
            continue
        x, y, width, height = place
        parts += [
            svg[done:end],
            f'<svg class="mark" data-for="{escape(html.unescape(group["id"]))}" x="{x:.2f}" y="{y:.2f}" '
            f'width="{width:.2f}" height="{height:.2f}" overflow="visible"></svg>\n',
        ]
        done = end
    return "".join(parts) + svg[done:]


def _group_end(svg: str, start: int) -> int:
    """Where the group opened just before ``start`` closes (the index of its ``</g>``)."""
    depth = 1
    for tag in _G_TAG.finditer(svg, start):
        depth += 1 if tag.group() == "<g" else -1
        if depth == 0:
            return tag.start()
    return len(svg)


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(text)]


def _node_box(tag: str, attributes: dict[str, str]) -> tuple[float, float, float, float] | None:
    if tag == "ellipse":
        cx, cy, rx, ry = (float(attributes.get(k, "0")) for k in ("cx", "cy", "rx", "ry"))
        return cx - rx, cy - ry, 2 * rx, 2 * ry
    values = _numbers(attributes.get("d" if tag == "path" else "points", ""))
    xs, ys = values[0::2], values[1::2]
    if not xs or len(xs) != len(ys):
        return None
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def _edge_middle(attributes: dict[str, str]) -> tuple[float, float, float, float] | None:
    """The point half way along the edge's path (graphviz writes ``M x,y C x,y x,y x,y ...``)."""
    values = _numbers(attributes.get("d", ""))
    points = list(zip(values[0::2], values[1::2], strict=False))
    if not points:
        return None
    line = [points[0], *_sampled(points)]
    half, walked = sum(math.dist(a, b) for a, b in itertools.pairwise(line)) / 2, 0.0
    for a, b in itertools.pairwise(line):
        length = math.dist(a, b)
        if walked + length >= half and length > 0:
            t = (half - walked) / length
            return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, 0.0, 0.0
        walked += length
    return line[-1][0], line[-1][1], 0.0, 0.0


def _sampled(points: list[tuple[float, float]]) -> Iterator[tuple[float, float]]:
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[i : i + 4]
        for step in range(1, _STEPS + 1):
            t = step / _STEPS
            u = 1 - t
            yield (
                u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
            )


# -- how marks look ---------------------------------------------------------------------------------------
def overlay(mark: NodeMark | EdgeMark) -> Markup:
    """What a node's or an edge's anchor holds: drawn relative to the node's box, or the edge's middle."""
    if isinstance(mark, EdgeMark):
        if mark.visits < 2:
            return Markup()
        return Markup('<text class="visits" x="4" y="-4">\N{MULTIPLICATION SIGN}{}</text>').format(mark.visits)
    parts = []
    if mark.count:
        parts.append(_badge(mark))
    if "breakpoint" in mark.classes:
        parts.append(Markup('<circle class="bp-mark" cx="2" cy="2" r="5.5"/>'))
    if mark.note:
        parts.append(_note(mark.note))
    return Markup("").join(parts)


def _badge(mark: NodeMark) -> Markup:
    """A pill as wide as its count, on the node's top right corner."""
    count = compact_number(mark.count)
    tone = " ".join(c for c in mark.classes if c.startswith("tone-"))
    width = max(16.0, 7 + len(count) * 6.2)
    return Markup(
        '<svg x="100%" overflow="visible"><g class="live-badge {}"><title>{}</title>'
        '<rect x="{:.2f}" y="-8" width="{:.2f}" height="16" rx="8"/>'
        '<text x="{:.2f}" y="3.5" text-anchor="middle">{}</text></g></svg>'
    ).format(tone, mark.title, 6 - width, width, 6 - width / 2, count)


def _note(note: str) -> Markup:
    """The line(s) under a state: its fan-out's branches ("3/40 done", then the rest), or the jobs that ended there."""
    parts = note.split(" \N{MIDDLE DOT} ")
    lines = [parts[0], " \N{MIDDLE DOT} ".join(parts[1:])] if len(parts) > 2 else [note]
    spans = Markup("").join(
        Markup('<tspan x="0" y="{}">{}</tspan>').format(11 + i * 11, line) for i, line in enumerate(lines)
    )
    return Markup(
        '<svg x="50%" y="100%" overflow="visible"><text class="node-note" text-anchor="middle">{}</text></svg>'
    ).format(spans)


# -- a whole drawing, in the kernel --------------------------------------------------------------------------
def mark_svg(svg: str, marks: GraphMarks) -> str:
    """``marks`` laid over an :func:`anchored` SVG, as ``static/studio.js`` lays them in the page: the
    classes and ``data-state``/``data-count`` on the groups, the overlays in their anchors."""
    nodes: dict[str, NodeMark] = {m.dom_id: m for m in marks.nodes}
    edges: dict[str, EdgeMark] = {m.dom_id: m for m in marks.edges}

    def group(match: re.Match[str]) -> str:
        dom_id = html.unescape(match["id"])
        found = nodes.get(dom_id) or edges.get(dom_id)
        if found is None:
            return match.group()
        classes = " ".join(dict.fromkeys([*match["cls"].split(), *found.classes]))
        attributes = ""
        if isinstance(found, NodeMark):
            attributes = f' data-state="{escape(found.state)}" data-count="{found.count}"'
        return f'<g id="{match["id"]}" class="{escape(classes)}"{attributes}>'

    def anchor(match: re.Match[str]) -> str:
        dom_id = html.unescape(match["id"])
        found = nodes.get(dom_id) or edges.get(dom_id)
        inside = overlay(found) if found is not None else ""
        return f'<svg class="mark" data-for="{match["id"]}"{match["rest"]}>{inside}</svg>'

    return _ANCHOR.sub(anchor, _GROUP.sub(group, svg))
