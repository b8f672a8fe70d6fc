"""Who may call the engine: clients (``X-Avtomatika-Token``) and workers (``X-Worker-Token``).

Tokens come from TOML files (``CLIENTS_CONFIG_PATH``, ``WORKERS_CONFIG_PATH``) or single tokens from
the environment (``CLIENT_TOKEN``, ``GLOBAL_WORKER_TOKEN``). Worker tokens are kept only as hashes.
With no token configured at all, the API is open (a warning says so at start-up).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


@dataclass(slots=True, frozen=True)
class Client:
    name: str
    plan: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    monthly_attempts: int | None = None

    def public(self) -> dict[str, Any]:
        """What a handler sees as ``context.client`` (never the token)."""
        return {"name": self.name, "plan": self.plan, "params": dict(self.params)}


@functools.lru_cache(maxsize=1024)
def _digest(token: str) -> str:
    """A token's SHA-256, remembered for the tokens seen lately: every request presents one (or two)."""
    return hashlib.sha256(token.encode()).hexdigest()


class AccessRegistry:
    """Looks up clients and workers by token; compares digests in constant time."""

    def __init__(self, config: Config) -> None:
        self._clients: dict[str, Client] = {}
        self._worker_digests: dict[str, str] = {}  # digest -> worker id
        self._global_worker_digest: str | None = None
        self._attempts: dict[tuple[str, str], int] = {}  # (client name, "YYYY-MM") -> jobs created
        self._attempts_lock = threading.Lock()
        self._load_clients(config)
        self._by_name = {client.name: client for client in self._clients.values()}
        self._load_workers(config)
        if config.GLOBAL_WORKER_TOKEN is not None:
            self._global_worker_digest = _digest(config.GLOBAL_WORKER_TOKEN.get_secret_value())

    @property
    def clients_open(self) -> bool:
        return not self._clients

    @property
    def workers_open(self) -> bool:
        return not self._worker_digests and self._global_worker_digest is None

    def client(self, token: str | None) -> Client | None:
        if self.clients_open:
            return Client(ANONYMOUS)
        if not token:
            return None
        return self._clients.get(_digest(token))

    def client_by_name(self, name: str | None) -> Client | None:
        if name is None:
            return None
        found = self._by_name.get(name)
        return found if found is not None else Client(name)

    def take_attempt(self, client: Client) -> bool:
        """Count one job creation against ``client.monthly_attempts``; False once this month's are spent.

        Counted in this process's memory (per calendar month, UTC): engines sharing a Redis each
        count their own.
        """
        if client.monthly_attempts is None:
            return True
        key = (client.name, datetime.now(UTC).strftime("%Y-%m"))
        with self._attempts_lock:
            used = self._attempts.get(key, 0)
            if used >= client.monthly_attempts:
                return False
            self._attempts[key] = used + 1
            return True

    def refund_attempt(self, client: Client) -> None:
        """Give back an attempt taken for a job that was not created after all (refused input)."""
        if client.monthly_attempts is None:
            return
        key = (client.name, datetime.now(UTC).strftime("%Y-%m"))
        with self._attempts_lock:
            if self._attempts.get(key, 0) > 0:
                self._attempts[key] -= 1

    def worker(self, token: str | None) -> tuple[bool, str | None]:
        """(accepted, worker id the token belongs to; None for the global token or an open API)."""
        if self.workers_open:
            return True, None
        if not token:
            return False, None
        digest = _digest(token)
        if self._global_worker_digest is not None and hmac.compare_digest(digest, self._global_worker_digest):
            return True, None
        worker_id = self._worker_digests.get(digest)
        return (worker_id is not None), worker_id

    def _load_clients(self, config: Config) -> None:
        path = config.CLIENTS_CONFIG_PATH or (Path("clients.toml") if Path("clients.toml").is_file() else None)
        if path is not None:
            for name, entry in _read_toml(path, "CLIENTS_CONFIG_PATH").items():
                token = entry.get("token") if isinstance(entry, dict) else None
                if not isinstance(token, str) or not token:
                    raise ConfigError(f"CLIENTS_CONFIG_PATH={path}: client [{name}] needs a token")
                quota = entry.get("monthly_attempts")
                if quota is not None and (not isinstance(quota, int) or isinstance(quota, bool) or quota < 0):
                    raise ConfigError(
                        f"CLIENTS_CONFIG_PATH={path}: client [{name}] monthly_attempts must be a whole number >= 0"
                    )
                params = entry.get("params") or {}
                if not isinstance(params, dict):
                    raise ConfigError(f"CLIENTS_CONFIG_PATH={path}: client [{name}] params must be a table")
                if _digest(token) in self._clients:
                    other = self._clients[_digest(token)].name
                    raise ConfigError(f"CLIENTS_CONFIG_PATH={path}: clients [{other}] and [{name}] share a token")
                self._clients[_digest(token)] = Client(
                    name,
                    entry.get("plan"),
                    dict(params),
                    quota,
                )
        if config.CLIENT_TOKEN is not None:
            self._clients[_digest(config.CLIENT_TOKEN.get_secret_value())] = Client("default")

    def _load_workers(self, config: Config) -> None:
        path = config.WORKERS_CONFIG_PATH
        if path is None:
            return
        for worker_id, entry in _read_toml(path, "WORKERS_CONFIG_PATH").items():
            token = entry.get("token") if isinstance(entry, dict) else None
            if not isinstance(token, str) or not token:
                raise ConfigError(f"WORKERS_CONFIG_PATH={path}: worker [{worker_id}] needs a token")
            if _digest(token) in self._worker_digests:
                other = self._worker_digests[_digest(token)]
                raise ConfigError(f"WORKERS_CONFIG_PATH={path}: workers [{other}] and [{worker_id}] share a token")
            self._worker_digests[_digest(token)] = worker_id


def _read_toml(path: Path, variable: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{variable}={path}: not valid TOML ({exc})") from None
