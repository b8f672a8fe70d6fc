"""Imports go one way: `import avtomatika` never pulls in the studio or an optional dependency.

The core must import, and an engine must be constructible, on a bare install: the studio
(`avtomatika.studio`, jinja2, aiohttp_jinja2), graph rendering (graphviz), notebooks (ipywidgets) and
the optional backends (redis, asyncpg, sqlite3, opentelemetry) are imported lazily, by the code that
uses them. Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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


# -- the layers in the source (every import statement, also inside functions) ---------------------------

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"engine": "avtomatika", "studio": "avtomatika.studio"}
#: Where aiohttp's server side may be used: the HTTP faces and the process that serves them.
WEB_SIDE = ("avtomatika.api", "avtomatika.server")
#: What the engine (everything but the studio) never imports: the studio and its libraries.
FACE_LIBRARIES = ("avtomatika.studio", "jinja2", "aiohttp_jinja2", "ipywidgets")
#: The one import of the studio by the engine: its process mounts it when STUDIO_ENABLED (lazily).
STUDIO_MOUNT = ("avtomatika.server.lifecycle", "avtomatika.studio")
#: The only module under the faces that imports them: the process serving them.
SERVES_FACES = "avtomatika.server.lifecycle"
#: The faces, which read and act through the engine's reader and facade only.
FACES = ("avtomatika.api", "avtomatika.studio")
#: Where the engine keeps state: a face never imports them, nor reaches ``engine.storage``/``.history``.
STORES = ("avtomatika.storage", "avtomatika.history")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _modules() -> dict[str, ast.Module]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            found[name] = (ast.parse(path.read_text()), path.name == "__init__.py")
    return found


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks: imports for annotations, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for child in node.body for n in ast.walk(child) if hasattr(n, "lineno")}
    return lines


def imports_of(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """Every module (and ``module.name``) ``name`` imports at run time, wherever the statement is."""
    package = name if is_package else name.rpartition(".")[0]
    skipped = _type_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def layering_problems(modules: dict[str, tuple[ast.Module, bool]]) -> list[str]:
    problems = []
    for name, (tree, is_package) in sorted(modules.items()):
        for target in sorted(imports_of(name, tree, is_package)):
            face = _within(name, FACES)
            if _within(target, ("aiohttp.web",)) and not _within(name, (*WEB_SIDE, "avtomatika.studio")):
                problems.append(f"{name} imports {target}: aiohttp's server side belongs in api/ or server/")
            mount = name == STUDIO_MOUNT[0] and _within(target, STUDIO_MOUNT[1:])
            if not _within(name, ("avtomatika.studio",)) and _within(target, FACE_LIBRARIES) and not mount:
                problems.append(f"{name} imports {target}: the engine does not know its faces")
            if not face and name != SERVES_FACES and _within(target, ("avtomatika.api",)):
                problems.append(f"{name} imports {target}: the engine's sides do not know its faces")
            if face and _within(target, STORES):
                problems.append(f"{name} imports {target}: a face reads through avtomatika.reads")
        if _within(name, FACES):
            source = ast.unparse(tree)
            problems += [
                f"{name} reaches engine.{store}" for store in ("storage", "history") if f"engine.{store}" in source
            ]
    return problems


def test_the_layers_hold_in_the_source():
    assert layering_problems(_modules()) == []


def test_the_layering_check_sees_a_face_reaching_storage():
    face = ast.parse(
        "def handler(engine):\n"
        "    from aiohttp import web\n"
        "    from avtomatika.storage.redis import RedisStorage\n"
        "    return engine.storage\n"
    )
    runtime = ast.parse("from ..studio import setup_studio\nfrom aiohttp import web\nfrom ..api.views import iso\n")
    problems = layering_problems({"avtomatika.api.probe": (face, False), "avtomatika.runtime.probe": (runtime, False)})
    assert problems == [
        "avtomatika.api.probe imports avtomatika.storage.redis: a face reads through avtomatika.reads",
        "avtomatika.api.probe imports avtomatika.storage.redis.RedisStorage: a face reads through avtomatika.reads",
        "avtomatika.api.probe reaches engine.storage",
        "avtomatika.runtime.probe imports aiohttp.web: aiohttp's server side belongs in api/ or server/",
        "avtomatika.runtime.probe imports avtomatika.api.views: the engine's sides do not know its faces",
        "avtomatika.runtime.probe imports avtomatika.api.views.iso: the engine's sides do not know its faces",
        "avtomatika.runtime.probe imports avtomatika.studio: the engine does not know its faces",
        "avtomatika.runtime.probe imports avtomatika.studio.setup_studio: the engine does not know its faces",
    ]
