"""The graph model as Graphviz DOT text: states, edges, conditions wrapped to fit."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AvtomatikaError
from .model import EdgeModel, GraphConfig, GraphModel, NodeModel, slug

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

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
