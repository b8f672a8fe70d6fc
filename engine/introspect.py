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


def initial_data_keys(handler: Callable[..., Any]) -> list[tuple[str, Any]]:
    """The keys of ``initial_data`` ``handler`` reads (``initial_data["k"]``, ``initial_data.get("k",
    default)``, ``initial_data.k``), each with its literal default when it has one."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return []
    return _reads_of(tree)


def condition_keys(condition: str | None) -> list[tuple[str, Any]]:
    """The keys of ``initial_data`` a ``.when()`` condition reads, with the literal it compares each to."""
    if not condition:
        return []
    try:
        tree = ast.parse(condition, mode="eval")
    except SyntaxError:
        return []
    found: list[tuple[str, Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.comparators) == 1:
            key = _attribute_key(node.left)
            other = node.comparators[0]
            if key is not None:
                found.append((key, other.value if isinstance(other, ast.Constant) else None))
    found += [(key, None) for node in ast.walk(tree) if (key := _attribute_key(node)) is not None]
    return found


def _reads_of(tree: ast.AST) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_initial_data(node.value):
            key = _literal_str(node.slice)
            if key:
                found.append((key, None))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = _literal_str(node.args[0]) if node.args and _is_initial_data(node.func.value) else None
            if key:
                default = node.args[1] if len(node.args) > 1 else None
                found.append((key, default.value if isinstance(default, ast.Constant) else _empty(default)))
        elif (key := _attribute_key(node)) is not None:
            found.append((key, None))
    return found


def _is_initial_data(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "initial_data") or (
        isinstance(node, ast.Name) and node.id == "initial_data"
    )


def _attribute_key(node: ast.AST) -> str | None:
    """``k`` of ``context.initial_data.k`` (or ``initial_data.k``), but not of its methods."""
    if isinstance(node, ast.Attribute) and _is_initial_data(node.value) and node.attr not in _DICT_METHODS:
        return node.attr
    return None


def _empty(node: ast.expr | None) -> Any:
    """The empty list or dict a ``.get(key, [])`` defaults to, as an example value."""
    if isinstance(node, ast.List):
        return []
    if isinstance(node, ast.Dict):
        return {}
    return None


_DICT_METHODS = frozenset({"get", "items", "keys", "values", "copy", "setdefault", "pop", "update"})
