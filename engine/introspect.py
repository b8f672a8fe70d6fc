"""Find a handler's transitions in its source (literal arguments only), for validation and graphs."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class FoundEdge:
    target: str
    kind: str  # "transition" | "dispatch" | "parallel" | "human" | "sub_blueprint"
    label: str = ""


def edges_in_source(handler: Callable[..., Any]) -> list[FoundEdge]:
    """Edges named by literal strings in ``handler``'s body; [] when its source is unavailable."""
    try:
        source = textwrap.dedent(inspect.getsource(handler))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return []
    found: list[FoundEdge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            found.extend(_edges_of_call(node.func.attr, node))
    return list(dict.fromkeys(found))


def _edges_of_call(method: str, call: ast.Call) -> list[FoundEdge]:
    if method == "transition_to":
        target = _literal_str(_argument(call, 0, "state"))
        return [FoundEdge(target, "transition")] if target else []
    if method == "dispatch_task":
        return _from_transitions(_argument(call, 2, "transitions"), "dispatch")
    if method == "dispatch_parallel":
        target = _literal_str(_argument(call, 1, "aggregate_into"))
        return [FoundEdge(target, "parallel", "all done")] if target else []
    if method == "await_human_approval":
        return _from_transitions(_argument(call, 2, "transitions"), "human")
    if method == "run_blueprint":
        return _from_transitions(_argument(call, 2, "transitions"), "sub_blueprint")
    return []


def _argument(call: ast.Call, position: int, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def _literal_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _from_transitions(node: ast.expr | None, kind: str) -> list[FoundEdge]:
    if not isinstance(node, ast.Dict):
        return []
    edges = []
    for key, value in zip(node.keys, node.values, strict=True):
        status, target = _literal_str(key), _literal_str(value)
        if status and target:
            edges.append(FoundEdge(target, kind, status))
    return edges
