"""One logging configuration for the package: ``LOG_FORMAT=json|text`` and ``LOG_LEVEL``."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from .config import Config

_HANDLER_NAME = "avtomatika"


def configure_logging(config: Config) -> None:
    """Send the ``avtomatika`` loggers to stderr in the configured format (once per process)."""
    root = logging.getLogger("avtomatika")
    root.setLevel(config.LOG_LEVEL)
    if logging.getLogger().handlers or any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        return  # the application (or pytest) configured logging already
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER_NAME)
    if config.LOG_FORMAT == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
