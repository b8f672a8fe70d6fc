"""JSON responses of the API, encoded with orjson (the stdlib encoder was a few % of every request)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as an ``application/json; charset=utf-8`` response (what ``web.json_response`` sends)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", charset="utf-8")


def model_response(model: BaseModel, status: int = 200, **dump: Any) -> web.Response:
    """A response model (engine/api/payloads.py) as JSON; ``dump``: options of ``model_dump``."""
    return web.Response(
        body=model.model_dump_json(**dump).encode(), status=status, content_type="application/json", charset="utf-8"
    )
