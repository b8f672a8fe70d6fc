"""Reading request bodies safely: size, JSON syntax, nesting depth, then a pydantic model."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .errors import ApiError

Model = TypeVar("Model", bound=BaseModel)


async def read_json(request: web.Request, *, max_depth: int, allow_empty: bool = False) -> Any:
    """The body as JSON; ApiError(400/413) naming the problem otherwise."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body larger than {request.client_max_size} bytes") from None
    if not raw.strip():
        if allow_empty:
            return None
        raise ApiError(400, "request body is empty; expected JSON")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    # Each level opens a bracket, so a body with few of them needs no walk (most bodies).
    if raw.count(b"{") + raw.count(b"[") > max_depth and _depth(value, max_depth) > max_depth:
        raise ApiError(400, f"request body is nested deeper than {max_depth} levels")
    return value


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests dicts and lists (counting stops past ``limit``)."""
    if not isinstance(value, dict | list):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse(model: type[Model], value: Any) -> Model:
    """Validate ``value`` with ``model``; a 400 naming the first bad field otherwise."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = f"{field}: {first['msg']}" if field else first["msg"]
        raise ApiError(400, message, field=field, details=[_plain(e) for e in errors]) from None


def _plain(error: Any) -> dict[str, Any]:
    return {"field": ".".join(str(p) for p in error["loc"]), "message": error["msg"], "type": error["type"]}
