"""The HTTP server around the API application: JSON for protocol errors, and slow clients cut.

- **Protocol errors** (a malformed request line, an over-long URL or header, bad chunked encoding)
  are answered by aiohttp's connection handler before any route or middleware sees the request, as
  plain text. :class:`JsonErrorRequestHandler` answers them as JSON ``{"error": ...}`` like every
  other error of the API.
- **Slow clients.** aiohttp closes a connection whose handler has been idle, waiting for the next
  request head, for ``keepalive_timeout``: counted from the connection's opening and from the end of
  each answer, it bounds the time a request head may take to arrive. Set to
  ``HEADER_READ_TIMEOUT_SECONDS``, a client trickling half a request is cut then, while a request
  that has arrived (a long poll, an event stream, a WebSocket) is never timed out by it.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..config import Config

logger = logging.getLogger(__name__)

#: Longest protocol error message echoed back (aiohttp's quote the offending bytes).
MAX_ERROR_CHARS = 300


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering protocol errors as JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            logger.error("HTTP error %d serving %s", status, request.remote, exc_info=exc)
            text = "internal error; see the engine's log"
        else:
            text = " ".join(str(message or HTTPStatus(status).phrase).split())[:MAX_ERROR_CHARS]
            logger.info("refused a malformed request from %s: %s", request.remote, text)
        if request.writer.output_size > 0:  # as aiohttp does: an answer has begun, only closing is left
            raise ConnectionError("response is sent already, cannot send another one with the error")
        response = web.Response(status=status, body=orjson.dumps({"error": text}), content_type="application/json")
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """aiohttp's low-level server, making :class:`JsonErrorRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections answer protocol errors as JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds its Server inside the application (Application._make_handler); giving
        # that object our class changes only how it makes connections (Server has no __slots__).
        server.__class__ = JsonErrorServer
        return server


def make_runner(app: web.Application, config: Config, **kwargs: Any) -> ApiRunner:
    """A runner for ``app``, with ``HEADER_READ_TIMEOUT_SECONDS`` as aiohttp's keep-alive timeout."""
    return ApiRunner(app, keepalive_timeout=config.HEADER_READ_TIMEOUT_SECONDS, **kwargs)
