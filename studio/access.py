"""Who may use the studio, and how a browser proves it: tokens, a signed cookie session, CSRF.

Two modes:

- **token**: ``STUDIO_TOKEN`` (operators: everything), ``STUDIO_VIEWER_TOKEN`` (read-only) or client
  tokens (``CLIENT_TOKEN`` / ``CLIENTS_CONFIG_PATH``: a client sees and acts on its own jobs only) are
  set. A browser signs in once on ``/studio/login``; the role, the client and the person's name are
  kept in a cookie signed with ``STUDIO_SECRET_KEY`` (or a key derived from the studio tokens, so
  several engines with the same settings accept each other's sessions). Changing the client
  configuration signs client sessions out, so a removed client loses the studio too.
- **loopback**: no token at all is set. The studio answers only requests from loopback addresses
  (or ``TRUSTED_NETWORKS``, and not relayed by a proxy), and whoever is there is an operator named
  ``local``.

Every session, even before sign-in, holds a random CSRF token; every POST must send it back (form
field ``csrf_token`` or header ``X-CSRF-Token``) or is refused with 403.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer

from avtomatika.access import AccessRegistry
from avtomatika.api.exposure import Exposure
from avtomatika.config import Config

logger = logging.getLogger(__name__)

SESSION_COOKIE = "avtomatika_studio"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: How long a sign-in lasts.
SESSION_MAX_AGE_S = 7 * 24 * 3600
OPERATOR = "operator"
VIEWER = "viewer"
#: A client's session: its own jobs only.
CLIENT = "client"
#: The operator name used when the studio is open on loopback.
LOOPBACK_NAME = "local"


@dataclass(frozen=True, slots=True)
class Session:
    """A browser's session: its role (None until signed in), the person's name, its CSRF token, its client."""

    role: str | None
    name: str
    csrf: str
    client: str | None = None

    @property
    def can_act(self) -> bool:
        """Whether this session may start, retry, release, fail or cancel jobs."""
        return self.role in (OPERATOR, CLIENT)

    @property
    def scope(self) -> str | None:
        """The client whose jobs alone this session sees; None: every job."""
        return self.client if self.role == CLIENT else None

    @property
    def actor(self) -> str:
        """How actions are recorded in history: ``operator:<name>`` or ``client:<client>``."""
        return f"client:{self.client}" if self.role == CLIENT else f"operator:{self.name}"

    def sees(self, owner: str | None) -> bool:
        """Whether a job owned by ``owner`` is visible to this session."""
        return self.scope is None or owner == self.scope

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "csrf": self.csrf, "client": self.client}


class Access:
    """The studio's access policy, built from the engine's configuration.

    Args:
        config: Reads ``STUDIO_TOKEN``, ``STUDIO_VIEWER_TOKEN`` and ``STUDIO_SECRET_KEY`` (and the client
            configuration, whose fingerprint signs client sessions).
        clients: The engine's client tokens (``engine.access``); each may sign in as its client.
    """

    def __init__(self, config: Config, clients: AccessRegistry | None = None) -> None:
        self._tokens: dict[str, str] = {}
        for role, secret in ((OPERATOR, config.STUDIO_TOKEN), (VIEWER, config.STUDIO_VIEWER_TOKEN)):
            if secret is not None and secret.get_secret_value():
                self._tokens[role] = secret.get_secret_value()
        self._clients = clients if clients is not None and not clients.clients_open else None
        self._peers = Exposure.of(config, clients if clients is not None else AccessRegistry(config))
        key = config.STUDIO_SECRET_KEY.get_secret_value() if config.STUDIO_SECRET_KEY else None
        if not key and self._tokens:
            joined = "\0".join(f"{role}={token}" for role, token in sorted(self._tokens.items()))
            key = hashlib.sha256(f"avtomatika-studio-session\0{joined}".encode()).hexdigest()
        if not key and self._clients is not None:
            logger.warning("studio: sessions of client tokens end when this engine stops; set STUDIO_SECRET_KEY")
        salt = f"avtomatika.studio.session\0{_clients_fingerprint(config)}"
        self._serializer = URLSafeTimedSerializer(key or secrets.token_hex(32), salt=salt)

    @property
    def mode(self) -> str:
        """``token`` when a studio or client token is configured, else ``loopback``."""
        return "token" if self._tokens or self._clients is not None else "loopback"

    @property
    def note(self) -> str:
        """What the page header says about access."""
        return "signed in with a token" if self.mode == "token" else "open on loopback only"

    def role_for(self, token: str) -> tuple[str, str | None] | None:
        """The role ``token`` grants and, for a client token, the client; None for a wrong token.

        Studio tokens are compared in constant time; client tokens by digest (``engine.access``).
        """
        found = None
        for role, expected in self._tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = found or role
        if found is not None:
            return found, None
        client = self._clients.client(token) if self._clients is not None and token else None
        return (CLIENT, client.name) if client is not None else None

    def read(self, request: web.Request) -> tuple[Session, bool]:
        """The request's session and whether it is new (its cookie must be written)."""
        raw = request.cookies.get(SESSION_COOKIE)
        if raw:
            try:
                data = self._serializer.loads(raw, max_age=SESSION_MAX_AGE_S)
                client = data.get("client")
                session = Session(
                    data.get("role"), str(data.get("name") or ""), str(data["csrf"]), str(client) if client else None
                )
            except (BadSignature, KeyError, TypeError, AttributeError):
                session = None
            if session is not None and self._valid(session):
                return session, False
        return self.fresh(), True

    def _valid(self, session: Session) -> bool:
        if self.mode == "loopback":
            return session.role == OPERATOR
        if session.role == CLIENT:
            return self._clients is not None and bool(session.client)
        return session.role is None or session.role in self._tokens

    def fresh(self, role: str | None = None, name: str = "") -> Session:
        """A new session with a new CSRF token."""
        if self.mode == "loopback":
            role, name = OPERATOR, name or LOOPBACK_NAME
        return Session(role, name, secrets.token_urlsafe(24))

    def sign_in(self, role: str, name: str, client: str | None = None) -> Session:
        """A signed-in session (a new CSRF token too: the old one was issued before sign-in)."""
        return replace(self.fresh(), role=role, name=name, client=client)

    def write(self, response: web.StreamResponse, request: web.Request, session: Session) -> None:
        """Set the session cookie on ``response``."""
        response.set_cookie(
            SESSION_COOKIE,
            self._serializer.dumps(session.to_dict()),
            max_age=SESSION_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    def allowed_remote(self, request: web.Request) -> bool:
        """In loopback mode, whether the peer is local (loopback or ``TRUSTED_NETWORKS``, not behind a
        proxy); always True in token mode."""
        return self.mode == "token" or self._peers.is_local(request)


def _clients_fingerprint(config: Config) -> str:
    """A digest of the client configuration (``CLIENT_TOKEN``, the clients file), to salt sessions with."""
    digest = hashlib.sha256()
    if config.CLIENT_TOKEN is not None:
        digest.update(config.CLIENT_TOKEN.get_secret_value().encode())
    # The same file the engine reads (AccessRegistry falls back to ./clients.toml).
    path = config.CLIENTS_CONFIG_PATH or (Path("clients.toml") if Path("clients.toml").is_file() else None)
    if path is not None:
        with contextlib.suppress(OSError):
            digest.update(b"\0" + Path(path).read_bytes())
    return digest.hexdigest()[:16]


async def sent_csrf(request: web.Request) -> str | None:
    """The CSRF token a POST carries, from its header or its form."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(sent).encode(), session.csrf.encode())
