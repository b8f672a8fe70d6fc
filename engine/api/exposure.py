"""Who the engine answers, by where a request comes from: its peer, its ``Host``, a browser's origin.

- **Peers.** A surface with no token configured (the client API, the worker API, the studio) answers
  loopback peers only, and peers of ``TRUSTED_NETWORKS``; any other gets 403 naming the settings
  that open it. A request relayed by a proxy (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) is
  not a loopback one, even when the proxy runs on this host. ``/_public/status`` and
  ``/_public/health`` answer everyone (probes of load balancers and orchestrators).
- **Host.** It must be a loopback name (``localhost``, ``*.localhost``, a loopback address), the
  address the request reached, or a name of ``ALLOWED_HOSTS`` (400 otherwise): a page that DNS
  rebinding pointed at this engine sends its own name.
- **Browsers.** A cross-origin request (its ``Origin``, or ``Sec-Fetch-Site``, names another site)
  to the client or worker API is refused with 403 unless its origin is in ``CORS_ALLOW_ORIGINS``;
  only those origins get CORS headers (and answers to their preflight requests).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from .errors import ApiError

if TYPE_CHECKING:
    from ..access import AccessRegistry
    from ..config import Config

#: Routes served to every peer: they tell whether the engine is up, nothing more.
PROBES = frozenset({"/_public/status", "/_public/health"})
#: Headers a proxy adds: a request carrying one speaks for someone else than its peer.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
#: Paths of the surfaces a browser must not reach from another origin (unless CORS allows it).
API_PREFIXES = ("/api/", "/_worker/", "/_public/webhooks/")
#: What a cross-origin page may send, when CORS_ALLOW_ORIGINS lets it.
CORS_METHODS = "GET, POST, PATCH, OPTIONS"
CORS_HEADERS = "Content-Type, X-Avtomatika-Token, X-Worker-Token, traceparent"
CORS_MAX_AGE_S = 600

_OPENED_BY = {
    "client API": ("CLIENT_TOKEN", "CLIENTS_CONFIG_PATH"),
    "worker API": ("GLOBAL_WORKER_TOKEN", "WORKERS_CONFIG_PATH"),
    "studio": ("STUDIO_TOKEN", "STUDIO_VIEWER_TOKEN", "CLIENT_TOKEN", "CLIENTS_CONFIG_PATH"),
}


def surface_of(path: str) -> str | None:
    """The surface a path belongs to: ``client API``, ``worker API``, ``studio``; None for probes."""
    if path in PROBES:
        return None
    if path == "/_worker" or path.startswith("/_worker/"):
        return "worker API"
    if path in ("/", "/studio") or path.startswith("/studio/"):
        return "studio"
    return "client API"  # /api, the approval webhook, metrics and the OpenAPI document, unknown paths


@dataclass(frozen=True, slots=True)
class Exposure:
    """The rules of one engine, from its settings and tokens.

    Args:
        open_surfaces: Surfaces with no token configured (served to loopback and trusted peers only).
        trusted: ``TRUSTED_NETWORKS``.
        allowed_hosts: ``ALLOWED_HOSTS`` (lower case; ``*`` allows any name, ``.example.com`` a domain).
        cors_origins: ``CORS_ALLOW_ORIGINS`` (``*``: any origin).
    """

    open_surfaces: frozenset[str]
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    cors_origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config: Config, access: AccessRegistry) -> Exposure:
        studio_tokens = any(
            s is not None and s.get_secret_value() for s in (config.STUDIO_TOKEN, config.STUDIO_VIEWER_TOKEN)
        )
        locked = {
            "client API": not access.clients_open,
            "worker API": not access.workers_open,
            "studio": studio_tokens or not access.clients_open,
        }
        return cls(
            frozenset(surface for surface, has_tokens in locked.items() if not has_tokens),
            tuple(ipaddress.ip_network(n, strict=False) for n in config.TRUSTED_NETWORKS),
            frozenset(h.lower().rstrip(".") for h in config.ALLOWED_HOSTS),
            frozenset(o.rstrip("/") for o in config.CORS_ALLOW_ORIGINS),
        )

    # -- peers -------------------------------------------------------------------------------------
    def is_local(self, request: web.BaseRequest) -> bool:
        """Whether the peer is loopback (or trusted), and no proxy relays the request for another."""
        if any(header in request.headers for header in PROXY_HEADERS):
            return False
        if is_loopback(request.remote):
            return True
        address = _address(request.remote)
        return address is not None and any(address in network for network in self.trusted)

    def check_peer(self, request: web.BaseRequest) -> None:
        """403 naming the settings that open the surface, for a remote peer of a surface without tokens."""
        surface = surface_of(request.path)
        if surface not in self.open_surfaces or self.is_local(request):
            return
        settings = _OPENED_BY[str(surface)]
        raise ApiError(
            403,
            f"the {surface} answers loopback peers only while none of {', '.join(settings)} is set; "
            f"set one to serve it to the network, or add the peer's network to TRUSTED_NETWORKS",
            extra={"settings": [*settings, "TRUSTED_NETWORKS"]},
        )

    # -- Host --------------------------------------------------------------------------------------
    def check_host(self, request: web.BaseRequest) -> None:
        """400 when the request's ``Host`` is not a name this engine answers to."""
        raw = request.headers.get("Host")
        if raw is None or "*" in self.allowed_hosts:  # HTTP/1.0 sends none: nothing to rebind
            return
        name = _host_name(raw)
        if name is not None and (self._known_name(name) or name == _local_address(request)):
            return
        raise ApiError(400, f"Host {raw!r} is not a name this engine answers to; add it to ALLOWED_HOSTS", field="Host")

    def _known_name(self, name: str) -> bool:
        if name == "localhost" or name.endswith(".localhost"):
            return True
        if is_loopback(name):
            return True
        return name in self.allowed_hosts or any(
            h.startswith(".") and (name.endswith(h) or name == h[1:]) for h in self.allowed_hosts
        )

    # -- browsers ----------------------------------------------------------------------------------
    def foreign_origin(self, request: web.BaseRequest) -> str | None:
        """The other origin a browser sent this request from; None when same-origin or not a browser's."""
        origin = request.headers.get("Origin")
        if origin is not None:
            return None if _same_origin(origin, request) else origin
        site = request.headers.get("Sec-Fetch-Site")
        return f"another site (Sec-Fetch-Site: {site})" if site in ("cross-site", "same-site") else None

    def cors_allows(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins


#: Distinct texts remembered by is_loopback and the parsers below (peers' addresses, ``Host``
#: headers): every request reads both, and parsing them was ~10 % of the API's own work per request.
PARSED_CACHE = 1024


@lru_cache(maxsize=PARSED_CACHE)
def is_loopback(remote: str | None) -> bool:
    """Whether ``remote`` is a loopback address: 127.0.0.0/8, ::1, or an IPv4-mapped loopback."""
    address = _address(remote)
    return address is not None and address.is_loopback


@lru_cache(maxsize=PARSED_CACHE)
def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address (an IPv4-mapped IPv6 one as IPv4), or None for anything else."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


@lru_cache(maxsize=PARSED_CACHE)
def _host_name(raw: str) -> str | None:
    """The name (or address) of a ``Host`` header, lower case, without port; None if unreadable."""
    try:
        host = URL.build(scheme="http", authority=raw.strip()).raw_host
    except (ValueError, TypeError):
        return None
    return host.lower().rstrip(".").strip("[]") if host else None


def _local_address(request: web.BaseRequest) -> str | None:
    """The address this connection reached (the bound address, or one of the host's when bound to all)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or not sockname:
        return None
    address = _address(str(sockname[0]))
    return str(address) if address is not None else None


def _same_origin(origin: str, request: web.BaseRequest) -> bool:
    try:
        theirs = URL(origin)
        ours = URL.build(scheme=request.scheme, authority=request.host)
    except (ValueError, TypeError):
        return False
    return (theirs.scheme, (theirs.host or "").lower(), theirs.port) == (
        ours.scheme,
        (ours.host or "").lower(),
        ours.port,
    )


exposure_key = web.AppKey("exposure", Exposure)
#: The allowed foreign origin of a request, whose answer carries CORS headers (errors too).
cors_origin_key = web.RequestKey("cors_origin", str)


def screen(request: web.Request) -> web.Response | None:
    """Host and peer checks, then the origin check of the API surfaces: ApiError when refused; the
    answer to a CORS preflight; None when the request is to be served."""
    exposure = request.app[exposure_key]
    exposure.check_host(request)
    exposure.check_peer(request)
    origin = exposure.foreign_origin(request) if request.path.startswith(API_PREFIXES) else None
    if origin is None:
        return None
    if not exposure.cors_allows(origin):
        raise ApiError(
            403,
            f"cross-origin request from {origin} refused; list the origin in CORS_ALLOW_ORIGINS to allow it",
            field="Origin",
        )
    request[cors_origin_key] = origin
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        preflight = web.Response(status=204)
        preflight.headers.update(
            {
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
            }
        )
        return preflight
    return None


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers on every answer to an allowed foreign origin."""
    origin = request.get(cors_origin_key)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers.add("Vary", "Origin")
