"""HTML for the notebook widgets: the studio's graph with live marks, and small panels.

The graph is the studio's own: :func:`avtomatika.graph.blueprint_svg`, rendered by graphviz once per
blueprint version and cached. Live data never re-renders it. As ``static/studio.js`` does in the
browser, the marks of :mod:`avtomatika.studio.graphs` (``job_marks``, ``counts_marks``) are laid over
the cached SVG by its stable ids: classes added to node and edge groups, count badges and visit
counts drawn next to them. Here that happens in the kernel, on the SVG text, so the widgets are plain
``ipywidgets.HTML`` and need no JavaScript of their own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avtomatika.blueprint import Problem, StateMachineBlueprint
from avtomatika.debugger.narrate import short
from avtomatika.graph import GraphModel, GraphvizNotFound, blueprint_svg, model_svg
from avtomatika.models import Job
from avtomatika.reads import Change
from avtomatika.studio.graphs import EdgeMark, GraphMarks, NodeMark
from avtomatika.studio.ui import age, compact_number, human, pretty_json, short_id, tone

#: The studio's palette (``static/studio.css``), scoped to the widgets: one colour per status.
STYLE = """
.avtomatika-nb { --c-running:#2563eb; --c-waiting:#7c3aed; --c-quarantined:#d97706; --c-failed:#dc2626;
  --c-finished:#16a34a; --c-cancelled:#6b7280; --accent:#2563eb; --muted:#64748b;
  --line:rgba(127,127,127,.28); --path:#0f766e; --code-bg:rgba(127,127,127,.09); font-size:13px; line-height:1.45; }
.avtomatika-nb .tone-running{--tone:var(--c-running)} .avtomatika-nb .tone-waiting{--tone:var(--c-waiting)}
.avtomatika-nb .tone-quarantined{--tone:var(--c-quarantined)} .avtomatika-nb .tone-failed{--tone:var(--c-failed)}
.avtomatika-nb .tone-finished{--tone:var(--c-finished)} .avtomatika-nb .tone-cancelled{--tone:var(--c-cancelled)}
.avtomatika-nb svg.avtomatika-graph { max-width:100%; height:auto; overflow:visible; }
.avtomatika-nb .node.active path, .avtomatika-nb .node.active polygon,
.avtomatika-nb .node.has-jobs path, .avtomatika-nb .node.has-jobs polygon {
  stroke:var(--tone); stroke-width:3; fill:color-mix(in srgb, var(--tone) 18%, transparent); }
.avtomatika-nb .node.visited:not(.active) path, .avtomatika-nb .node.visited:not(.active) polygon {
  fill:color-mix(in srgb, currentColor 9%, transparent); }
.avtomatika-nb .node.breakpoint path, .avtomatika-nb .node.breakpoint polygon { stroke-dasharray:5 2; }
.avtomatika-nb .bp-dot { fill:var(--c-failed); }
.avtomatika-nb .live-badge rect { fill:var(--tone, var(--muted)); }
.avtomatika-nb .node-note { fill:var(--tone, var(--muted)); font:600 9.5px sans-serif; }
.avtomatika-nb svg.avtomatika-graph a { color:inherit; }
.avtomatika-nb .edge.taken path { stroke:var(--path); stroke-width:3.4; }
.avtomatika-nb .edge.taken polygon { stroke:var(--path); fill:var(--path); }
.avtomatika-nb .path-mode .edge:not(.taken):not(.entry) { opacity:.38; }
.avtomatika-nb .live-badge text { fill:#fff; font:600 10px sans-serif; }
.avtomatika-nb .visits { fill:var(--path); font:700 10px sans-serif; }
.avtomatika-nb .badge { display:inline-block; padding:0 .45em; border-radius:.6em; color:#fff;
  background:var(--tone, var(--muted)); font-size:.85em; }
.avtomatika-nb pre { background:var(--code-bg); padding:.4em .6em; margin:.2em 0; max-height:18em; overflow:auto;
  white-space:pre-wrap; }
.avtomatika-nb pre.traceback { color:var(--c-failed); }
.avtomatika-nb table { border-collapse:collapse; }
.avtomatika-nb th, .avtomatika-nb td { text-align:left; padding:.15em .7em .15em 0; border-bottom:1px solid var(--line);
  vertical-align:top; }
.avtomatika-nb .muted { color:var(--muted); }
.avtomatika-nb .error { color:var(--c-failed); } .avtomatika-nb .warning { color:var(--c-quarantined); }
.avtomatika-nb .added { color:var(--c-finished); } .avtomatika-nb .removed { color:var(--c-failed); }
.avtomatika-nb .changed { color:var(--c-quarantined); }
.avtomatika-nb h4 { margin:.5em 0 .2em; font-size:1em; }
.avtomatika-nb blockquote { margin:.3em 0; padding:.2em .6em; border-left:3px solid var(--c-waiting); }
.avtomatika-log select { font-family:var(--jp-code-font-family, monospace); font-size:12px; }
.avtomatika-nb button.copy, .avtomatika-nb [data-branch-filter], .avtomatika-nb [data-branch-search] { display:none; }
.avtomatika-nb h3 { font-size:.9em; text-transform:uppercase; color:var(--muted); margin:.6em 0 .2em; }
.avtomatika-nb .moment-grid { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:.8em; }
.avtomatika-nb dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:.15em .8em; margin:0; }
.avtomatika-nb dl.facts dt { color:var(--muted); } .avtomatika-nb dl.facts dd { margin:0; }
.avtomatika-nb .err, .avtomatika-nb .error-text { color:var(--c-failed); }
.avtomatika-nb .note { color:var(--muted); }
.avtomatika-nb ul.changes { list-style:none; margin:.2em 0; padding:0; }
.avtomatika-nb .table-scroll { max-height:22em; overflow:auto; }
.avtomatika-nb .branch-head { display:flex; gap:.8em; align-items:center; }
.avtomatika-nb .attempt { border-left:3px solid var(--line); padding-left:.6em; margin:.3em 0; }
"""

_GROUP = re.compile(r'<g id="(?P<id>[^"]*)" class="(?P<cls>[^"]*)">')
_POINT = re.compile(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)")
_SHAPE = re.compile(r'(?:\sd|\spoints)="([^"]*)"')


def page(*parts: str, css_class: str = "") -> str:
    """Widget HTML: the parts inside a ``.avtomatika-nb`` block, with the stylesheet."""
    return f'<style>{STYLE}</style><div class="avtomatika-nb {css_class}">{"".join(parts)}</div>'


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# -- the graph ------------------------------------------------------------------------------------
def graph_html(
    blueprint: StateMachineBlueprint,
    marks: GraphMarks | None = None,
    extra_classes: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The blueprint's cached SVG with ``marks`` applied; ``extra_classes`` maps states to more classes."""
    try:
        svg = blueprint_svg(blueprint)
    except GraphvizNotFound as exc:
        return f'<p class="warning">{esc(exc)}</p>'
    return _marked(svg, marks, extra_classes)


def model_graph_html(model: GraphModel, marks: GraphMarks | None = None) -> str:
    """:func:`graph_html` of a graph model: one history kept (the version a job ran on), or today's."""
    try:
        svg = model_svg(model)
    except GraphvizNotFound as exc:
        return f'<p class="warning">{esc(exc)}</p>'
    return _marked(svg, marks, None)


def _marked(svg: str, marks: GraphMarks | None, extra_classes: Mapping[str, Sequence[str]] | None) -> str:
    if marks is not None or extra_classes:
        svg = apply_marks(svg, marks or GraphMarks("", [], []), extra_classes or {})
    return f'<div class="avtomatika-nb-graph">{svg}</div>'


@dataclass(slots=True)
class _Box:
    left: float
    top: float
    right: float
    bottom: float


def _shape_points(svg: str, start: int) -> list[tuple[float, float]]:
    """The points of the first path or polygon of the element opened just before ``start``."""
    end = svg.find("<!--", start)
    found = _SHAPE.search(svg, start, end if end != -1 else len(svg))
    if found is None:
        return []
    return [(float(x), float(y)) for x, y in _POINT.findall(found.group(1))]


def _box(points: list[tuple[float, float]]) -> _Box | None:
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return _Box(min(xs), min(ys), max(xs), max(ys))


def apply_marks(svg: str, marks: GraphMarks, extra_classes: Mapping[str, Sequence[str]]) -> str:
    """Lay ``marks`` over ``svg`` (text in, text out): what ``studio.js`` does to the page's SVG."""
    nodes: dict[str, NodeMark] = {m.dom_id: m for m in marks.nodes}
    edges: dict[str, EdgeMark] = {m.dom_id: m for m in marks.edges}
    extras: list[str] = []

    def mark(match: re.Match[str]) -> str:
        dom_id = html.unescape(match["id"])
        classes = match["cls"].split()
        state = html.unescape(_title_after(svg, match.end()))
        node, edge = nodes.get(dom_id), edges.get(dom_id)
        attributes = ""
        if node is not None:
            classes += node.classes
            state = node.state
            attributes = f' data-state="{esc(node.state)}" data-count="{node.count}"'
            if node.count:
                extras.append(_badge(svg, match.end(), node))
            if node.note:
                extras.append(_note(svg, match.end(), node))
        if "state" in classes and extra_classes.get(state):
            classes += list(extra_classes[state])
            if "breakpoint" in extra_classes[state]:
                extras.append(_breakpoint_dot(svg, match.end()))
        if edge is not None:
            classes += edge.classes
            if edge.visits > 1:
                extras.append(_visits(svg, match.end(), edge.visits))
        unique = " ".join(dict.fromkeys(classes))
        return f'<g id="{match["id"]}" class="{esc(unique)}"{attributes}>'

    marked = _GROUP.sub(mark, svg)
    if not extras:
        return marked
    closing = marked.rfind("</g>")  # the end of the graph's top group: badges are drawn on top
    return marked[:closing] + "".join(extras) + marked[closing:]


def _note(svg: str, start: int, node: NodeMark) -> str:
    """The line(s) under a state: its fan-out's branches, or the jobs that ended there."""
    box = _box(_shape_points(svg, start))
    if box is None:
        return ""
    parts = node.note.split(" \N{MIDDLE DOT} ")
    lines = [parts[0], " \N{MIDDLE DOT} ".join(parts[1:])] if len(parts) > 2 else [node.note]
    x = (box.left + box.right) / 2
    spans = "".join(
        f'<tspan x="{x:.2f}" y="{box.bottom + 11 + i * 11:.2f}">{esc(line)}</tspan>' for i, line in enumerate(lines)
    )
    tones = " ".join(c for c in node.classes if c.startswith("tone-"))
    return f'<text class="node-note {tones}" text-anchor="middle">{spans}</text>'


def _title_after(svg: str, start: int) -> str:
    end = svg.find("</title>", start)
    begin = svg.find("<title>", start, end)
    return svg[begin + len("<title>") : end] if begin != -1 and end != -1 else ""


def _badge(svg: str, start: int, node: NodeMark) -> str:
    box = _box(_shape_points(svg, start))
    if box is None:
        return ""
    count = compact_number(node.count)
    tones = [c for c in node.classes if c.startswith("tone-")]
    width = max(16.0, 7 + len(count) * 6.2)  # a pill as wide as its text (the studio's)
    x, y = box.right - width + 6, box.top - 8
    return (
        f'<g class="live-badge {" ".join(tones)}" data-node="{esc(node.dom_id)}"><title>{esc(node.title)}</title>'
        f'<rect x="{x:.2f}" y="{y:.2f}" width="{width:.2f}" height="16" rx="8"/>'
        f'<text x="{x + width / 2:.2f}" y="{box.top + 3.5:.2f}" text-anchor="middle">{count}</text></g>'
    )


def _breakpoint_dot(svg: str, start: int) -> str:
    box = _box(_shape_points(svg, start))
    if box is None:
        return ""
    circle = f'<circle class="bp-dot" cx="{box.left + 2:.2f}" cy="{box.top + 2:.2f}" r="4.5">'
    return f"{circle}<title>breakpoint</title></circle>"


def _visits(svg: str, start: int, visits: int) -> str:
    points = _shape_points(svg, start)
    if not points:
        return ""
    x, y = points[len(points) // 2]
    return f'<text class="visits" x="{x + 4:.2f}" y="{y - 4:.2f}">\N{MULTIPLICATION SIGN}{visits}</text>'


# -- panels ---------------------------------------------------------------------------------------
def badge(status: str | None) -> str:
    """A status in its colour, as the studio shows it."""
    return f'<span class="badge tone-{tone(status)}">{esc(human(status))}</span>'


def count_badge(status: str, count: int) -> str:
    """``3 finished`` in the status's colour."""
    return f'<span class="badge tone-{tone(status)}">{count} {esc(human(status))}</span>'


def problems_html(problems: Iterable[Problem]) -> str:
    """Validation problems, errors first; a line saying so when there are none."""
    listed = sorted(problems, key=lambda p: p.severity != "error")
    if not listed:
        return '<p class="muted">No problems found.</p>'
    items = "".join(f'<li class="{esc(p.severity)}"><b>{esc(p.severity)}</b>: {esc(p)}</li>' for p in listed)
    errors = sum(p.severity == "error" for p in listed)
    warnings = len(listed) - errors
    head = f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}"
    return f"<h4>Problems ({head})</h4><ul>{items}</ul>"


def json_block(value: Any, css_class: str = "") -> str:
    return f'<pre class="{css_class}">{esc(pretty_json(value))}</pre>'


def diff_html(changes: Sequence[Change]) -> str:
    if not changes:
        return '<span class="muted">unchanged</span>'
    rows = []
    for c in changes:
        sign = {"added": "+", "removed": "-", "changed": "~"}[c.kind]
        if c.kind == "changed":
            shown = f"{esc(short(c.before, 40))} \N{RIGHTWARDS ARROW} {esc(short(c.after, 40))}"
        else:
            shown = esc(short(c.after if c.kind == "added" else c.before))
        rows.append(f'<div class="{c.kind}"><code>{sign} {esc(c.key)}</code>: {shown}</div>')
    return "".join(rows)


def jobs_table(jobs: Sequence[Job], studio_url: str | None) -> str:
    """Recent jobs: id (a link to the studio's job page when it is served), blueprint, status, state, age."""
    if not jobs:
        return '<p class="muted">No jobs yet.</p>'
    rows = []
    for job in jobs:
        ident = esc(short_id(job.id))
        if studio_url:
            ident = f'<a href="{esc(studio_url)}/jobs/{esc(job.id)}" target="_blank">{ident}</a>'
        error = f'<div class="muted">{esc(job.error)}</div>' if job.error else ""
        rows.append(
            f'<tr data-job="{esc(job.id)}"><td><code>{ident}</code></td><td>{esc(job.blueprint)}</td>'
            f"<td>{badge(job.status)}</td><td>{esc(job.state)}{error}</td><td>{esc(age(job.created_at))}</td></tr>"
        )
    head = "<tr><th>job</th><th>blueprint</th><th>status</th><th>state</th><th>age</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"
