"""Reading request bodies safely: size, JSON syntax, nesting depth, then a pydantic model."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .app_keys import engine_key
from .errors import ApiError

Model = TypeVar("Model", bound=BaseModel)


class BadJson(ValueError):
    """Text that is not JSON this engine accepts; the message says why."""


def decode_json(raw: bytes | str, *, max_depth: int) -> Any:
    """JSON text as Python values: the one parser of the API and the studio's forms.

    orjson refuses what could not be stored later (lone surrogates, numbers beyond a double, NaN)
    and reads integers beyond 64 bits as floats; nesting deeper than ``max_depth`` is refused here.
    Raises :class:`BadJson` naming the problem.
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeEncodeError:
            raise BadJson("text is not valid Unicode (a lone surrogate)") from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"not valid JSON: {exc}") from None
    # Each level opens a bracket, so a text with few of them needs no walk (most bodies).
    if raw.count(b"{") + raw.count(b"[") > max_depth and _depth(value, max_depth) > max_depth:
        raise BadJson(f"nested deeper than {max_depth} levels")
    return value


def is_json_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type (``application/merge-patch+json``)."""
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_body(request: web.Request) -> bytes:
    """The whole body, within ``MAX_REQUEST_BODY_BYTES`` (413) and ``BODY_READ_TIMEOUT_SECONDS`` (408)."""
    timeout_s = request.app[engine_key].config.BODY_READ_TIMEOUT_SECONDS
    try:
        if request.content.is_eof():  # the whole body has arrived (most bodies): reading it cannot wait
            return await request.read()
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body larger than {request.client_max_size} bytes") from None
    except TimeoutError:
        raise ApiError(
            408, f"request body not received within {timeout_s:g} s", headers={"Connection": "close"}
        ) from None


def max_depth(request: web.Request) -> int:
    """How deep JSON bodies may nest (``MAX_JSON_DEPTH``)."""
    return int(request.app[engine_key].config.MAX_JSON_DEPTH)


async def required_body(request: web.Request, model: type[Model]) -> Model:
    """The body, which ``model`` must accept."""
    return parse(model, await read_json(request))


async def optional_body(request: web.Request, model: type[Model]) -> Model:
    """An operation's body: empty means defaults; anything else must be an object ``model`` accepts."""
    value = await read_json(request, allow_empty=True)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return parse(model, value)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    """The body as JSON (nested ``MAX_JSON_DEPTH`` deep at most); ApiError (400, 408, 413, 415) naming
    the problem otherwise."""
    if request.body_exists and not is_json_type(request.content_type):
        raise ApiError(415, f"Content-Type must be application/json, not {request.content_type}", field="Content-Type")
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return None
        raise ApiError(400, "request body is empty; expected JSON")
    try:
        return decode_json(raw, max_depth=max_depth(request))
    except BadJson as exc:
        raise ApiError(400, f"request body is {exc}") from None


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
