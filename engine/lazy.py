"""A package's public names imported when first used (PEP 562), for packages whose import stays light.

``avtomatika`` and ``avtomatika.history`` use it, so that SQLite history's own process
(:mod:`avtomatika.history.sqlite_process`) starts without importing the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``: ``where`` maps each public name to the module
    (relative to ``package``) it lives in; ``namespace`` is the package's ``globals()``."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        namespace[name] = value  # found once: later lookups never reach this function
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *where])

    return __getattr__, __dir__
