"""What each component makes of a container's environment, read by its own settings code.

A manifest's environment is right when the service's ``from_env`` accepts it (every variable it needs is
there, valid, a non-loopback bind allowed) and says which port it serves and which peers it calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import StorageSettings
from tools import envoy_config
from tools.deploy import spec

# Values an operator's overlay (or compose secret files) would give the placeholder credentials.
CREDENTIALS = {
    spec.CONTROL_API_TOKEN: "ab" * 32,
    spec.INTERNAL_TOKEN: "cd" * 32,
    spec.INSIDERS_API_TOKEN: "",
    spec.ALERT_WEBHOOK_SECRET: "",
    spec.DATABASE_URL: "postgresql://tradingtools:pw@postgres:5432/tradingtools",
    spec.REDIS_URL: "redis://:pw@redis:6379/0",
}


@dataclass(frozen=True)
class Served:
    """A component as its settings see it: what it binds and whom it calls (peer → ``host:port``)."""

    host: str
    port: int
    calls: dict[str, str]


def served(component: str, env: Mapping[str, str]) -> Served:
    """Load ``component``'s settings from ``env`` (ConfigError when the environment is incomplete)."""
    if component == "envoy":
        gw = envoy_config.GatewaySettings.from_env(env)
        return Served(gw.listen_address, gw.gateway_port, {"control": f"{gw.control_host}:{gw.control_port}"})
    StorageSettings.from_env(env)
    if component == "ingest":
        from services.ingest.config import IngestSettings

        s = IngestSettings.from_env(env)
        return Served(s.grpc_host, s.grpc_port, {})
    if component == "router":
        from services.router.config import Settings as RouterSettings

        r = RouterSettings.from_env(env)
        return Served(r.grpc_host, r.grpc_port, {"ingest": r.ingest_target})
    if component == "executor":
        from services.executor.config import Settings as ExecutorSettings

        e = ExecutorSettings.from_env(env)
        return Served(e.host, e.grpc_port, {"router": e.router_target, "ingest": e.ingest_target})
    if component == "guard":
        from services.guard.config import Settings as GuardSettings

        g = GuardSettings.from_env(env)
        return Served(g.host, g.grpc_port, {"ingest": g.ingest_target, "executor": g.executor_target,
                                            "control": g.control_target})
    if component == "control":
        from services.control.config import Settings as ControlSettings

        c = ControlSettings.from_env(env)
        return Served(c.host, c.grpc_port, dict(c.ready_services))
    raise ValueError(f"unknown component {component}")
