"""HTML for the notebook widgets: the studio's graph with live marks, and small panels.

The graph is the studio's own: :func:`avtomatika.graph.blueprint_svg`, rendered by graphviz once per
blueprint version and cached, with the anchors of :func:`avtomatika.studio.marks.anchored`. Live data
never re-renders it: the marks of :mod:`avtomatika.studio.graphs` (``job_marks``, ``counts_marks``)
are laid over it by :func:`avtomatika.studio.marks.mark_svg`, drawn as the studio draws them. Here that
happens in the kernel, on the SVG text, so the widgets are plain ``ipywidgets.HTML`` and need no
JavaScript of their own.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import jinja2

from avtomatika.blueprint import Problem, StateMachineBlueprint
from avtomatika.debugger.narrate import short
from avtomatika.graph import GraphModel, GraphvizNotFound, blueprint_svg, extract, model_svg
from avtomatika.models import Job
from avtomatika.reads import Change, JobRow
from avtomatika.studio.access import Session
from avtomatika.studio.graphs import graph_id
from avtomatika.studio.marks import GraphMarks, NodeMark, anchored, mark_svg
from avtomatika.studio.partial_contexts import JobRowContext
from avtomatika.studio.render import context_dict, partials
from avtomatika.studio.ui import palette_variables, pretty_json, tone_rules

#: The studio's palette (:data:`avtomatika.studio.ui.PALETTE`, light), scoped to the widgets, and their styles.
STYLE = (
    f".avtomatika-nb {{ {palette_variables()}"
    """ --accent:#2563eb; --muted:#64748b;
  --line:rgba(127,127,127,.28); --path:#0f766e; --code-bg:rgba(127,127,127,.09); font-size:13px; line-height:1.45; }
"""
    + tone_rules(".avtomatika-nb")
    + """
.avtomatika-nb svg.avtomatika-graph { max-width:100%; height:auto; overflow:visible; }
.avtomatika-nb .node.active path, .avtomatika-nb .node.active polygon,
.avtomatika-nb .node.has-jobs path, .avtomatika-nb .node.has-jobs polygon {
  stroke:var(--tone); stroke-width:3; fill:color-mix(in srgb, var(--tone) 18%, transparent); }
.avtomatika-nb .node.visited:not(.active) path, .avtomatika-nb .node.visited:not(.active) polygon {
  fill:color-mix(in srgb, currentColor 9%, transparent); }
.avtomatika-nb .node.breakpoint path, .avtomatika-nb .node.breakpoint polygon { stroke-dasharray:5 2; }
.avtomatika-nb .bp-mark { fill:var(--c-failed); }
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
.avtomatika-nb .mono { font-family:var(--jp-code-font-family, monospace); font-size:.9em; }
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
)


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
        svg = anchored(blueprint_svg(blueprint))
    except GraphvizNotFound as exc:
        return f'<p class="warning">{esc(exc)}</p>'
    if marks is None and extra_classes:  # breakpoints, and no live data yet
        marks = unmarked(extract(blueprint))
    return _marked(svg, marks, extra_classes)


def model_graph_html(model: GraphModel, marks: GraphMarks | None = None) -> str:
    """:func:`graph_html` of a graph model: one history kept (the version a job ran on), or today's."""
    try:
        svg = anchored(model_svg(model))
    except GraphvizNotFound as exc:
        return f'<p class="warning">{esc(exc)}</p>'
    return _marked(svg, marks, None)


def unmarked(model: GraphModel) -> GraphMarks:
    """Marks of a graph with no live data: each state, nothing on it."""
    return GraphMarks(graph_id(model), [NodeMark(n.dom_id, n.id) for n in model.nodes], [])


def _marked(svg: str, marks: GraphMarks | None, extra_classes: Mapping[str, Sequence[str]] | None) -> str:
    if marks is not None:
        extra = extra_classes or {}
        nodes = [replace(n, classes=[*n.classes, *extra.get(n.state, ())]) for n in marks.nodes]
        svg = mark_svg(svg, replace(marks, nodes=nodes))
    return f'<div class="avtomatika-nb-graph">{svg}</div>'


# -- the studio's partials --------------------------------------------------------------------------
#: Who the studio's partials are rendered for in a notebook: no session, so no forms.
NOTEBOOK_USER = Session(None, "notebook", "")


@functools.lru_cache(maxsize=8)
def templates(studio_url: str | None = None) -> jinja2.Environment:
    """The studio's templates, linking to the studio at ``studio_url`` (no links to jobs without it)."""
    return partials(studio_url)


def render(template: str, context: Any, studio_url: str | None = None) -> str:
    """One of the studio's partials, rendered with ``context`` (its declared context dataclass)."""
    return templates(studio_url).get_template(template).render(**context_dict(context), user=NOTEBOOK_USER)


def _macros(studio_url: str | None = None) -> Any:
    return templates(studio_url).get_template("_macros.html").make_module({"user": NOTEBOOK_USER})


# -- panels ---------------------------------------------------------------------------------------
def badge(status: str | None) -> str:
    """A status in its colour: the studio's badge."""
    return str(_macros().badge(status))


def count_badge(status: str, count: int) -> str:
    """``3 finished`` in the status's colour: the studio's badge with a count."""
    return str(_macros().badge(status, count))


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
    """Recent jobs as the studio's jobs table shows them (its head and ``_job_row.html``); ids link to the
    studio's job pages when it is served."""
    if not jobs:
        return '<p class="muted">No jobs yet.</p>'
    rows = "".join(render("_job_row.html", JobRowContext(JobRow.of(job)), studio_url or None) for job in jobs)
    return f'<table class="jobs">{_macros().job_head()}<tbody>{rows}</tbody></table>'
