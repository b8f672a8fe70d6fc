"""Who may use the studio, and how a browser proves it: tokens, a signed cookie session, CSRF.

Two modes:

- **token**: ``STUDIO_TOKEN`` (operators) and/or ``STUDIO_VIEWER_TOKEN`` (read-only) are set. A
  browser signs in once on ``/studio/login``; the role and the operator's name are kept in a cookie
  signed with ``STUDIO_SECRET_KEY`` (or a key derived from the tokens, so several engines with the
  same settings accept each other's sessions).
- **loopback**: no token is set. The studio answers only requests from loopback addresses, and
  whoever is there is an operator named ``local``.

Every session, even before sign-in, holds a random CSRF token; every POST must send it back (form
field ``csrf_token`` or header ``X-CSRF-Token``) or is refused with 403.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config import Config

logger = logging.getLogger(__name__)

SESSION_COOKIE = "avtomatika_studio"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: How long a sign-in lasts.
SESSION_MAX_AGE_S = 7 * 24 * 3600
OPERATOR = "operator"
VIEWER = "viewer"
#: The operator name used when the studio is open on loopback.
LOOPBACK_NAME = "local"


@dataclass(frozen=True, slots=True)
class Session:
    """A browser's session: its role (None until signed in), the operator's name, its CSRF token."""

    role: str | None
    name: str
    csrf: str

    @property
    def can_act(self) -> bool:
        """Whether this session may start, retry, release, fail or cancel jobs."""
        return self.role == OPERATOR

    @property
    def actor(self) -> str:
        """How actions are recorded in history: ``operator:<name>``."""
        return f"operator:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "csrf": self.csrf}


class Access:
    """The studio's access policy, built from the engine's configuration.

    Args:
        config: Reads ``STUDIO_TOKEN``, ``STUDIO_VIEWER_TOKEN`` and ``STUDIO_SECRET_KEY``.
    """

    def __init__(self, config: Config) -> None:
        self._tokens: dict[str, str] = {}
        for role, secret in ((OPERATOR, config.STUDIO_TOKEN), (VIEWER, config.STUDIO_VIEWER_TOKEN)):
            if secret is not None and secret.get_secret_value():
                self._tokens[role] = secret.get_secret_value()
        key = config.STUDIO_SECRET_KEY.get_secret_value() if config.STUDIO_SECRET_KEY else None
        if not key and self._tokens:
            joined = "\0".join(f"{role}={token}" for role, token in sorted(self._tokens.items()))
            key = hashlib.sha256(f"avtomatika-studio-session\0{joined}".encode()).hexdigest()
        self._serializer = URLSafeTimedSerializer(key or secrets.token_hex(32), salt="avtomatika.studio.session")

    @property
    def mode(self) -> str:
        """``token`` when a studio token is configured, else ``loopback``."""
        return "token" if self._tokens else "loopback"

    @property
    def note(self) -> str:
        """What the page header says about access."""
        return "signed in with a token" if self._tokens else "open on loopback only"

    def role_for(self, token: str) -> str | None:
        """The role ``token`` grants, compared in constant time; None for a wrong token."""
        found = None
        for role, expected in self._tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = found or role
        return found

    def read(self, request: web.Request) -> tuple[Session, bool]:
        """The request's session and whether it is new (its cookie must be written)."""
        raw = request.cookies.get(SESSION_COOKIE)
        if raw:
            try:
                data = self._serializer.loads(raw, max_age=SESSION_MAX_AGE_S)
                session = Session(data.get("role"), str(data.get("name") or ""), str(data["csrf"]))
            except (BadSignature, KeyError, TypeError, AttributeError):
                session = None
            if session is not None and self._valid(session):
                return session, False
        return self.fresh(), True

    def _valid(self, session: Session) -> bool:
        if self.mode == "loopback":
            return session.role == OPERATOR
        return session.role is None or session.role in self._tokens

    def fresh(self, role: str | None = None, name: str = "") -> Session:
        """A new session with a new CSRF token."""
        if self.mode == "loopback":
            role, name = OPERATOR, name or LOOPBACK_NAME
        return Session(role, name, secrets.token_urlsafe(24))

    def sign_in(self, role: str, name: str) -> Session:
        """A signed-in session (a new CSRF token too: the old one was issued before sign-in)."""
        return replace(self.fresh(), role=role, name=name)

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
        """In loopback mode, whether the peer is a loopback address; always True in token mode."""
        return self.mode == "token" or is_loopback(request.remote)


def is_loopback(remote: str | None) -> bool:
    """Whether ``remote`` is 127.0.0.0/8 or ::1 (an IPv4-mapped loopback too)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


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
