"""Helpers for frozen, environment-driven settings objects.

Every service has one ``Settings`` dataclass built by ``from_env``; these helpers parse and
validate each variable so an invalid value fails at start-up with the variable's name.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


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
                      minimum: float = 0.0, maximum: float | None = None) -> float:
    """A duration in seconds (durations are the only non-money floats allowed): finite, within the bounds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value):  # nan passes every comparison, inf every minimum ("1e400" is inf)
        raise ConfigError(f"{name} must be a finite number of seconds, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_decimal(env: Mapping[str, str], name: str, default: Decimal, *,
                minimum: Decimal | None = None, maximum: Decimal | None = None) -> Decimal:
    """A decimal variable (money, prices, ratios): finite, within the bounds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal, got {raw!r}") from None
    if not value.is_finite():
        raise ConfigError(f"{name} must be a finite decimal, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {raw!r}")
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


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


def _scheme_seen(value: str) -> str:
    """The scheme ``value`` starts with, for an error message: no more of the value than that."""
    head, sep, _ = value.partition("://")
    return f"scheme {head.lower()!r}" if sep and _SCHEME.fullmatch(head) else "no scheme"


def _url_problem(value: str, schemes: tuple[str, ...]) -> str:
    """What is wrong with ``value`` as a URL of one of ``schemes`` with a host ("" when nothing is).

    The answer never quotes ``value``: a URL may carry a password or be a credential itself (a webhook's)."""
    if any(c.isspace() or not c.isprintable() for c in value):
        return "it holds whitespace or a control character"
    if value.partition("://")[0].lower() not in schemes or "://" not in value:
        return f"it must start with {' or '.join(s + '://' for s in schemes)} and has {_scheme_seen(value)}"
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError:
        return "its host or port is malformed"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "its port must be 1-65535"
    return ""


def env_url(env: Mapping[str, str], name: str, default: str, *,
            schemes: tuple[str, ...] = ("http", "https")) -> str:
    """A URL variable: one of ``schemes``, a host, a valid port if any, no whitespace ("" allowed when default
    is ""). The error names the variable and the fault, never the value (it may hold a credential)."""
    value = env_str(env, name, default)
    if not value:
        return value
    problem = _url_problem(value, schemes)
    if problem:
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL with a host: {problem}")
    return value.rstrip("/")


def redact_url(url: str) -> str:
    """A URL with its credentials (password, or a user that stands alone: a token) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or "@" not in parts.netloc:  # not a URL with a user: hide what could be one all the same
        return url if "@" not in url else f"***@{url.rsplit('@', 1)[1]}"
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if colon else f"***@{host}"))


def settings_repr(settings: object) -> str:
    """``repr`` of a settings dataclass with every ``*_url`` field's credentials hidden (:func:`redact_url`):
    each service logs it at start-up."""
    shown = []
    for field in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, field.name)
        is_url = field.name.endswith("_url") and isinstance(value, str)
        shown.append(f"{field.name}={redact_url(value) if is_url else value!r}")
    return f"{type(settings).__name__}({', '.join(shown)})"


def _storage_problem(value: str, schemes: tuple[str, ...]) -> str:
    """What is wrong with a storage URL ("" when nothing is), never quoting it: it holds the password."""
    if value.partition("://")[0] in schemes and "://" in value:  # as libpq, case-sensitive
        return ""
    hint = " (a key=value connection string is not accepted)" if "=" in value and "://" not in value else ""
    return f"it has {_scheme_seen(value)}{hint}"


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
        if problem := _storage_problem(rd, ("redis", "rediss", "unix")):
            raise ConfigError(f"REDIS_URL must be a redis://, rediss:// or unix:// URL: {problem}")
        if problem := _storage_problem(db, ("postgresql", "postgres")):
            raise ConfigError(f"DATABASE_URL must be a postgresql:// URL: {problem}")
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
