"""Routes declared with their documentation: each handler's path and its OpenAPI :class:`Operation` in one
decorator, the tag and security of a module's routes named once by its :class:`Routes` table.

Client routes are served under each of :data:`PREFIXES` (``/api/v1/jobs`` and ``/api/jobs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel

PREFIXES = ("/api/v1", "/api")

Security = Literal["client", "worker"] | None
#: An answer: a pydantic model (JSON), None (no body), or {content type: text schema description}.
Answer = type[BaseModel] | dict[str, str] | None


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """What the OpenAPI document says about one handler (its description is the handler's docstring)."""

    summary: str
    responses: dict[int, Answer] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_description: str = ""
    query: tuple[Query, ...] = ()
    websocket: bool = False
    #: Its route table's, unless named here.
    tag: str = ""
    security: Security = None


H = TypeVar("H", bound=Callable[..., Any])


def documented(operation: Operation) -> Callable[[H], H]:
    """Attach ``operation`` to a handler: the OpenAPI document describes the handler's routes with it."""

    def mark(handler: H) -> H:
        handler.openapi = operation  # type: ignore[attr-defined]
        return handler

    return mark


class Routes:
    """A module's routes, each declared with its operation; ``tag``, ``security`` and the ``errors`` every
    one of them may answer are the module's (an operation naming its own tag or security keeps it)."""

    def __init__(self, tag: str, security: Security = None, errors: dict[int, str] | None = None) -> None:
        self.tag = tag
        self.security = security
        self.errors = errors or {}
        self.table = web.RouteTableDef()

    def get(self, path: str, operation: Operation) -> Callable[[H], H]:
        return self.route("GET", path, operation)

    def post(self, path: str, operation: Operation) -> Callable[[H], H]:
        return self.route("POST", path, operation)

    def patch(self, path: str, operation: Operation) -> Callable[[H], H]:
        return self.route("PATCH", path, operation)

    def delete(self, path: str, operation: Operation) -> Callable[[H], H]:
        return self.route("DELETE", path, operation)

    def route(self, method: str, path: str, operation: Operation) -> Callable[[H], H]:
        operation = replace(
            operation,
            tag=operation.tag or self.tag,
            security=operation.security or self.security,
            errors={**self.errors, **operation.errors},
        )

        def add(handler: H) -> H:
            self.table.route(method, path)(documented(operation)(handler))
            return handler

        return add

    def add_to(self, app: web.Application) -> None:
        """Serve these routes as their paths say."""
        app.router.add_routes(self.table)

    def add_to_client_api(self, app: web.Application) -> None:
        """Serve these routes, whose paths are relative to the client API, under each of :data:`PREFIXES`."""
        for prefix in PREFIXES:
            app.router.add_routes(
                [
                    web.route(r.method, prefix + r.path, r.handler, **r.kwargs)
                    for r in self.table
                    if isinstance(r, web.RouteDef)
                ]
            )
