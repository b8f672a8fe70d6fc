"""A blueprint's graph as plain data: states, edges and (optionally) a job's live marks; ids that stay
the same between renders; and the form history keeps (:func:`model_to_json`)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..blueprint import StateMachineBlueprint

logger = logging.getLogger(__name__)


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


def unique_name(candidate: str, taken: set[str]) -> str:
    unique, n = candidate, 1
    while unique in taken:
        n += 1
        unique = f"{candidate}-{n}"
    taken.add(unique)
    return unique


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
        node.dom_id = unique_name(node.dom_id, dom_ids)
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
