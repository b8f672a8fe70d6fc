"""Blueprint graphs: extract a model, then render it as DOT, SVG or Mermaid.

As in python-statemachine, reading and drawing are kept apart: :func:`extract` turns a blueprint (and,
optionally, a job's live data) into plain dataclasses, and the renderers only read that model. graphviz
is imported inside the functions that run it, so ``import avtomatika`` never loads it.

SVG ids are stable, so the studio renders a blueprint once per version (:func:`blueprint_svg`) and
shows live data by toggling CSS classes on these elements:

- a state: ``<g id="node-<slug>" class="node state [start] [end] [aggregator] [unknown]">``
- an edge: ``<g id="edge-<source slug>-<target slug>-<n>" class="edge <kind>">``

Colours are left to CSS: the inline SVG draws in ``currentColor`` on a transparent background, so it
follows the page's light or dark theme.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AvtomatikaError

if TYPE_CHECKING:
    from .blueprint import StateMachineBlueprint

logger = logging.getLogger(__name__)

#: Blueprint SVGs kept by :func:`blueprint_svg`, keyed by (name, version).
SVG_CACHE_SIZE = 64
#: Colour of states that only appear as edge targets; readable on light and dark backgrounds.
WARNING_COLOR = "#d97706"

_ENTRY = "__start__"  # the DOT name of the invisible entry point; a state of that name pushes it aside


class GraphvizNotFound(AvtomatikaError, RuntimeError):
    """Graphviz is not installed: the ``dot`` program, or the ``graphviz`` Python package."""

    def __init__(self, missing: str, install: str) -> None:
        self.missing = missing
        self.install = install
        super().__init__(f"Rendering a blueprint graph needs {missing}, which was not found. Install it: {install}")


def _graphviz() -> Any:
    """The graphviz package, imported on first use: ``import avtomatika`` must not load it."""
    try:
        import graphviz  # type: ignore[import-untyped]
    except ImportError as exc:
        raise GraphvizNotFound("the graphviz Python package", "pip install graphviz") from exc
    return graphviz


# -- the model ------------------------------------------------------------------------------------
@dataclass(slots=True)
class NodeModel:
    """One state. ``id`` is the state name (the DOT node name and the SVG ``<title>``)."""

    id: str
    label: str
    is_start: bool = False
    is_end: bool = False
    is_aggregator: bool = False
    count: int = 0  # jobs in this state, for the studio's badges
    status: str | None = None  # the job's status, when the job is in this state
    active: bool = False  # the job is in this state
    visits: int = 0  # times the job entered this state
    unknown: bool = False  # only named as an edge target (or by the job): no handler is registered
    dom_id: str = ""  # id of the SVG <g>; "node-<slug>" unless set

    def __post_init__(self) -> None:
        if not self.dom_id:
            self.dom_id = f"node-{slug(self.id)}"

    @property
    def classes(self) -> list[str]:
        """CSS classes of the SVG element (graphviz adds ``node`` in front)."""
        flags = ("start", self.is_start), ("end", self.is_end), ("aggregator", self.is_aggregator)
        classes = ["state", *(name for name, on in flags if on)]
        if self.unknown:
            classes.append("unknown")
        if self.visits:
            classes.append("visited")
        if self.active:
            classes += ["active", *([f"status-{slug(self.status)}"] if self.status else [])]
        return classes


@dataclass(slots=True)
class EdgeModel:
    """One edge. ``label`` is the result status (dispatch, human, sub-blueprint) or a declared label."""

    source: str
    target: str
    kind: str  # transition | dispatch | parallel | human | sub_blueprint | declared
    label: str = ""
    condition: str | None = None  # the .when() expression of the handler that takes this edge
    otherwise: bool = False  # taken by the default handler of a state that also has .when() handlers
    visits: int = 0  # the target's visits, when the edge was taken
    taken: bool = False  # both ends were visited
    dom_id: str = ""  # id of the SVG <g>: "edge-<source slug>-<target slug>-<n>", set by extract()

    @property
    def classes(self) -> list[str]:
        """CSS classes of the SVG element (graphviz adds ``edge`` in front)."""
        return [self.kind, *(["taken"] if self.taken else [])]


@dataclass(slots=True)
class GraphModel:
    """A blueprint's graph: states in registration order, then unknown ones; edges as found."""

    blueprint: str
    version: str
    nodes: list[NodeModel]
    edges: list[EdgeModel]
    #: A hash per state of its handlers' source, when known (to tell versions apart state by state).
    code: dict[str, str] = field(default_factory=dict)

    def node(self, state: str) -> NodeModel | None:
        """The node of ``state``, or None."""
        return next((n for n in self.nodes if n.id == state), None)


@dataclass(slots=True, frozen=True)
class GraphConfig:
    """How the renderers draw a model.

    Args:
        rankdir: Graphviz layout direction (``LR`` left to right, ``TB`` top to bottom).
        font: Font family for states and edge labels.
        font_size: Font size of state names, in points.
        edge_font_size: Font size of edge labels, in points.
        label_width: Conditions are wrapped at this many characters a line (three lines at most).
        background: Graph background; ``transparent`` for inline SVG, ``white`` for files.
    """

    rankdir: str = "LR"
    font: str = "Helvetica"
    font_size: float = 11
    edge_font_size: float = 9
    label_width: int = 32
    background: str = "transparent"


_FILE_CONFIG = GraphConfig(background="white")


# -- ids --------------------------------------------------------------------------------------------
_SLUG_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def slug(name: str) -> str:
    """A name usable in an HTML id: the name itself when safe, else a cleaned name plus a short hash.

    It depends on the name alone, so ``node-<slug>`` ids are the same in every rendering.
    """
    if _SLUG_SAFE.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    base = _SLUG_UNSAFE.sub("-", name).strip("-")
    return f"{base}-{digest}" if base else digest


def _unique(candidate: str, taken: set[str]) -> str:
    unique, n = candidate, 1
    while unique in taken:
        n += 1
        unique = f"{candidate}-{n}"
    taken.add(unique)
    return unique


# -- extract ----------------------------------------------------------------------------------------
def extract(
    blueprint: StateMachineBlueprint,
    counts: Mapping[str, int] | None = None,
    job_state: str | None = None,
    job_status: str | None = None,
    visits: Mapping[str, int] | None = None,
) -> GraphModel:
    """Read ``blueprint`` into a :class:`GraphModel`, with optional live data.

    Args:
        blueprint: The blueprint to draw.
        counts: Jobs per state, shown as badges.
        job_state: The state a job is in; its node is marked ``active``.
        job_status: That job's status (``running``, ``failed``...), stored on the active node.
        visits: Times the job entered each state; an edge is ``taken`` when both its ends were visited.
    """
    counts, visits = counts or {}, visits or {}
    nodes = {
        name: NodeModel(name, name, info.is_start, info.is_end, info.is_aggregator)
        for name, info in blueprint.states.items()
    }
    found = blueprint.edges()
    for name in [n for edge in found for n in (edge.source, edge.target)] + ([job_state] if job_state else []):
        if name not in nodes:
            nodes[name] = NodeModel(name, name, unknown=True)
    dom_ids: set[str] = set()
    for node in nodes.values():
        node.dom_id = _unique(node.dom_id, dom_ids)
        node.count, node.visits = counts.get(node.id, 0), visits.get(node.id, 0)
        if node.id == job_state:
            node.active, node.status = True, None if job_status is None else str(job_status)
    edges = []
    branching = {name for name, info in blueprint.states.items() if info.conditional}
    for edge in found:
        taken = visits.get(edge.source, 0) > 0 and visits.get(edge.target, 0) > 0
        source, target = (nodes[name].dom_id.removeprefix("node-") for name in (edge.source, edge.target))
        dom_id = _unique_edge_id(f"edge-{source}-{target}", dom_ids)
        visited = visits.get(edge.target, 0) if taken else 0
        otherwise = edge.condition is None and edge.source in branching and edge.kind != "declared"
        edges.append(
            EdgeModel(
                edge.source, edge.target, edge.kind, edge.label, edge.condition, otherwise, visited, taken, dom_id
            )
        )
    return GraphModel(blueprint.name, blueprint.version, list(nodes.values()), edges, blueprint.code_versions())


def _unique_edge_id(prefix: str, taken: set[str]) -> str:
    n = 0
    while f"{prefix}-{n}" in taken:
        n += 1
    taken.add(f"{prefix}-{n}")
    return f"{prefix}-{n}"


# -- DOT --------------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A DOT quoted string. Backslashes are doubled, so labels show them as written."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: Iterable[str]) -> str:
    return '"' + "\\n".join(_quote(line)[1:-1] for line in lines) + '"'


def _statement(name: str, attributes: Mapping[str, str]) -> str:
    """A node (``name``) or edge (``name`` is ``"a" -> "b"``) statement; label values come quoted."""
    listed = " ".join(f"{k}={v if k == 'label' else _quote(v)}" for k, v in attributes.items())
    return f"\t{name} [{listed}]\n"


def shorten(condition: str, width: int = 32) -> str:
    """A ``.when()`` expression for an edge label: without ``context.``, cut to ``width`` characters."""
    text = " ".join(condition.replace("context.", "").split())
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def wrap_condition(condition: str, width: int = 32, max_lines: int = 4) -> list[str]:
    """A ``.when()`` expression as label lines in brackets: without ``context.``, wrapped at spaces to
    ``width`` characters, on at most ``max_lines`` lines. Words are never cut: a word longer than
    ``width`` has a line of its own, and past ``max_lines`` the last line ends with an ellipsis after a
    whole word (the edge's tooltip has the whole condition)."""
    lines: list[str] = []
    for word in " ".join(condition.replace("context.", "").split()).split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], ""]
        lines[-2] += " \N{HORIZONTAL ELLIPSIS}"
        lines.pop()
    lines[0] = "[" + lines[0]
    lines[-1] += "]"
    return lines


def _node_attributes(node: NodeModel) -> dict[str, str]:
    lines = [node.label]
    if node.count:
        lines.append(f"{node.count} job{'s' if node.count != 1 else ''}")
    attributes = {"id": node.dom_id, "class": " ".join(node.classes), "label": _label(lines)}
    styles = ["rounded"]
    if node.is_aggregator:
        attributes["shape"] = "box3d"  # fan-in: a stack of results
        styles = []
    if node.is_start or node.active:
        styles.append("bold")
    if node.active:
        attributes["penwidth"] = "3"
    if node.is_end:
        attributes["peripheries"] = "2"
    if node.unknown:
        styles.append("dashed")
        attributes |= {"color": WARNING_COLOR, "fontcolor": WARNING_COLOR, "tooltip": "no handler is registered"}
        attributes["label"] = _label([*lines, "(no handler)"])
    if styles:
        attributes["style"] = ",".join(styles)
    return attributes


_EDGE_STYLES: dict[str, dict[str, str]] = {
    "parallel": {"color": "black:invis:black"},  # a double line: several tasks at once
    "human": {"style": "dashed"},
    "sub_blueprint": {"style": "dashed", "arrowhead": "onormal"},
    "declared": {"arrowhead": "vee"},
}


def _edge_attributes(edge: EdgeModel, config: GraphConfig) -> dict[str, str]:
    lines = wrap_condition(edge.condition, config.label_width) if edge.condition else []
    lines += ["[otherwise]"] if edge.otherwise else []  # set apart from the .when() edges it runs beside
    lines += [edge.label] if edge.label else []
    if edge.taken and edge.visits > 1:
        lines.append(f"\N{MULTIPLICATION SIGN}{edge.visits}")
    attributes = {"id": edge.dom_id, "class": " ".join(edge.classes), **_EDGE_STYLES.get(edge.kind, {})}
    if lines:
        attributes["label"] = _label(lines)
    if edge.condition:
        attributes["tooltip"] = f"when {edge.condition}"
    if edge.taken:
        attributes["penwidth"] = "2.5"
    return attributes


def to_dot(model: GraphModel, config: GraphConfig | None = None) -> str:
    """The graph as DOT source.

    Args:
        model: What to draw, from :func:`extract`.
        config: Layout and fonts; defaults to :class:`GraphConfig`.
    """
    graphviz = _graphviz()
    config = config or GraphConfig()
    font = {"fontname": config.font}
    graph = graphviz.Digraph(
        name=graphviz.nohtml(model.blueprint),
        graph_attr={
            "rankdir": config.rankdir,
            "bgcolor": config.background,
            "id": f"graph-{slug(model.blueprint)}",
            "nodesep": "0.3",
            "ranksep": "0.45",
            "pad": "0.3",  # room for the studio's badges and notes around the states at the edges
            **font,
        },
        node_attr={"shape": "box", "fontsize": str(config.font_size), "height": "0.4", **font},
        edge_attr={"fontsize": str(config.edge_font_size), "arrowsize": "0.7", **font},
    )
    # Statements are written here rather than with Digraph.node()/edge(): edge() reads "a:b" as node
    # "a", port "b", and a state name may contain a colon.
    names = {node.id for node in model.nodes}
    for node in model.nodes:
        graph.body.append(_statement(_quote(node.id), _node_attributes(node)))
    start = next((node for node in model.nodes if node.is_start), None)
    if start is not None:
        entry = _ENTRY
        while entry in names:
            entry = f"_{entry}"
        point = {"id": f"entry-{slug(model.blueprint)}", "class": "entry", "shape": "point", "width": "0.12"}
        graph.body.append(_statement(_quote(entry), {**point, "label": '""'}))
        arrow = {"id": f"{point['id']}-edge", "class": "entry"}
        graph.body.append(_statement(f"{_quote(entry)} -> {_quote(start.id)}", arrow))
    for edge in model.edges:
        graph.body.append(_statement(f"{_quote(edge.source)} -> {_quote(edge.target)}", _edge_attributes(edge, config)))
    return str(graph.source)


# -- rendering --------------------------------------------------------------------------------------
def _pipe(source: str, output_format: str) -> bytes:
    """Run ``dot -T<output_format>`` on ``source``."""
    graphviz = _graphviz()
    try:
        data: bytes = graphviz.pipe("dot", output_format, source.encode())
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizNotFound(
            "Graphviz's `dot` program",
            "`apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS), "
            "or see https://graphviz.org/download/",
        ) from exc
    return data


_BLACK = re.compile(r'\b(fill|stroke)="(?:black|#000000)"')


def render_svg(model: GraphModel, config: GraphConfig | None = None) -> str:
    """The graph as inline SVG: no XML prolog or doctype, drawn in ``currentColor``.

    Args:
        model: What to draw, from :func:`extract`.
        config: Layout and fonts; defaults to :class:`GraphConfig` (transparent background).
    """
    svg = _pipe(to_dot(model, config), "svg").decode("utf-8")
    svg = svg[svg.index("<svg") :]
    # graphviz draws in black; currentColor follows the page's text colour (dark mode), and the
    # fill on <svg> reaches the <text> elements, which carry no fill of their own.
    svg = _BLACK.sub(r'\1="currentColor"', svg)
    return svg.replace("<svg ", '<svg class="avtomatika-graph" fill="currentColor" ', 1)


_svg_cache: OrderedDict[tuple[str, str], str] = OrderedDict()
_svg_cache_lock = threading.Lock()  # the studio renders in executor threads


def blueprint_svg(blueprint: StateMachineBlueprint) -> str:
    """The blueprint's SVG without live data, rendered once per ``(name, version)`` (a small LRU)."""
    with _svg_cache_lock:
        svg = _svg_cache.get((blueprint.name, blueprint.version))
    return svg if svg is not None else model_svg(extract(blueprint))


def model_svg(model: GraphModel) -> str:
    """The SVG of a model without live data (today's, or one history kept), cached per ``(blueprint,
    version)`` like :func:`blueprint_svg`."""
    key = (model.blueprint, model.version)
    with _svg_cache_lock:
        svg = _svg_cache.get(key)
        if svg is not None:
            _svg_cache.move_to_end(key)
            return svg
    bare = GraphModel(model.blueprint, model.version, [_bare(n) for n in model.nodes], list(model.edges))
    rendered = render_svg(bare)  # outside the lock: dot takes tens of milliseconds
    with _svg_cache_lock:
        svg = _svg_cache.setdefault(key, rendered)  # a racing thread's copy wins, so callers share one
        _svg_cache.move_to_end(key)
        while len(_svg_cache) > SVG_CACHE_SIZE:
            _svg_cache.popitem(last=False)
    logger.debug("rendered the graph of blueprint %s, version %s", model.blueprint, model.version)
    return svg


def _bare(node: NodeModel) -> NodeModel:
    return NodeModel(
        node.id, node.label, node.is_start, node.is_end, node.is_aggregator, unknown=node.unknown, dom_id=node.dom_id
    )


# -- kept with history --------------------------------------------------------------------------------
def model_to_json(model: GraphModel) -> dict[str, Any]:
    """The model's drawing as plain data, with its hash per state of the handlers' source, to keep a
    blueprint version's graph in history."""
    return {
        "blueprint": model.blueprint,
        "version": model.version,
        "nodes": [
            {
                "id": n.id,
                "start": n.is_start,
                "end": n.is_end,
                "aggregator": n.is_aggregator,
                "unknown": n.unknown,
                "dom_id": n.dom_id,
            }
            for n in model.nodes
        ],
        "edges": [
            {
                "source": e.source,
                "target": e.target,
                "kind": e.kind,
                "label": e.label,
                "condition": e.condition,
                "otherwise": e.otherwise,
                "dom_id": e.dom_id,
            }
            for e in model.edges
        ],
        "code": dict(model.code),
    }


def model_from_json(data: Mapping[str, Any]) -> GraphModel:
    """The model :func:`model_to_json` kept (its ``code`` is on :attr:`GraphModel.code`)."""
    nodes = [
        NodeModel(
            n["id"],
            n["id"],
            bool(n.get("start")),
            bool(n.get("end")),
            bool(n.get("aggregator")),
            unknown=bool(n.get("unknown")),
            dom_id=n.get("dom_id") or "",
        )
        for n in data.get("nodes", [])
    ]
    edges = [
        EdgeModel(
            e["source"],
            e["target"],
            e["kind"],
            e.get("label") or "",
            e.get("condition"),
            bool(e.get("otherwise")),
            dom_id=e.get("dom_id") or "",
        )
        for e in data.get("edges", [])
    ]
    return GraphModel(str(data["blueprint"]), str(data["version"]), nodes, edges, dict(data.get("code") or {}))


def clear_svg_cache() -> None:
    """Forget every SVG :func:`blueprint_svg` has kept."""
    with _svg_cache_lock:
        _svg_cache.clear()


def render_blueprint(
    blueprint: StateMachineBlueprint,
    output_filename: str | os.PathLike[str] | None = None,
    output_format: str = "png",
) -> str | None:
    """The blueprint's DOT source, or, given ``output_filename``, the path of the file rendered.

    Args:
        blueprint: The blueprint to draw.
        output_filename: Where to write; the file gets exactly this name (no extension is added).
        output_format: A graphviz format (``png``, ``svg``, ``pdf``...). With the default ``png``, a
            filename ending in another known format (``graph.svg``) picks that format.
    """
    model = extract(blueprint)
    if output_filename is None:
        return to_dot(model)
    path = Path(output_filename)
    output_format = _file_format(path, output_format)
    path.write_bytes(_pipe(to_dot(model, _FILE_CONFIG), output_format))
    logger.info("wrote the graph of blueprint %s to %s (%s)", blueprint.name, path, output_format)
    return str(path)


def _file_format(path: Path, output_format: str) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if output_format == "png" and suffix in _graphviz().FORMATS:
        return str(suffix)
    return output_format


# -- Mermaid ----------------------------------------------------------------------------------------
_MERMAID_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MERMAID_KEYWORDS = {"end", "state", "note", "direction", "class", "classdef", "style", "as", "default", "click"}
_MERMAID_CLASSES = {
    "start": "stroke-width:3px",
    "aggregator": "stroke-width:3px,stroke-dasharray:8 2",
    "unknown": f"stroke-dasharray:4 4,stroke:{WARNING_COLOR},color:{WARNING_COLOR}",
    "active": "stroke-width:4px,font-weight:bold",
}


@dataclass(slots=True)
class _MermaidIds:
    """Mermaid ids: the state name when it is a plain identifier, else an alias ``s<n>`` declared once."""

    names: set[str]
    ids: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    def __call__(self, name: str) -> str:
        if name not in self.ids:
            if _MERMAID_ID.fullmatch(name) and name.lower() not in _MERMAID_KEYWORDS:
                self.ids[name] = name
            else:
                alias = _unique(f"s{len(self.aliases)}", self.names | set(self.ids.values()))
                self.ids[name] = alias
                self.aliases.append(f'    state "{_mermaid_text(name)}" as {alias}')
        return self.ids[name]


def _mermaid_text(text: str) -> str:
    return " ".join(text.replace('"', "'").replace(";", ",").replace("#", "").split())


def to_mermaid(model: GraphModel, config: GraphConfig | None = None) -> str:
    """The graph as a Mermaid ``stateDiagram-v2`` (for docs and GitHub).

    Args:
        model: What to draw, from :func:`extract`.
        config: Only ``rankdir`` and ``label_width`` are used.
    """
    config = config or GraphConfig()
    ids = _MermaidIds({node.id for node in model.nodes})
    for node in model.nodes:
        ids(node.id)
    lines = [f"    [*] --> {ids(n.id)}" for n in model.nodes if n.is_start]
    for edge in model.edges:
        parts = [f"[{shorten(edge.condition, config.label_width)}]"] if edge.condition else []
        parts += ["[otherwise]"] if edge.otherwise else []
        parts += [edge.label] if edge.label else []
        label = f": {_mermaid_text(' '.join(parts))}" if parts else ""
        lines.append(f"    {ids(edge.source)} --> {ids(edge.target)}{label}")
    lines += [f"    {ids(n.id)} --> [*]" for n in model.nodes if n.is_end]
    for name, style in _MERMAID_CLASSES.items():
        members = [ids(n.id) for n in model.nodes if name in n.classes]
        if members:
            lines += [f"    classDef {name} {style}", f"    class {','.join(members)} {name}"]
    head = ["stateDiagram-v2", f"    direction {config.rankdir}", *ids.aliases]
    return "\n".join([*head, *lines]) + "\n"
