"""Helpers for frozen, environment-driven settings objects.

Every service has one ``Settings`` dataclass built by ``from_env``; these helpers parse and
validate each variable so an invalid value fails at start-up with the variable's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot run with."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string whose repr never shows the value."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    def __str__(self) -> str:
        return self.__repr__()

    def __bool__(self) -> bool:
        return bool(self.value)


def project_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml``)."""
    return Path(__file__).resolve().parent.parent


def run_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local run folder (``TT_RUN_DIR``, default ``.run/`` under the project root)."""
    env = os.environ if env is None else env
    return Path(env.get("TT_RUN_DIR") or project_root() / ".run")


def env_str(env: Mapping[str, str], name: str, default: str = "") -> str:
    """A string variable, stripped; ``default`` when unset or blank."""
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """An integer variable within optional bounds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port variable (0 asks the OS for a free port)."""
    return env_int(env, name, default, minimum=0, maximum=65535)


def env_float_seconds(env: Mapping[str, str], name: str, default: float, *,
                      minimum: float = 0.0) -> float:
    """A duration in seconds (durations are the only non-money floats allowed)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_decimal(env: Mapping[str, str], name: str, default: Decimal, *,
                minimum: Decimal | None = None) -> Decimal:
    """A decimal variable (money, prices, ratios)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal, got {raw!r}") from None
    if not value.is_finite() or (minimum is not None and value < minimum):
        raise ConfigError(f"{name} must be a finite decimal >= {minimum}, got {raw!r}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean, got {raw!r}")


def env_url(env: Mapping[str, str], name: str, default: str, *,
            schemes: tuple[str, ...] = ("http", "https")) -> str:
    """A URL variable whose scheme is one of ``schemes`` ("" allowed when default is "")."""
    value = env_str(env, name, default)
    if not value:
        return value
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in schemes:
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL, got {value!r}")
    return value.rstrip("/")


def redact_url(url: str) -> str:
    """A URL with any password replaced by ``***``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where PostgreSQL and Redis are (resolved URLs, never empty once the stack runs)."""

    database_url: Secret
    redis_url: Secret

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageSettings:
        """Read ``DATABASE_URL`` / ``REDIS_URL``, falling back to the embedded servers' files."""
        env = os.environ if env is None else env
        db = env_str(env, "DATABASE_URL")
        rd = env_str(env, "REDIS_URL")
        rundir = run_dir(env)
        if not db and (rundir / "database_url").exists():
            db = (rundir / "database_url").read_text().strip()
        if not rd and (rundir / "redis_url").exists():
            rd = (rundir / "redis_url").read_text().strip()
        if not db:
            raise ConfigError("DATABASE_URL is unset and no embedded PostgreSQL runs (make up)")
        if not rd:
            raise ConfigError("REDIS_URL is unset and no embedded Redis runs (make up)")
        if not rd.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"REDIS_URL must be a redis:// URL, got {redact_url(rd)!r}")
        if not db.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"DATABASE_URL must be a postgresql:// URL, got {redact_url(db)!r}")
        return cls(Secret(db), Secret(rd))


def load_tokens(env: Mapping[str, str] | None = None, *, variable: str = "CONTROL_API_TOKEN",
                file: str = "control_api_token") -> tuple[Secret, ...]:
    """Bearer tokens: ``variable`` (comma-separated) or the run folder's ``file`` that ``make up`` writes.

    Each must be 64 hex characters. The default reads the control API tokens; ``common.grpcauth`` reads the
    internal ones (``TT_INTERNAL_TOKEN`` / ``.run/internal_token``).
    """
    env = os.environ if env is None else env
    raw = env_str(env, variable)
    if not raw:
        path = run_dir(env) / file
        if path.exists():
            raw = path.read_text().strip()
    if not raw:
        raise ConfigError(f"{variable} is unset and no generated token exists (make up)")
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for i, tok in enumerate(tokens):
        if len(tok) != 64 or any(c not in "0123456789abcdefABCDEF" for c in tok):
            raise ConfigError(f"{variable} entry {i} must be 64 hex characters")
    if not tokens:
        raise ConfigError(f"{variable} holds no token")
    return tuple(Secret(t) for t in tokens)


SERVICE_PORTS = {"ingest": 50051, "router": 50052, "executor": 50053, "guard": 50054,
                 "control": 50055}


def grpc_port(env: Mapping[str, str], service: str) -> int:
    """The gRPC port of ``service`` from ``TT_<SERVICE>_GRPC_PORT``."""
    return env_port(env, f"TT_{service.upper()}_GRPC_PORT", SERVICE_PORTS[service])


def grpc_target(env: Mapping[str, str], service: str) -> str:
    """Where to reach ``service``: ``TT_<SERVICE>_GRPC_TARGET`` or 127.0.0.1 and its port."""
    return env_str(env, f"TT_{service.upper()}_GRPC_TARGET") or f"127.0.0.1:{grpc_port(env, service)}"


DEFAULT_MAX_ORDER_USD = Decimal(1000)


def max_order_usd(env: Mapping[str, str]) -> Decimal:
    """``TT_MAX_ORDER_USD``: the operator ceiling per order in USD (> 0, default 1000). The router cuts copies
    to it (the cut noted on the order); the executor cuts an exit (a copied or a trigger's SELL) still above it
    and refuses any other order above it, ``SubmitOrder`` included (REJECTED ``MAX_ORDER_USD_EXCEEDED``). A SELL
    counts as its size × price."""
    value = env_decimal(env, "TT_MAX_ORDER_USD", DEFAULT_MAX_ORDER_USD, minimum=Decimal(0))
    if value <= 0:
        raise ConfigError(f"TT_MAX_ORDER_USD must be > 0 (the most any one order may be worth), got {value}")
    return value
