"""Settings of the control service, read once from the environment.

| variable | default | meaning |
|---|---|---|
| ``TT_CONTROL_HOST`` | 127.0.0.1 | gRPC bind address |
| ``TT_CONTROL_GRPC_PORT`` | 50055 | gRPC port (0 = any free port) |
| ``DATABASE_URL`` / ``REDIS_URL`` | embedded servers' files | storage (``common.config.StorageSettings``) |
| ``CONTROL_API_TOKEN`` | ``.run/control_api_token`` | bearer tokens of the public services, comma-separated |
| ``TT_INTERNAL_TOKEN`` | ``.run/internal_token`` | bearer tokens of InternalControlService (``common.grpcauth``) |
| ``TT_GRPC_ALLOW_INSECURE_BIND`` / ``TT_GRPC_TLS_*`` | false / unset | a non-loopback host needs TLS or this opt-in |
| ``TT_INSIDERS_API_URL`` | unset | when unset, LIVE subscriptions are refused |
| ``TT_CONTROL_INDEX_RESYNC_S`` | 30 | hot-index resync period |
| ``TT_CONTROL_INDEX_RETRY_S`` | 1 | resync delay after a failed index update |
| ``TT_CONTROL_DB_POOL_MAX`` | 10 | PostgreSQL pool size |
| ``TT_CONTROL_DB_TIMEOUT_S`` | 2 | wait for a pooled connection / statement and lock timeout |
| ``TT_CONTROL_READY_TIMEOUT_S`` | 1 | per-dependency readiness check timeout |
| ``TT_CONTROL_READY_SERVICES`` | "" | pipeline services whose gRPC health /ready also checks (e.g. ``ingest,router``) |
| ``TT_CONTROL_IDEMPOTENCY_TTL_S`` | 86400 | how long an Idempotency-Key replays its first response |
| ``TT_CONTROL_GRACE_S`` | 5 | graceful-shutdown grace for in-flight calls |
| ``TT_CONTROL_LIST_CACHE_ENTRIES`` | 50000 | subscriptions kept for list pages per (id, version), gRPC and JSON |
| ``TT_CONTROL_PAGE_CACHE_MB`` | 64 | whole REST list pages kept, checked against their rows' digest (0 = off) |
| ``TT_CONTROL_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9165 | Prometheus ``/metrics`` (``common.metrics``) |
| ``TT_ALERT_WEBHOOK_URL`` | unset | where alerts are POSTed (JSON with a Slack ``text``); unset: they are only logged |
| ``TT_ALERT_WEBHOOK_SECRET`` | unset | key of the body's HMAC-SHA256 in ``X-TT-Signature`` (unset: unsigned) |
| ``TT_ALERT_WEBHOOK_TIMEOUT_S`` | 5 | deadline of one POST |
| ``TT_ALERT_RETRY_BASE_S`` / ``TT_ALERT_RETRY_CAP_S`` | 1 / 60 | backoff between the POSTs of one alert |
| ``TT_ALERT_DEDUPE_S`` | 3600 | an occurrence raised twice within this is sent once |
| ``TT_ALERT_RATE_LIMIT`` / ``TT_ALERT_RATE_WINDOW_S`` | 5 / 600 | most alerts sent per key per window (more: held) |
| ``TT_ALERT_RETENTION_S`` | 86400 | an alert is kept and retried this long at most (the webhook's outage budget) |
| ``TT_ALERT_CONSUMER`` | host name | this replica's name among the deliverers (``services.control.alert_delivery``) |
| ``TT_ALERT_CLAIM_IDLE_S`` | 60 | alerts another replica took and left unacknowledged this long are taken over |
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import (
    SERVICE_PORTS,
    ConfigError,
    Secret,
    StorageSettings,
    env_float_seconds,
    env_int,
    env_str,
    env_url,
    grpc_port,
    grpc_target,
    load_tokens,
    redact_url,
)
from common.grpcauth import GrpcSecurity
from common.metrics import METRICS_OFF, MetricsSettings

PIPELINE_SERVICES = ("ingest", "router", "executor", "guard")
NO_SECRET = Secret("")


@dataclass(frozen=True, slots=True, repr=False)
class AlertSettings:
    """Where and how alerts are delivered (``services.control.alert_delivery``); no URL: only logged."""

    webhook_url: str = ""
    webhook_secret: Secret = NO_SECRET
    timeout_s: float = 5.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 60.0
    dedupe_s: float = 3600.0
    rate_limit: int = 5
    rate_window_s: float = 600.0
    retention_s: float = 86_400.0
    consumer: str = "control"
    claim_idle_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AlertSettings:
        """Read the ``TT_ALERT_*`` variables."""
        return cls(
            webhook_url=env_url(env, "TT_ALERT_WEBHOOK_URL", ""),
            webhook_secret=Secret(env_str(env, "TT_ALERT_WEBHOOK_SECRET")),
            timeout_s=env_float_seconds(env, "TT_ALERT_WEBHOOK_TIMEOUT_S", 5.0, minimum=0.05),
            retry_base_s=env_float_seconds(env, "TT_ALERT_RETRY_BASE_S", 1.0, minimum=0.01),
            retry_cap_s=env_float_seconds(env, "TT_ALERT_RETRY_CAP_S", 60.0, minimum=0.01),
            dedupe_s=env_float_seconds(env, "TT_ALERT_DEDUPE_S", 3600.0, minimum=1.0),
            rate_limit=env_int(env, "TT_ALERT_RATE_LIMIT", 5, minimum=1),
            rate_window_s=env_float_seconds(env, "TT_ALERT_RATE_WINDOW_S", 600.0, minimum=1.0),
            retention_s=env_float_seconds(env, "TT_ALERT_RETENTION_S", 86_400.0, minimum=60.0),
            consumer=env_str(env, "TT_ALERT_CONSUMER", socket.gethostname() or "control"),
            claim_idle_s=env_float_seconds(env, "TT_ALERT_CLAIM_IDLE_S", 60.0, minimum=1.0),
        )

    def __repr__(self) -> str:
        return (f"AlertSettings(webhook_url={'set' if self.webhook_url else 'unset'}, "
                f"webhook_secret={self.webhook_secret!r}, rate_limit={self.rate_limit}/{self.rate_window_s}s, "
                f"dedupe_s={self.dedupe_s}, retention_s={self.retention_s}, consumer={self.consumer!r})")


NO_ALERT_WEBHOOK = AlertSettings()


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything the control service needs from its environment."""

    storage: StorageSettings
    tokens: tuple[Secret, ...]
    security: GrpcSecurity
    host: str = "127.0.0.1"
    grpc_port: int = SERVICE_PORTS["control"]
    insiders_api_url: str = ""
    index_resync_s: float = 30.0
    index_retry_s: float = 1.0
    index_full_resync_s: float = 600.0
    db_pool_max: int = 10
    db_timeout_s: float = 2.0
    ready_timeout_s: float = 1.0
    ready_services: tuple[tuple[str, str], ...] = ()
    idempotency_ttl_s: float = 86_400.0
    grace_s: float = 5.0
    list_cache_entries: int = 50_000
    page_cache_mb: int = 64
    metrics: MetricsSettings = METRICS_OFF
    alerts: AlertSettings = NO_ALERT_WEBHOOK

    @property
    def live_enabled(self) -> bool:
        """True when LIVE subscriptions can execute (an Insiders API is configured)."""
        return bool(self.insiders_api_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate; raises ConfigError naming the variable at fault."""
        env = os.environ if env is None else env
        services: list[tuple[str, str]] = []
        for name in (s.strip().lower() for s in env_str(env, "TT_CONTROL_READY_SERVICES").split(",")):
            if not name:
                continue
            if name not in PIPELINE_SERVICES:
                raise ConfigError(f"TT_CONTROL_READY_SERVICES: unknown service {name!r} "
                                  f"(one of {', '.join(PIPELINE_SERVICES)})")
            services.append((name, grpc_target(env, name)))
        security = GrpcSecurity.from_env(env)
        host = env_str(env, "TT_CONTROL_HOST", "127.0.0.1")
        security.check_bind(host, "TT_CONTROL_HOST")
        return cls(
            storage=StorageSettings.from_env(env),
            tokens=load_tokens(env),
            security=security,
            host=host,
            grpc_port=grpc_port(env, "control"),
            insiders_api_url=env_url(env, "TT_INSIDERS_API_URL", ""),
            index_resync_s=env_float_seconds(env, "TT_CONTROL_INDEX_RESYNC_S", 30.0, minimum=0.05),
            index_retry_s=env_float_seconds(env, "TT_CONTROL_INDEX_RETRY_S", 1.0, minimum=0.01),
            index_full_resync_s=env_float_seconds(env, "TT_CONTROL_INDEX_FULL_RESYNC_S", 600.0, minimum=0.05),
            db_pool_max=env_int(env, "TT_CONTROL_DB_POOL_MAX", 10, minimum=1, maximum=200),
            db_timeout_s=env_float_seconds(env, "TT_CONTROL_DB_TIMEOUT_S", 2.0, minimum=0.1),
            ready_timeout_s=env_float_seconds(env, "TT_CONTROL_READY_TIMEOUT_S", 1.0, minimum=0.05),
            ready_services=tuple(services),
            idempotency_ttl_s=env_float_seconds(env, "TT_CONTROL_IDEMPOTENCY_TTL_S", 86_400.0, minimum=1.0),
            grace_s=env_float_seconds(env, "TT_CONTROL_GRACE_S", 5.0),
            list_cache_entries=env_int(env, "TT_CONTROL_LIST_CACHE_ENTRIES", 50_000, minimum=0, maximum=10_000_000),
            page_cache_mb=env_int(env, "TT_CONTROL_PAGE_CACHE_MB", 64, minimum=0, maximum=65_536),
            metrics=MetricsSettings.from_env(env, "control"),
            alerts=AlertSettings.from_env(env),
        )

    def __repr__(self) -> str:
        return (f"Settings(host={self.host!r}, grpc_port={self.grpc_port}, storage={self.storage!r}, "
                f"tokens={len(self.tokens)} x Secret('***'), security={self.security!r}, "
                f"insiders_api_url={redact_url(self.insiders_api_url)!r}, "
                f"index_resync_s={self.index_resync_s}, index_retry_s={self.index_retry_s}, "
                f"index_full_resync_s={self.index_full_resync_s}, "
                f"db_pool_max={self.db_pool_max}, db_timeout_s={self.db_timeout_s}, "
                f"ready_timeout_s={self.ready_timeout_s}, ready_services={self.ready_services!r}, "
                f"idempotency_ttl_s={self.idempotency_ttl_s}, grace_s={self.grace_s}, "
                f"list_cache_entries={self.list_cache_entries}, page_cache_mb={self.page_cache_mb}, "
                f"metrics={self.metrics!r}, alerts={self.alerts!r})")
