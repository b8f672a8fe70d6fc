"""Rendering: the Jinja environment, the page layout, and page / fragment / JSON responses.

A handler computes its page's context (a dataclass from :mod:`avtomatika.studio.contexts`) once,
then answers with :func:`render_page`, :func:`render_fragment` or :func:`json_response`. Templates get
the context's fields, ``user`` (the session) and, on pages, ``layout``.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from avtomatika.reads import NavCounts, diff
from avtomatika.studio.access import CSRF_FIELD, CSRF_HEADER, Session
from avtomatika.studio.app_keys import access_key, data_key, prefix_key, session_key
from avtomatika.studio.htmx import htmx
from avtomatika.studio.marks import overlay
from avtomatika.studio.ui import FILTERS, TONES, bar, palette_css

logger = logging.getLogger(__name__)

#: Pinned vendored front-end files (static/vendor/), with their licenses beside them.
HTMX_JS = "vendor/htmx-2.0.11.min.js"
HTMX_SSE_JS = "vendor/htmx-ext-sse-2.2.4.js"


def package_dir(package: str) -> Path:
    """The folder of a data package (templates/, static/): in the wheel, or in the source tree."""
    name = package.rsplit(".", 1)[-1]
    here = Path(__file__).resolve().parent
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        spec = None
    found = [Path(p) for p in (spec.submodule_search_locations or []) if Path(p).is_dir()] if spec else []
    for candidate in [*found, here / name, here.parent / name]:
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"the studio's files are missing: no folder for {package}")


TEMPLATES_DIR = package_dir("avtomatika.studio.templates")
STATIC_DIR = package_dir("avtomatika.studio.static")


def setup_templates(app: web.Application, prefix: str, user_templates: Path | None = None) -> jinja2.Environment:
    """The Jinja environment: autoescaped, async, a user's ``templates/`` first.

    A user's template may extend ours as ``{% extends "default:base.html" %}``.
    """
    defaults = jinja2.FileSystemLoader(TEMPLATES_DIR)
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(user_templates)] if user_templates else []
    loaders += [defaults, jinja2.PrefixLoader({"default": defaults}, delimiter=":")]
    env = aiohttp_jinja2.setup(app, loader=jinja2.ChoiceLoader(loaders), **_OPTIONS)
    _equip(env, prefix)
    return env


#: How every studio environment is made: autoescaped, async, strict about undefined names.
_OPTIONS: dict[str, Any] = {
    "autoescape": True,
    "enable_async": True,
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
}


def _equip(env: jinja2.Environment, prefix: str | None, *, new_tab: bool = False) -> None:
    env.filters.update(FILTERS)
    env.filters["overlay"] = lambda mark: str(overlay(mark))  # a plain string: escaped into data-overlay
    env.globals.update(
        P=prefix,
        NEW_TAB=new_tab,
        static=lambda path: f"{prefix}/static/{path}",
        HTMX_JS=HTMX_JS,
        HTMX_SSE_JS=HTMX_SSE_JS,
        TONES=TONES,
        PALETTE_CSS=Markup(palette_css()),
        CSRF_FIELD=CSRF_FIELD,
        CSRF_HEADER=CSRF_HEADER,
        bar=bar,
        diff=diff,
    )


def partials(prefix: str | None = None) -> jinja2.Environment:
    """The studio's templates outside a request, rendered synchronously, for the notebook's widgets: they
    render the studio's partials (``_moment.html``, ``_job_row.html``, the badges) as they are. Links start
    with ``prefix`` (the studio's URL, when it is served; job ids are not links without it) and open in a
    new tab, away from the notebook."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), **{**_OPTIONS, "enable_async": False})
    _equip(env, prefix, new_tab=True)
    return env


@dataclass(slots=True)
class Layout:
    """What ``base.html`` shows around every page."""

    title: str
    section: str
    counts: NavCounts
    access_note: str
    live_url: str | None


def wants_json(request: web.Request) -> bool:
    """JSON when asked by ``?format=json`` or by an ``Accept`` preferring it over HTML."""
    if request.query.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def context_dict(context: Any) -> dict[str, Any]:
    """A context dataclass's fields, shallow (``asdict`` would copy every job)."""
    if is_dataclass(context):
        return {f.name: getattr(context, f.name) for f in fields(context)}
    return dict(context)


async def layout_for(request: web.Request, title: str, section: str, live_url: str | None) -> Layout:
    if section == "login":  # nothing about the engine before sign-in
        return Layout(title, section, NavCounts(0, 0), "", live_url)
    try:
        counts = await request.app[data_key].nav_counts(user_of(request).scope)
    except Exception:  # the error page must render even when storage is down
        logger.exception("studio: could not read the navigation counts")
        counts = NavCounts(0, 0)
    return Layout(title, section, counts, request.app[access_key].note, live_url)


def user_of(request: web.Request) -> Session:
    return request.get(session_key) or Session(None, "", "")


async def render_string(request: web.Request, template: str, context: Any) -> str:
    """A template rendered for ``request``'s user (fragments for SSE use this too)."""
    env = aiohttp_jinja2.get_env(request.app)
    variables = {**context_dict(context), "user": user_of(request)}
    return await env.get_template(template).render_async(**variables)


async def render_template(
    request: web.Request,
    template: str,
    context: Any,
    status: int = 200,
    *,
    page: bool = False,
    section: str = "",
    live_url: str | None = None,
) -> web.Response:
    variables = context_dict(context)
    if page:
        title = str(variables.get("title") or "Studio")
        variables["layout"] = await layout_for(request, title, section, live_url)
    text = await render_string(request, template, variables)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def render_page(
    request: web.Request, template: str, context: Any, *, section: str, live: str | None = None
) -> web.Response:
    """A whole page: ``template`` extends ``base.html``; ``live`` is its SSE stream's path."""
    live_url = f"{request.app[prefix_key]}/live/{live}" if live else None
    return await render_template(request, template, context, page=True, section=section, live_url=live_url)


async def render_fragment(request: web.Request, template: str, context: Any, status: int = 200) -> web.Response:
    """A partial alone, for htmx."""
    return await render_template(request, template, context, status)


class HasJson(Protocol):
    """A template context with a JSON twin."""

    def to_json(self) -> Any: ...


async def page_or_json(
    request: web.Request,
    template: str,
    context: HasJson,
    *,
    section: str,
    live: str | None = None,
    partial: str | None = None,
) -> web.StreamResponse:
    """A whole page, or its JSON twin; ``partial``: what an htmx request that is not a boosted link
    gets instead (a table's next rows, a progress bar's refresh)."""
    if wants_json(request):
        return json_response(context.to_json())
    if partial is not None and htmx(request) and not htmx(request).boosted:
        return await render_fragment(request, partial, context)
    return await render_page(request, template, context, section=section, live=live)


async def fragment_or_json(request: web.Request, template: str, context: HasJson, status: int = 200) -> web.Response:
    """A partial for htmx, or its JSON twin."""
    if wants_json(request):
        return json_response(context.to_json(), status)
    return await render_fragment(request, template, context, status)


def json_response(data: Any, status: int = 200) -> web.Response:
    """The JSON twin of a page."""
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)
