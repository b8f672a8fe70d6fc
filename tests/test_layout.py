"""The tests' own layout: test modules and conftests outside ``support/``, everything else inside it.

- Every Python file under ``tests/`` outside ``support/`` is a ``test_*.py`` module or a ``conftest.py``.
- Nothing in ``support/`` is collected: no top-level ``test_*`` function, no ``Test*`` class. The storage
  and history contracts hold ``test_*`` methods in a ``*Contract`` base class; the ``Test*`` subclasses
  that run them are in the ``test_*.py`` modules of each backend.
- No module imports a test module or a conftest: what several modules share lives in ``support/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def relative(path: Path) -> str:
    return str(path.relative_to(TESTS))


def test_outside_support_only_test_modules_and_conftests() -> None:
    strays = [
        relative(path)
        for path in python_files()
        if SUPPORT not in path.parents and not (path.name.startswith("test_") or path.name == "conftest.py")
    ]
    assert strays == [], f"helpers belong in tests/support/: {strays}"


def test_support_holds_no_collected_tests() -> None:
    found = []
    for path in python_files():
        if SUPPORT not in path.parents:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                found.append(f"{relative(path)}: function {node.name}")
            elif isinstance(node, ast.ClassDef):
                tests = [
                    item.name
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test")
                ]
                if node.name.startswith("Test") or (tests and not node.name.endswith("Contract")):
                    found.append(f"{relative(path)}: class {node.name}")
    assert found == [], f"tests belong in test_*.py modules (a base class of shared tests is a *Contract): {found}"


def imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    found = []
    for path in python_files():
        for name in sorted(imported_modules(ast.parse(path.read_text(encoding="utf-8")))):
            first = name.split(".", 1)[0]  # tests/ is on sys.path: its modules are imported by their file name
            if first.startswith("test_") or first == "conftest":
                found.append(f"{relative(path)} imports {name}")
    assert found == [], f"shared pieces belong in tests/support/: {found}"
