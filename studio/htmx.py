"""htmx request details and response headers, in one small place.

Handlers choose between a whole page and a fragment by :func:`htmx` (the ``HX-Request`` header),
never by the id of the element that fired. ``HX-*`` response headers are set only by the tiny
functions below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class HtmxDetails:
    """What htmx says about a request (all false/None for a plain browser request)."""

    request: bool
    boosted: bool
    target: str | None
    trigger: str | None
    current_url: str | None

    def __bool__(self) -> bool:
        return self.request


def htmx(request: web.Request) -> HtmxDetails:
    """The ``HX-*`` request headers of ``request``."""
    headers = request.headers
    return HtmxDetails(
        request=headers.get("HX-Request") == "true",
        boosted=headers.get("HX-Boosted") == "true",
        target=headers.get("HX-Target"),
        trigger=headers.get("HX-Trigger"),
        current_url=headers.get("HX-Current-URL"),
    )


def push_url(response: web.StreamResponse, url: str) -> web.StreamResponse:
    """Make htmx push ``url`` into the browser's history."""
    response.headers["HX-Push-Url"] = url
    return response


def retarget(response: web.StreamResponse, selector: str, swap: str | None = None) -> web.StreamResponse:
    """Swap the response into ``selector`` instead of the requesting element's target."""
    response.headers["HX-Retarget"] = selector
    if swap is not None:
        response.headers["HX-Reswap"] = swap
    return response


def trigger(response: web.StreamResponse, event: str, detail: Any = None) -> web.StreamResponse:
    """Fire ``event`` in the browser once the response is swapped."""
    response.headers["HX-Trigger"] = json.dumps({event: detail}) if detail is not None else event
    return response


def location(response: web.StreamResponse, url: str) -> web.StreamResponse:
    """Make htmx navigate to ``url`` (an htmx request, with history), as a redirect would."""
    response.headers["HX-Location"] = url
    return response


def full_redirect(response: web.StreamResponse, url: str) -> web.StreamResponse:
    """Make the browser load ``url`` as a whole page (the new page has a live stream of its own)."""
    response.headers["HX-Redirect"] = url
    return response


def redirect(request: web.Request, url: str) -> web.Response:
    """A whole-page redirect to ``url`` that works for htmx (``HX-Redirect``) and plain forms (303).

    Not ``HX-Location``: that swaps the new page into the old ``<body>``, whose ``sse-connect``
    would keep streaming the old page's events.
    """
    if htmx(request):
        response = web.Response(status=204)
        full_redirect(response, url)
        return response
    raise web.HTTPSeeOther(url)
