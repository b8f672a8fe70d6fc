"""Imports go one way: `import avtomatika` never pulls in the studio or an optional dependency.

The core must import, and an engine must be constructible, on a bare install: the studio
(`avtomatika.studio`, jinja2, aiohttp_jinja2), graph rendering (graphviz), notebooks (ipywidgets) and
the optional backends (redis, asyncpg, sqlite3, opentelemetry) are imported lazily, by the code that
uses them. Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

BLOCKED = (
    "avtomatika.studio",
    "jinja2",
    "aiohttp_jinja2",
    "graphviz",
    "ipywidgets",
    "redis",
    "asyncpg",
    "sqlite3",
    "opentelemetry",
)

# Every script starts by reading the blocked names from argv.
_PREAMBLE = """
import json
import sys

BLOCKED = json.loads(sys.argv[1])


def is_blocked(name):
    return any(name == b or name.startswith(b + ".") for b in BLOCKED)
"""

# A `None` entry in sys.modules makes any import of that module (and its submodules) fail. An import
# the core guards with `try/except ImportError` would still pass, so the import statements run by
# avtomatika's own modules are recorded too, and any of them naming a blocked module counts.
_BLOCK_AND_RECORD = """
import builtins
import importlib.util

for name in BLOCKED:
    sys.modules[name] = None

attempts = []
_real_import = builtins.__import__


def _recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if importer == "avtomatika" or importer.startswith("avtomatika."):
        target = name
        if level:
            package = (globals or {}).get("__package__") or importer
            target = importlib.util.resolve_name("." * level + name, package)
        for full in [target, *(f"{target}.{item}" for item in fromlist or ())]:
            if is_blocked(full):
                attempts.append(f"{importer} imports {full}")
                break
    return _real_import(name, globals, locals, fromlist, level)


builtins.__import__ = _recording_import
"""

# Build a blueprint-less engine the way the README does, inside a running loop.
_CONSTRUCT = """
import asyncio

import avtomatika
from avtomatika import OrchestratorEngine
from avtomatika.config import Config
from avtomatika.storage import MemoryStorage


async def construct():
    return OrchestratorEngine(MemoryStorage(), Config())


engine = asyncio.run(construct())
"""

_REPORT_ATTEMPTS = """
print(json.dumps(sorted(set(attempts))))
"""

# One entry per blocked name that got loaded, with how many of its modules (redis pulls in ~100).
_REPORT_LOADED = """
loaded = {b: sum(m == b or m.startswith(b + ".") for m in sys.modules) for b in BLOCKED}
print(json.dumps([f"{b} ({n} modules)" for b, n in loaded.items() if n]))
"""


def _run(script: str, tmp_path) -> list[str]:
    """Run `script` in a fresh interpreter (cwd: an empty dir) and return the JSON list it prints last."""
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(BLOCKED)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, (
        "importing avtomatika and building an OrchestratorEngine(MemoryStorage(), Config()) failed with "
        f"{', '.join(BLOCKED)} blocked; the core must import those lazily, where they are used.\n"
        f"--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_imports_and_builds_an_engine_with_optional_modules_blocked(tmp_path):
    attempts = _run(_PREAMBLE + _BLOCK_AND_RECORD + _CONSTRUCT + _REPORT_ATTEMPTS, tmp_path)
    assert attempts == [], (
        "the core imports studio or optional modules at import or construction time (even guarded by "
        "try/except, that pulls them in whenever they are installed):\n" + "\n".join(attempts)
    )


def test_core_import_leaves_optional_modules_unloaded(tmp_path):
    # Nothing blocked: catches importlib.import_module() and imports made on the core's behalf.
    loaded = _run(_PREAMBLE + _CONSTRUCT + _REPORT_LOADED, tmp_path)
    assert loaded == [], (
        "after `import avtomatika` and building an engine these modules are loaded, although the core "
        "must not need them until they are used: " + ", ".join(loaded)
    )


def test_the_recorder_sees_guarded_imports(tmp_path):
    # Guards the check itself: an import that the core wraps in try/except must still be reported.
    probe = """
guarded = (
    "try:\\n    import redis.asyncio\\nexcept ImportError:\\n    pass\\n"
    "try:\\n    from opentelemetry import trace\\nexcept ImportError:\\n    pass\\n"
)
exec(guarded, {"__name__": "avtomatika.probe", "__package__": "avtomatika"})
"""
    attempts = _run(_PREAMBLE + _BLOCK_AND_RECORD + probe + _REPORT_ATTEMPTS, tmp_path)
    assert attempts == [
        "avtomatika.probe imports opentelemetry",
        "avtomatika.probe imports redis.asyncio",
    ]
