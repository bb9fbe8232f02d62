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
| ``TT_CONTROL_READY_SERVICES`` | "" | pipeline services whose gRPC health /ready also checks (e.g. ``ingest,router``) |
| ``TT_CONTROL_METRICS_HOST`` / ``_PORT`` | 127.0.0.1 / 9165 | Prometheus ``/metrics`` (``common.metrics``) |
| ``TT_ALERT_WEBHOOK_URL`` | unset | where alerts are POSTed (JSON with a Slack ``text``); unset: they are only logged |
| ``TT_ALERT_WEBHOOK_SECRET`` | unset | key of the body's HMAC-SHA256 in ``X-TT-Signature`` (unset: unsigned) |
| ``TT_ALERT_CONSUMER`` | host name | this replica's name among the deliverers (``services.control.alert_delivery``) |

The rest are the tuning constants of :class:`Tuning` below (``common.tuning``).
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
    env_str,
    env_url,
    grpc_port,
    grpc_target,
    load_tokens,
    redact_url,
)
from common.grpcauth import GrpcSecurity
from common.metrics import METRICS_OFF, MetricsSettings
from common.tuning import tune, tuning_from_env

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
    def from_env(cls, env: Mapping[str, str], tuning: Tuning) -> AlertSettings:
        """Read ``TT_ALERT_WEBHOOK_URL``, ``TT_ALERT_WEBHOOK_SECRET`` and ``TT_ALERT_CONSUMER``; the rest is
        ``tuning``'s ``alert_*`` (``TT_TUNE_CONTROL_ALERT_*``)."""
        return cls(
            webhook_url=env_url(env, "TT_ALERT_WEBHOOK_URL", ""),  # a credential: never quoted in an error
            webhook_secret=Secret(env_str(env, "TT_ALERT_WEBHOOK_SECRET")),
            timeout_s=tuning.alert_webhook_timeout_s, retry_base_s=tuning.alert_retry_base_s,
            retry_cap_s=tuning.alert_retry_cap_s, dedupe_s=tuning.alert_dedupe_s, rate_limit=tuning.alert_rate_limit,
            rate_window_s=tuning.alert_rate_window_s, retention_s=tuning.alert_retention_s,
            consumer=env_str(env, "TT_ALERT_CONSUMER", socket.gethostname() or "control"),
            claim_idle_s=tuning.alert_claim_idle_s,
        )

    def __repr__(self) -> str:
        return (f"AlertSettings(webhook_url={'set' if self.webhook_url else 'unset'}, "
                f"webhook_secret={self.webhook_secret!r}, rate_limit={self.rate_limit}/{self.rate_window_s}s, "
                f"dedupe_s={self.dedupe_s}, retention_s={self.retention_s}, consumer={self.consumer!r})")


NO_ALERT_WEBHOOK = AlertSettings()
# the alert constants were TT_ALERT_<NAME> before they became tuning constants
_FORMER = {f"alert_{name}": f"TT_ALERT_{name.upper()}" for name in (
    "webhook_timeout_s", "retry_base_s", "retry_cap_s", "dedupe_s", "rate_limit", "rate_window_s", "retention_s",
    "claim_idle_s")}


@dataclass(frozen=True, slots=True)
class Tuning:
    """The control service's tuning constants (``common.tuning``)."""

    index_resync_s: float = tune(30.0, "the hot subscription index is compared with PostgreSQL this often, and "
                                 "mended where a lost update left it behind", minimum=0.05)
    index_retry_s: float = tune(1.0, "a failed index update is retried after this long", minimum=0.01)
    index_sweep_s: float = tune(1.0, "the queue of subscription writes is swept this often: an index write lost "
                                "with its replica (stopped or killed after the commit) is made by another",
                                minimum=0.05)
    index_full_resync_s: float = tune(600.0, "the whole index is rebuilt from PostgreSQL this often, whatever "
                                      "the checks said", minimum=0.05)
    db_pool_max: int = tune(10, "PostgreSQL connections: the API's peak is a few hundred requests a second of "
                            "short statements", minimum=1, maximum=200)
    db_timeout_s: float = tune(2.0, "wait for a pooled connection, and statement and lock timeout: a request "
                               "fails fast rather than queueing behind an outage", minimum=0.1)
    ready_timeout_s: float = tune(1.0, "each dependency /ready checks gets this long", minimum=0.05)
    idempotency_ttl_s: float = tune(86_400.0, "an Idempotency-Key replays its first answer for a day, longer "
                                    "than any client retries", minimum=1.0)
    grace_s: float = tune(5.0, "graceful-shutdown grace for in-flight calls")
    list_cache_entries: int = tune(50_000, "subscriptions kept rendered for list pages, per (id, version)",
                                   minimum=0, maximum=10_000_000)
    page_cache_mb: int = tune(64, "whole REST list pages kept (checked against their rows' digest; 0 = off): a "
                              "500-row page costs ~0.6 MB to render", minimum=0, maximum=65_536)
    alert_webhook_timeout_s: float = tune(5.0, "deadline of one alert POST", minimum=0.05)
    alert_retry_base_s: float = tune(1.0, "first wait between the POSTs of one alert (doubling)", minimum=0.01)
    alert_retry_cap_s: float = tune(60.0, "longest wait between the POSTs of one alert", minimum=0.01)
    alert_dedupe_s: float = tune(3600.0, "an occurrence raised twice within this is sent once", minimum=1.0)
    alert_rate_limit: int = tune(5, "most alerts sent per key per window (more are held): a flapping check "
                                 "does not flood the channel", minimum=1)
    alert_rate_window_s: float = tune(600.0, "the rate limit's window", minimum=1.0)
    alert_retention_s: float = tune(86_400.0, "an alert is kept and retried this long at most: the webhook's "
                                    "outage budget", minimum=60.0)
    alert_claim_idle_s: float = tune(60.0, "alerts another replica took and left unacknowledged this long are "
                                     "taken over", minimum=1.0)


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything the control service needs from its environment."""

    storage: StorageSettings
    tokens: tuple[Secret, ...]
    security: GrpcSecurity
    host: str = "127.0.0.1"
    grpc_port: int = SERVICE_PORTS["control"]
    insiders_api_url: str = ""
    ready_services: tuple[tuple[str, str], ...] = ()
    tuning: Tuning = Tuning()
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
        tuning = tuning_from_env(Tuning, "control", env, former=_FORMER)
        return cls(
            storage=StorageSettings.from_env(env),
            tokens=load_tokens(env),
            security=security,
            host=host,
            grpc_port=grpc_port(env, "control"),
            insiders_api_url=env_url(env, "TT_INSIDERS_API_URL", ""),
            ready_services=tuple(services),
            tuning=tuning,
            metrics=MetricsSettings.from_env(env, "control"),
            alerts=AlertSettings.from_env(env, tuning),
        )

    def __repr__(self) -> str:
        return (f"Settings(host={self.host!r}, grpc_port={self.grpc_port}, storage={self.storage!r}, "
                f"tokens={len(self.tokens)} x Secret('***'), security={self.security!r}, "
                f"insiders_api_url={redact_url(self.insiders_api_url)!r}, "
                f"ready_services={self.ready_services!r}, tuning={self.tuning!r}, metrics={self.metrics!r}, "
                f"alerts={self.alerts!r})")
