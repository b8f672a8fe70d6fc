"""The write boundaries of the engine, enumerated from its source for the crash-point harness.

A boundary is ``<Class.method>:<write>`` (see :mod:`avtomatika.server.crashpoints`, which names the one it
reached the same way at run time): every method of the engine's classes that calls a storage write,
the committer (whose ``apply``/``update_job`` commit and ``create_job`` creates) or a history write,
directly or from a function nested in it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from avtomatika.server.crashpoints import COMMITTER_WRITES, HISTORY_WRITES, STORAGE_WRITES

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engine"
#: The modules of the step, result, fan-in, sub-job, operator, bulk, worker-expiry and history paths:
#: the facade, the whole write side (``runtime/``, but the committer: its calls are the writes) and the
#: history writer.
PATH_MODULES = (
    "engine.py",
    *sorted(f"runtime/{p.name}" for p in (ENGINE_DIR / "runtime").glob("*.py") if p.name != "commits.py"),
    "history/writer.py",
)


def write_boundaries() -> set[str]:
    """Every boundary found in :data:`PATH_MODULES`."""
    found: set[str] = set()
    for name in PATH_MODULES:
        tree = ast.parse((ENGINE_DIR / name).read_text())
        for klass in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            for method in klass.body:
                if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                    found |= {f"{klass.name}.{method.name}:{write}" for write in _writes(method)}
    return found


def _writes(method: ast.AST) -> set[str]:
    writes: set[str] = set()
    for node in ast.walk(method):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Attribute | ast.Name):
            continue
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
        if owner == "storage" and node.attr in STORAGE_WRITES:
            writes.add(node.attr)
        elif owner == "committer" and node.attr in COMMITTER_WRITES:
            writes.add(COMMITTER_WRITES[node.attr])
        elif owner == "history" and node.attr in HISTORY_WRITES:
            writes.add(node.attr)
    return writes
