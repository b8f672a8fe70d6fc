"""Engine configuration, read from environment variables (the names of the original release).

``Config()`` reads the environment; a bad value raises :class:`~avtomatika.errors.ConfigError`
naming the variable, so a typo fails at start-up instead of at the first job. A keyword argument of
``Config(...)`` that names no setting fails the same way, naming the nearest one.
"""

from __future__ import annotations

import difflib
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True, env_prefix="")

    API_HOST: str = "0.0.0.0"
    API_PORT: int = Field(8080, ge=0, le=65535)
    # Names a request's Host may carry beyond loopback names and the address it reached ("*": any).
    ALLOWED_HOSTS: Annotated[tuple[str, ...], NoDecode] = ()
    # Networks (CIDR) whose peers are served like loopback ones: without tokens when none is set.
    TRUSTED_NETWORKS: Annotated[tuple[str, ...], NoDecode] = ()
    # Origins whose pages may call the API from a browser (CORS); "*": any.
    CORS_ALLOW_ORIGINS: Annotated[tuple[str, ...], NoDecode] = ()
    HEADER_READ_TIMEOUT_SECONDS: float = Field(20.0, gt=0)
    BODY_READ_TIMEOUT_SECONDS: float = Field(60.0, gt=0)
    CLIENTS_CONFIG_PATH: Path | None = None
    WORKERS_CONFIG_PATH: Path | None = None
    CLIENT_TOKEN: SecretStr | None = None
    GLOBAL_WORKER_TOKEN: SecretStr | None = None

    REDIS_URL: str | None = None
    REDIS_HOST: str | None = None
    REDIS_PORT: int = Field(6379, ge=1, le=65535)
    REDIS_DB: int = Field(0, ge=0)
    HISTORY_DATABASE_URI: str | None = None
    HISTORY_RETENTION_DAYS: float = Field(0.0, ge=0)

    WORKER_TIMEOUT_SECONDS: float = Field(300.0, gt=0)
    WORKER_POLL_TIMEOUT_SECONDS: float = Field(30.0, ge=0)
    MAX_JOB_WAIT_SECONDS: float = Field(60.0, ge=0)
    WORKER_HEALTH_CHECK_INTERVAL_SECONDS: float = Field(60.0, gt=0)
    JOB_MAX_RETRIES: int = Field(3, ge=0)
    RETRY_BACKOFF_BASE_SECONDS: float = Field(1.0, ge=0)
    RETRY_BACKOFF_MAX_SECONDS: float = Field(60.0, ge=0)
    WATCHER_INTERVAL_SECONDS: float = Field(20.0, gt=0)
    EXECUTOR_CONCURRENCY: int = Field(64, ge=1)
    EVENT_LOOP: Literal["auto", "uvloop", "asyncio"] = "auto"

    MAX_REQUEST_BODY_BYTES: int = Field(1_048_576, ge=1024)
    MAX_JSON_DEPTH: int = Field(64, ge=2)
    MAX_PARAMS_BYTES: int = Field(262_144, ge=1024)
    MAX_RESULT_DATA_BYTES: int = Field(524_288, ge=1024)
    MAX_OPEN_POLLS_PER_WORKER: int = Field(64, ge=1)
    MAX_STREAMS_PER_CLIENT: int = Field(16, ge=1)
    # Requests per second and burst, per caller and class of endpoint; a rate of 0 means unlimited.
    RATE_LIMIT_CLIENT_READ_PER_SECOND: float = Field(1000.0, ge=0)
    RATE_LIMIT_CLIENT_READ_BURST: int = Field(2000, ge=1)
    RATE_LIMIT_CLIENT_WRITE_PER_SECOND: float = Field(1000.0, ge=0)
    RATE_LIMIT_CLIENT_WRITE_BURST: int = Field(2000, ge=1)
    RATE_LIMIT_WORKER_PER_SECOND: float = Field(1000.0, ge=0)
    RATE_LIMIT_WORKER_BURST: int = Field(2000, ge=1)
    RATE_LIMIT_PUBLIC_PER_SECOND: float = Field(50.0, ge=0)
    RATE_LIMIT_PUBLIC_BURST: int = Field(200, ge=1)
    RATE_LIMIT_UNAUTHENTICATED_PER_SECOND: float = Field(20.0, ge=0)
    RATE_LIMIT_UNAUTHENTICATED_BURST: int = Field(100, ge=1)
    RATE_LIMIT_SIGN_IN_PER_SECOND: float = Field(0.1, ge=0)
    RATE_LIMIT_SIGN_IN_BURST: int = Field(10, ge=1)
    METRICS_MAX_LABEL_VALUES: int = Field(1000, ge=1)
    HISTORY_READ_WAIT_SECONDS: float = Field(1.0, ge=0)

    STUDIO_ENABLED: bool = True
    STUDIO_TOKEN: SecretStr | None = None
    STUDIO_VIEWER_TOKEN: SecretStr | None = None
    STUDIO_SECRET_KEY: SecretStr | None = None

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"

    @field_validator("ALLOWED_HOSTS", "TRUSTED_NETWORKS", "CORS_ALLOW_ORIGINS", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """A comma-separated string (as in the environment) or a list; blanks dropped."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return tuple(item.strip() for item in value if isinstance(item, str) and item.strip())
        return value

    @field_validator("TRUSTED_NETWORKS")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _upper_case_levels(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("LOG_LEVEL", "LOG_FORMAT", "EVENT_LOOP"):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = value.upper() if key == "LOG_LEVEL" else value.lower()
        return data


class Config:
    """Settings of one engine. ``Config()`` reads the environment; keyword arguments override it.

    Attributes keep the environment variable names (``config.API_PORT``), as in the original.
    """

    def __init__(self, **overrides: Any) -> None:
        unknown = [name for name in overrides if name not in _Settings.model_fields]
        if unknown:
            raise ConfigError("; ".join(_unknown(name) for name in unknown))
        try:
            settings = _Settings(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        object.__setattr__(self, "_settings", settings)
        # Copied as plain attributes: request paths read several settings each, and an instance
        # attribute is read ~30 times faster than through __getattr__ and the settings model.
        self.__dict__.update(settings.__dict__)

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._settings, name)
        except AttributeError:
            raise AttributeError(f"Config has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is read-only; pass overrides to Config(...)")

    def __repr__(self) -> str:
        return f"Config({self._settings!r})"

    def replace(self, **overrides: Any) -> Config:
        """A copy with some settings changed."""
        return Config(**{**self._settings.model_dump(exclude_unset=True), **overrides})

    @property
    def redis_url(self) -> str | None:
        """The Redis to use for live state, or None for in-memory storage."""
        if self._settings.REDIS_URL:
            return self._settings.REDIS_URL
        if self._settings.REDIS_HOST:
            s = self._settings
            return f"redis://{s.REDIS_HOST}:{s.REDIS_PORT}/{s.REDIS_DB}"
        return None

    @staticmethod
    def documented_settings() -> dict[str, Any]:
        """Every setting with its default, for docs and their tests."""
        return {name: field.default for name, field in _Settings.model_fields.items()}


def _unknown(name: str) -> str:
    """A setting name ``Config(...)`` does not know, with the nearest one it does."""
    nearest = difflib.get_close_matches(name.upper(), list(_Settings.model_fields), n=1, cutoff=0.6)
    hint = f" (did you mean {nearest[0]}?)" if nearest else ""
    return f"Config has no setting {name!r}{hint}"


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        variable = ".".join(str(p) for p in error["loc"]) or "configuration"
        given = error.get("input")
        parts.append(f"{variable}={given!r}: {error['msg']}")
    return "Invalid configuration: " + "; ".join(parts)
