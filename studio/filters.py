"""The jobs list's filters, read from its query string (or from a bulk form that carries them)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from avtomatika.reads import JobQuery, parse_time
from avtomatika.studio.middleware import StudioError
from avtomatika.studio.render import user_of

#: The "last ..." choices of the time filter, in seconds.
RANGES_S = {"15m": 900, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
FILTER_NAMES = ("blueprint", "status", "state", "q", "last", "from", "to", "data", "error")


def _time(name: str, text: str) -> float | None:
    """A filter's time (``datetime-local``, taken as UTC, or UNIX seconds); StudioError for anything else."""
    try:
        return parse_time(text)
    except ValueError:
        raise StudioError(400, "Invalid filter", f"{name}: {text!r} is not a date and time.") from None


def data_filter(text: str) -> tuple[tuple[str, str], ...]:
    """The ``initial_data`` field asked for as ``customer=acme`` (``size.n=2`` for a nested one).

    A filter that does not say which field is refused (StudioError), not left out: "all matching"
    would then take every job."""
    if not text:
        return ()
    path, found, value = text.partition("=")
    if not found or not path.strip():
        raise StudioError(400, "Invalid filter", f"Input field: write it as name=value (customer=acme), not {text!r}.")
    return ((path.strip(), value.strip()),)


def query_of(
    request: web.Request, now_s: float, values: Mapping[str, str] | None = None
) -> tuple[JobQuery, dict[str, str]]:
    """The filters of a jobs request (its query string, or ``values`` posted), and their raw values to
    refill the form."""
    values = request.query if values is None else values
    raw = {name: str(values.get(name, "")).strip() for name in FILTER_NAMES}
    after = _time("From", raw["from"])
    if raw["last"] in RANGES_S:
        after = max(after or 0.0, now_s - RANGES_S[raw["last"]])
    query = JobQuery(
        blueprint=raw["blueprint"] or None,
        status=raw["status"] or None,
        state=raw["state"] or None,
        id_prefix=raw["q"] or None,
        created_after=after,
        created_before=_time("To", raw["to"]),
        client=user_of(request).scope,
        data=data_filter(raw["data"]),
        error=raw["error"] or None,
    )
    return query, raw
