"""The jobs list's filters, read from its query string (or from a bulk form that carries them)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from avtomatika.reads import JobQuery, parse_time

from .render import user_of

#: The "last ..." choices of the time filter, in seconds.
RANGES_S = {"15m": 900, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
FILTER_NAMES = ("blueprint", "status", "state", "q", "last", "from", "to", "data", "error")


def _time(text: str) -> float | None:
    """A filter's time (``datetime-local``, taken as UTC, or UNIX seconds); a value that is neither is ignored."""
    try:
        return parse_time(text)
    except ValueError:
        return None


def data_filter(text: str) -> tuple[tuple[str, str], ...]:
    """The ``initial_data`` field asked for as ``customer=acme`` (``size.n=2`` for a nested one); none
    without ``=``."""
    path, found, value = text.partition("=")
    return ((path.strip(), value.strip()),) if found and path.strip() else ()


def query_of(
    request: web.Request, now_s: float, values: Mapping[str, str] | None = None
) -> tuple[JobQuery, dict[str, str]]:
    """The filters of a jobs request (its query string, or ``values`` posted), and their raw values to
    refill the form."""
    values = request.query if values is None else values
    raw = {name: str(values.get(name, "")).strip() for name in FILTER_NAMES}
    after = _time(raw["from"])
    if raw["last"] in RANGES_S:
        after = max(after or 0.0, now_s - RANGES_S[raw["last"]])
    query = JobQuery(
        blueprint=raw["blueprint"] or None,
        status=raw["status"] or None,
        state=raw["state"] or None,
        id_prefix=raw["q"] or None,
        created_after=after,
        created_before=_time(raw["to"]),
        client=user_of(request).scope,
        data=data_filter(raw["data"]),
        error=raw["error"] or None,
    )
    return query, raw
