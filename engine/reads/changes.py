"""What changed in a job's data between two points: :func:`diff` lists it, :func:`apply_changes` replays
what a step recorded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Change:
    """One top-level key of a dict that changed."""

    key: str
    kind: str  # added | removed | changed
    before: Any = None
    after: Any = None


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Top-level keys added, removed or changed from ``before`` to ``after``, by key."""
    changes = [Change(k, "removed", before[k]) for k in before if k not in after]
    for key, value in after.items():
        if key not in before:
            changes.append(Change(key, "added", after=value))
        elif before[key] != value:
            changes.append(Change(key, "changed", before[key], value))
    return sorted(changes, key=lambda c: c.key)


def apply_changes(target: dict[str, Any], changes: Any) -> None:
    """Apply a step's ``{"set": {...}, "unset": [...]}`` (see ``outcomes.changes_of``) to ``target``."""
    if not isinstance(changes, dict):
        return
    for key in changes.get("unset") or []:
        target.pop(key, None)
    values = changes.get("set")
    if isinstance(values, dict):
        target.update(values)
