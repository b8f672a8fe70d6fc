"""The graph model as a Mermaid ``stateDiagram-v2``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .dot import WARNING_COLOR, shorten
from .model import GraphConfig, GraphModel, unique_name

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


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
                alias = unique_name(f"s{len(self.aliases)}", self.names | set(self.ids.values()))
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
