"""The Kubernetes manifests of ``deploy/k8s/`` (JSON, which kustomize and kubectl read like YAML).

``kubectl kustomize deploy/k8s`` renders: a ConfigMap of the settings (``config.env``), one Secret per
credential (placeholders: an overlay replaces them, see ``deploy/README.md``), and per component a List of its
Deployment, Service and NetworkPolicy, behind a NetworkPolicy that denies every other way in.
"""

from __future__ import annotations

import json
from typing import Any

from tools.deploy import spec
from tools.deploy.spec import APP, Component
from tools.envoy_config import ACCESS_LOG_FLUSH_ARGS

NAME = "app.kubernetes.io/name"
PART_OF = "app.kubernetes.io/part-of"
CONFIG = f"{APP}-config"
NAMESPACE = APP
Obj = dict[str, Any]


def labels(c: Component) -> dict[str, str]:
    """The labels that select ``c``'s pods (also its Service's and NetworkPolicy's selector)."""
    return {NAME: c.name, PART_OF: APP}


def _meta(c: Component, **extra: Any) -> Obj:
    return {"name": c.name, "labels": {**labels(c), "app.kubernetes.io/version": spec.VERSION}, **extra}


def _env(c: Component) -> list[Obj]:
    return [{"name": var, "valueFrom": {"secretKeyRef": {"name": spec.secret_name(var), "key": var,
                                                         **({"optional": True} if var in spec.OPTIONAL_SECRETS
                                                            else {})}}}
            for var in c.secrets]


def _strategy(c: Component) -> Obj:
    if c.strategy == "recreate":
        return {"type": "Recreate"}
    if c.strategy == "surge":
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def _resources(c: Component) -> Obj:
    # No CPU limit: CFS throttling would add its period to the copy path's latency.
    return {"requests": {"cpu": f"{c.cpu_request_m}m", "memory": f"{c.memory_request_mi}Mi"},
            "limits": {"memory": f"{c.memory_limit_mi}Mi"}}


_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}
_TMP = {"name": "tmp", "mountPath": "/tmp"}


def _grpc_probe(port: int, period_s: int, failures: int, timeout_s: int = 2) -> Obj:
    return {"grpc": {"port": port}, "periodSeconds": period_s, "timeoutSeconds": timeout_s,
            "failureThreshold": failures}


def service_container(c: Component) -> Obj:
    """A service's container: the image's entry point running ``python -m services.<name>``."""
    return {
        "name": c.name, "image": c.image, "imagePullPolicy": "IfNotPresent",
        "args": ["python", "-m", c.module],
        "ports": [{"name": "grpc", "containerPort": c.port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": c.metrics_port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": CONFIG}}],
        "env": _env(c),
        # Start-up may wait on migrations (control) or on the lease (an executor standby): five minutes.
        "startupProbe": _grpc_probe(c.port, 2, 150),
        "readinessProbe": _grpc_probe(c.port, 5, 2),
        "livenessProbe": _grpc_probe(c.port, 10, 3, 3),
        "resources": _resources(c),
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [_TMP],
    }


def envoy_containers(c: Component) -> tuple[list[Obj], list[Obj]]:
    """Envoy's init container (renders its config with the app image) and Envoy itself."""
    shared = {"name": "envoy-config", "mountPath": spec.ENVOY_CONFIG_DIR}
    render = {
        "name": "render-config", "image": spec.IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["python", "-m", "tools.deploy.envoy", "--out", f"{spec.ENVOY_CONFIG_DIR}/envoy.yaml"],
        "envFrom": [{"configMapRef": {"name": CONFIG}}],
        "env": _env(c),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [shared, _TMP],
    }
    envoy = {
        "name": "envoy", "image": c.image, "imagePullPolicy": "IfNotPresent",
        "command": ["envoy"],
        "args": ["-c", f"{spec.ENVOY_CONFIG_DIR}/envoy.yaml", "--disable-hot-restart", "--concurrency", "2",
                 "--log-level", "warn", "--drain-time-s", "5", *ACCESS_LOG_FLUSH_ARGS],
        "ports": [{"name": "http", "containerPort": c.port, "protocol": "TCP"}],
        # Ready when control answers through it; alive while it accepts connections (a control outage must
        # not restart the edge).
        "readinessProbe": {"httpGet": {"path": "/health", "port": c.port}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"tcpSocket": {"port": c.port}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": _resources(c),
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [{**shared, "readOnly": True}, _TMP],
    }
    return [render], [envoy]


def deployment(c: Component) -> Obj:
    """``c``'s Deployment."""
    if c is spec.ENVOY:
        init, containers = envoy_containers(c)
        volumes = [{"name": "envoy-config", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]
        annotations: dict[str, str] = {}
    else:
        init, containers, volumes = [], [service_container(c)], []
        annotations = {"tradingtools.io/plain-text-grpc": spec.INSECURE_BIND_WHY}
    pod: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": spec.UID, "runAsGroup": spec.UID,
                            "fsGroup": spec.UID, "seccompProfile": {"type": "RuntimeDefault"}},
        **({"initContainers": init} if init else {}),
        "containers": containers,
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    template_meta: Obj = {"labels": labels(c)}
    if c.metrics_port:
        template_meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(c.metrics_port),
                                        "prometheus.io/path": "/metrics"}
    meta = _meta(c, **({"annotations": annotations} if annotations else {}))
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": c.replicas, "revisionHistoryLimit": 5, "selector": {"matchLabels": labels(c)},
                     "strategy": _strategy(c), "template": {"metadata": template_meta, "spec": pod}}}


def service(c: Component) -> Obj:
    """``c``'s ClusterIP Service (its gRPC or HTTP port, and its metrics port)."""
    if c is spec.ENVOY:
        ports = [{"name": "http", "port": c.port, "targetPort": "http", "protocol": "TCP"}]
    else:
        ports = [{"name": "grpc", "port": c.port, "targetPort": "grpc", "protocol": "TCP",
                  "appProtocol": "kubernetes.io/h2c"},
                 {"name": "metrics", "port": c.metrics_port, "targetPort": "metrics", "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(c),
            "spec": {"type": "ClusterIP", "selector": labels(c), "ports": ports}}


def network_policy(c: Component) -> Obj:
    """Who may open ``c``'s ports: its callers its service port, Prometheus its metrics port."""
    port = [{"protocol": "TCP", "port": c.port}]
    rules: list[Obj]
    if c.callers == ("*",):
        rules = [{"ports": port}]
    else:
        callers = {"matchLabels": {PART_OF: APP},
                   "matchExpressions": [{"key": NAME, "operator": "In", "values": sorted(c.callers)}]}
        rules = [{"from": [{"podSelector": callers}], "ports": port}]
    if c.metrics_port:
        prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": spec.PROMETHEUS_NAMESPACE}},
                      "podSelector": {"matchLabels": {NAME: spec.PROMETHEUS_NAME}}}
        rules.append({"from": [prometheus], "ports": [{"protocol": "TCP", "port": c.metrics_port}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"{c.name}-ingress", "labels": labels(c)},
            "spec": {"podSelector": {"matchLabels": labels(c)}, "policyTypes": ["Ingress"], "ingress": rules}}


def default_deny() -> Obj:
    """No way into any pod of the engine but the ones the components' policies open."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-ingress", "labels": {PART_OF: APP}},
            "spec": {"podSelector": {"matchLabels": {PART_OF: APP}}, "policyTypes": ["Ingress"]}}


def kustomization(resources: list[str]) -> Obj:
    """The kustomization: the namespace, the resources, the ConfigMap and Secret generators."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": resources,
        "configMapGenerator": [{"name": CONFIG, "envs": ["config.env"]}],
        # Placeholders: replace them in an overlay (behavior: replace) from files kept out of git.
        "secretGenerator": [{"name": spec.secret_name(var), "literals": [f"{var}="]} for var in spec.SECRETS],
    }


def config_env() -> str:
    """``config.env``: the settings every container reads (``KEY=value`` lines)."""
    why = "\n".join(f"# {line}".rstrip() for line in spec.WHY.splitlines())
    lines = [f"{k}={v}" for k, v in spec.settings().items()]
    return f"# Generated by python -m tools.deploy: edit tools/deploy/spec.py, not this file.\n#\n{why}\n" + \
        "\n".join(lines) + "\n"


def _json(obj: Obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def files() -> dict[str, str]:
    """Every file of ``deploy/k8s/`` by name."""
    out = {"default-deny.yaml": _json(default_deny())}
    for c in spec.COMPONENTS:
        out[f"{c.name}.yaml"] = _json({"apiVersion": "v1", "kind": "List",
                                      "items": [deployment(c), service(c), network_policy(c)]})
    out["kustomization.yaml"] = _json(kustomization(list(out)))
    out["config.env"] = config_env()
    return out
