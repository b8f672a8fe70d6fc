"""Error signatures: what quarantined jobs that failed "the same way" share, so they are triaged together.

A signature is the task type, the error code and the message with what differs from job to job (ids,
numbers, quoted values) replaced by placeholders: ``PERMANENT_ERROR: file 123 corrupt`` and
``PERMANENT_ERROR: file 456 corrupt`` of one task type have the same signature.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: Longest normalised message kept (the rest of a long traceback would split groups for nothing).
MAX_MESSAGE_CHARS = 200
#: The task type of a job quarantined by its handler (it holds no task).
NO_TASK = "handler"

_CODE = re.compile(r"^([A-Z][A-Z0-9_]*):\s*(.*)$", re.DOTALL)
_REPLACEMENTS = (
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "<value>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<id>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<id>"),
    (re.compile(r"(?<![A-Za-z0-9])\d+(?:\.\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalise_message(message: str) -> str:
    """``message`` with quoted values, ids and numbers replaced, whitespace collapsed, cut short."""
    text = message
    for pattern, placeholder in _REPLACEMENTS:
        text = pattern.sub(placeholder, text)
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class ErrorSignature:
    """What a group of failed jobs shares: task type, error code, normalised message."""

    task_type: str
    code: str
    message: str

    @property
    def key(self) -> str:
        """A short stable id of the signature (for URLs and element ids)."""
        text = "\0".join((self.task_type, self.code, self.message))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "task_type": self.task_type, "code": self.code, "message": self.message}


def error_signature(error: str | None, task_type: str | None = None) -> ErrorSignature:
    """The signature of a job's ``error`` (``"CODE: message"`` or a bare message) raised by ``task_type``
    (None: quarantined by its handler)."""
    text = (error or "").strip()
    found = _CODE.match(text)
    code, message = (found.group(1), found.group(2)) if found else ("", text)
    return ErrorSignature(task_type or NO_TASK, code, normalise_message(message) or "no error message")
