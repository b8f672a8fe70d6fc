"""The house stays easy to find one's way in: no module over ~500 lines and no function over ~50 lines
of code (docstrings aside) without a one-line reason at its top, a comment starting ``# Long:``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("engine", "studio")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 50
REASON = "# Long:"


def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return 0


def _says_why(lines: list[str], start: int, end: int) -> bool:
    """Whether a ``# Long:`` comment is among ``lines[start:end]`` (0-based)."""
    return any(line.strip().startswith(REASON) for line in lines[start:end])


def long_without_reason(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    found = []
    name = path.relative_to(REPO)
    if len(lines) > MAX_MODULE_LINES and not _says_why(lines, 0, _docstring_lines(tree) + 5):
        found.append(f"{name}: {len(lines)} lines")
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        code = node.end_lineno - node.lineno + 1 - _docstring_lines(node)  # type: ignore[operator]
        first = node.body[1] if _docstring_lines(node) and len(node.body) > 1 else node.body[0]
        if code > MAX_FUNCTION_LINES and not _says_why(lines, node.lineno, first.lineno):
            found.append(f"{name}:{node.lineno} {node.name}(): {code} lines")
    return found


def test_long_modules_and_functions_say_why():
    found = [
        entry
        for folder in SOURCES
        for path in sorted((REPO / folder).rglob("*.py"))
        for entry in long_without_reason(path)
    ]
    assert found == [], "split these, or say why not in a '# Long: ...' line at their top"


def test_the_check_sees_a_long_function_and_accepts_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("test_code_sizes.REPO", tmp_path)
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    silent = tmp_path / "silent.py"
    silent.write_text(f'def f():\n    """Doc."""\n{body}\n')
    reasoned = tmp_path / "reasoned.py"
    reasoned.write_text(f'def f():\n    """Doc."""\n    # Long: one table, read top to bottom\n{body}\n')
    assert long_without_reason(silent) == ["silent.py:1 f(): 61 lines"]
    assert long_without_reason(reasoned) == []
