"""Fenced code blocks of a Markdown file, in order, with the line they start on.

Used by the documentation tests so that a failing sample is named by its file and line
(``docs/seed-readme.md:63``) and so that a block cannot silently disappear from a test.
Fences follow CommonMark: three or more backticks or tildes, indented by up to three spaces, or
more inside list items (the indentation of the opening fence is removed from the block's lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

_OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced block: ``line`` is the 1-based line of its first code line in ``path``."""

    path: Path
    line: int
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"

    def compile(self) -> CodeType:
        """The block compiled so that tracebacks point at the Markdown file's own line numbers."""
        return compile("\n" * (self.line - 1) + self.code, str(self.path), "exec")


def code_blocks(path: str | Path, language: str | None = "python") -> list[CodeBlock]:
    """Every fenced block of ``path`` whose info string starts with ``language`` (all blocks if None).

    Raises ``ValueError`` for a fence that is never closed (a broken document, not an empty block).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[CodeBlock] = []
    index = 0
    while index < len(lines):
        opening = _OPENING.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = len(opening["indent"].expandtabs(4))
        fence = opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            body.append(_dedent(lines[end], indent))
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: the code fence {fence!r} is never closed")
        block_language = opening["info"].lower()
        if language is None or block_language == language.lower():
            code = "\n".join(body) + "\n" if body else ""
            blocks.append(CodeBlock(path, index + 2, block_language, code))
        index = end + 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    """Remove up to ``indent`` columns of leading whitespace, as CommonMark does inside a fence."""
    expanded = line.expandtabs(4)
    stripped = len(expanded) - len(expanded.lstrip(" "))
    return expanded[min(indent, stripped) :]
