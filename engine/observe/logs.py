"""One logging configuration for the package: ``LOG_FORMAT=json|text`` and ``LOG_LEVEL``.

Every module logs to ``logging.getLogger(__name__)``, under the ``avtomatika`` logger, which
:func:`configure_logging` configures once for all of them. Log calls about a job or a task pass
its identity with ``extra=`` (:func:`log_fields` builds it): JSON lines carry ``job_id``,
``blueprint``, ``state``, ``task_id`` and ``worker_id`` as fields of their own, and text lines end
with them as ``key=value`` pairs.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from ..config import Config

if TYPE_CHECKING:
    from ..models import Job, Task

#: The logger every module of the package logs under.
PACKAGE_LOGGER = "avtomatika"
#: The structured fields a log call may pass with ``extra=``, in the order text lines show them.
CONTEXT_FIELDS = ("job_id", "blueprint", "state", "task_id", "worker_id")

_HANDLER_NAME = "avtomatika"
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def log_fields(job: Job | None = None, task: Task | None = None, **more: Any) -> dict[str, Any]:
    """``extra=`` for a log call about ``job`` and/or ``task``: their ids, blueprint and state.

    ``logger.warning("task lost", extra=log_fields(job, task, worker_id=w))``
    """
    fields: dict[str, Any] = {}
    if job is not None:
        fields.update(job_id=job.id, blueprint=job.blueprint, state=job.state)
    if task is not None:
        fields.update(job_id=task.job_id, task_id=task.id)
        if task.state:
            fields.setdefault("state", task.state)
        if task.worker_id:
            fields["worker_id"] = task.worker_id
    fields.update(more)
    return fields


class TextFormatter(logging.Formatter):
    """A readable line, ending with the record's context fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Appended to the message line, before any traceback the base class adds after it.
        line = super().formatMessage(record)
        pairs = [f"{name}={value}" for name in CONTEXT_FIELDS if (value := getattr(record, name, None)) is not None]
        return f"{line} {' '.join(pairs)}" if pairs else line


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``LOG_FORMAT``: ``json`` (one object per line, extra fields included) or ``text``."""
    if log_format == "json":
        return JsonFormatter(_JSON_FORMAT, rename_fields={"levelname": "level", "asctime": "time", "name": "logger"})
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"LOG_FORMAT must be 'json' or 'text', not {log_format!r}")


def configure_logging(config: Config | None = None, *, stream: TextIO | None = None, force: bool = False) -> None:
    """Configure the package's logging from ``config`` (``Config()`` when omitted).

    Sets the ``avtomatika`` logger's level to ``LOG_LEVEL``. When the application has not configured
    logging (the root logger has no handler) or with ``force``, also sends the package's records to
    ``stream`` (stderr) in ``LOG_FORMAT``, and only there: they no longer propagate to the root
    logger, so none is written twice. Called again (another engine starting), it updates that
    handler rather than adding one.

    Args:
        config: Where ``LOG_LEVEL`` and ``LOG_FORMAT`` come from.
        stream: Where lines go; stderr by default.
        force: Install the handler even when the application configured logging.
    """
    config = config or Config()
    package = logging.getLogger(PACKAGE_LOGGER)
    package.setLevel(config.LOG_LEVEL)
    handler = next((h for h in package.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        if logging.getLogger().handlers and not force:
            return  # the application (or pytest) configured logging: our records go to its handlers
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name(_HANDLER_NAME)
        package.addHandler(handler)
        package.propagate = False
    elif stream is not None and isinstance(handler, logging.StreamHandler):
        handler.setStream(stream)
    handler.setFormatter(make_formatter(config.LOG_FORMAT))


def reset_logging() -> None:
    """Undo :func:`configure_logging`: remove its handler, propagate to the root logger again."""
    package = logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in package.handlers if h.get_name() == _HANDLER_NAME]:
        package.removeHandler(handler)
        handler.close()
    package.propagate = True
    package.setLevel(logging.NOTSET)
