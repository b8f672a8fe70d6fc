"""Typed aiohttp application keys of the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..engine import OrchestratorEngine

engine_key: web.AppKey[OrchestratorEngine] = web.AppKey("engine")
