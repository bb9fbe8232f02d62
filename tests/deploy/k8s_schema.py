"""A structural schema of the Kubernetes objects the manifests use: kinds, required fields, field names
(a typo is an unknown field), value types, label syntax and quantities.

Not the full OpenAPI schema (that needs the cluster's or a download): the subset of apps/v1 Deployment,
v1 Service / ConfigMap / Secret and networking.k8s.io/v1 NetworkPolicy that deploy/k8s writes, checked as
strictly as the API server would for those fields. Keys ending in ``!`` are required.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

KINDS = {("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("apps/v1", "Deployment"),
         ("networking.k8s.io/v1", "NetworkPolicy")}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]


class Labels:
    """A map of label keys to label values."""


class Annotations:
    """A map of qualified keys to any string."""


class StrMap:
    """A map of strings to strings."""


class Quantity:
    """``250m``, ``128Mi`` …"""


class IntOrString:
    """A port number or a port name."""


class Port:
    """An int in 1..65535."""


class CountOrPercent:
    """``maxSurge`` / ``maxUnavailable``: an int >= 0 or ``"25%"``."""


META = {"name!": str, "namespace": str, "labels": Labels, "annotations": Annotations}
SELECTOR = {"matchLabels": Labels,
            "matchExpressions": [{"key!": str, "operator!": Enum(("In", "NotIn", "Exists", "DoesNotExist")),
                                  "values": [str]}]}
PROBE = {"grpc": {"port!": Port, "service": str}, "httpGet": {"path": str, "port!": IntOrString, "scheme": str},
         "tcpSocket": {"port!": IntOrString}, "exec": {"command!": [str]},
         "initialDelaySeconds": int, "periodSeconds": int, "timeoutSeconds": int, "failureThreshold": int,
         "successThreshold": int}
RESOURCES = {"requests": {"cpu": Quantity, "memory": Quantity}, "limits": {"cpu": Quantity, "memory": Quantity}}
ENV = {"name!": str, "value": str,
       "valueFrom": {"secretKeyRef": {"name!": str, "key!": str, "optional": bool},
                     "configMapKeyRef": {"name!": str, "key!": str, "optional": bool}}}
CONTAINER = {
    "name!": str, "image!": str, "imagePullPolicy": Enum(("Always", "IfNotPresent", "Never")),
    "command": [str], "args": [str], "workingDir": str,
    "ports": [{"name": str, "containerPort!": Port, "protocol": Enum(("TCP", "UDP", "SCTP"))}],
    "env": [ENV],
    "envFrom": [{"configMapRef": {"name!": str, "optional": bool}, "secretRef": {"name!": str, "optional": bool},
                 "prefix": str}],
    "startupProbe": PROBE, "readinessProbe": PROBE, "livenessProbe": PROBE,
    "resources": RESOURCES,
    "securityContext": {"allowPrivilegeEscalation": bool, "readOnlyRootFilesystem": bool, "privileged": bool,
                        "runAsNonRoot": bool, "runAsUser": int, "runAsGroup": int,
                        "capabilities": {"drop": [str], "add": [str]}},
    "volumeMounts": [{"name!": str, "mountPath!": str, "readOnly": bool, "subPath": str}],
}
POD = {
    "automountServiceAccountToken": bool, "enableServiceLinks": bool, "terminationGracePeriodSeconds": int,
    "serviceAccountName": str,
    "securityContext": {"runAsNonRoot": bool, "runAsUser": int, "runAsGroup": int, "fsGroup": int,
                        "seccompProfile": {"type!": Enum(("RuntimeDefault", "Localhost", "Unconfined"))}},
    "initContainers": [CONTAINER], "containers!": [CONTAINER],
    "volumes": [{"name!": str, "emptyDir": {"medium": Enum(("", "Memory")), "sizeLimit": Quantity},
                 "configMap": {"name!": str}, "secret": {"secretName!": str}}],
}
PEER = {"podSelector": SELECTOR, "namespaceSelector": SELECTOR, "ipBlock": {"cidr!": str, "except": [str]}}
NP_PORT = {"protocol": Enum(("TCP", "UDP", "SCTP")), "port": IntOrString, "endPort": int}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Deployment": {"apiVersion!": str, "kind!": str, "metadata!": META, "spec!": {
        "replicas": int, "revisionHistoryLimit": int, "selector!": SELECTOR, "minReadySeconds": int,
        "strategy": {"type!": Enum(("Recreate", "RollingUpdate")),
                     "rollingUpdate": {"maxSurge": CountOrPercent, "maxUnavailable": CountOrPercent}},
        "template!": {"metadata": {"labels": Labels, "annotations": Annotations}, "spec!": POD}}},
    "Service": {"apiVersion!": str, "kind!": str, "metadata!": META, "spec!": {
        "type": Enum(("ClusterIP", "NodePort", "LoadBalancer")), "selector": Labels,
        "ports!": [{"name": str, "port!": Port, "targetPort": IntOrString, "protocol": Enum(("TCP", "UDP")),
                    "appProtocol": str}]}},
    "NetworkPolicy": {"apiVersion!": str, "kind!": str, "metadata!": META, "spec!": {
        "podSelector!": SELECTOR, "policyTypes": [Enum(("Ingress", "Egress"))],
        "ingress": [{"from": [PEER], "ports": [NP_PORT]}], "egress": [{"to": [PEER], "ports": [NP_PORT]}]}},
    "ConfigMap": {"apiVersion!": str, "kind!": str, "metadata!": META, "data": StrMap},
    "Secret": {"apiVersion!": str, "kind!": str, "metadata!": META, "type": str, "data": StrMap},
}


def _check(value: Any, schema: Any, path: str, out: list[str]) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            out.append(f"{path}: expected an object")
            return
        fields = {k.rstrip("!"): k.endswith("!") for k in schema}
        out.extend(f"{path}.{k}: unknown field" for k in value if k not in fields)
        out.extend(f"{path}.{k}: required" for k, required in fields.items() if required and k not in value)
        for key, sub in schema.items():
            if key.rstrip("!") in value:
                _check(value[key.rstrip("!")], sub, f"{path}.{key.rstrip('!')}", out)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            out.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            _check(item, schema[0], f"{path}[{i}]", out)
    elif isinstance(schema, Enum):
        if value not in schema.values:
            out.append(f"{path}: {value!r} is not one of {schema.values}")
    elif schema is Labels:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and LABEL_KEY.match(k) and isinstance(v, str) and len(v) <= 63
                and LABEL_VALUE.match(v) for k, v in value.items()):
            out.append(f"{path}: invalid labels {value!r}")
    elif schema in (Annotations, StrMap):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            out.append(f"{path}: expected a map of strings")
    elif schema is Quantity:
        if not isinstance(value, str) or not QUANTITY.match(value):
            out.append(f"{path}: {value!r} is not a quantity")
    elif schema is Port:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            out.append(f"{path}: {value!r} is not a port")
    elif schema is IntOrString:
        if not (isinstance(value, str) and DNS_LABEL.match(value) and len(value) <= 15) and not (
                isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536):
            out.append(f"{path}: {value!r} is neither a port number nor a port name")
    elif schema is CountOrPercent:
        if not (isinstance(value, str) and re.match(r"^[0-9]+%$", value)) and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            out.append(f"{path}: {value!r} is neither a count nor a percentage")
    elif schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{path}: expected an integer")
    elif not isinstance(value, schema):
        out.append(f"{path}: expected {schema.__name__}")


def problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with ``obj`` ([] when it conforms)."""
    kind = obj.get("kind", "")
    where = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
    if (obj.get("apiVersion"), kind) not in KINDS:
        return [f"{where}: unknown apiVersion/kind {obj.get('apiVersion')}/{kind}"]
    out: list[str] = []
    _check(obj, SCHEMAS[kind], where, out)
    name = obj.get("metadata", {}).get("name", "")
    if not (DNS_LABEL.match(name) and len(name) <= 63):
        out.append(f"{where}: metadata.name is not a DNS label")
    for pod in [obj["spec"]["template"]["spec"]] if kind == "Deployment" and not out else []:
        out += _pod_problems(where, pod)
    if kind == "Secret":
        for key, value in obj.get("data", {}).items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                out.append(f"{where}: data.{key} is not base64")
    return out


def _pod_problems(where: str, pod: dict[str, Any]) -> list[str]:
    out: list[str] = []
    volumes = {v["name"] for v in pod.get("volumes", [])}
    for v in pod.get("volumes", []):
        if sum(k in v for k in ("emptyDir", "configMap", "secret")) != 1:
            out.append(f"{where}: volume {v['name']} needs exactly one source")
    names = [c["name"] for c in [*pod.get("initContainers", []), *pod["containers"]]]
    if len(names) != len(set(names)):
        out.append(f"{where}: container names repeat")
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        ports = [p.get("name") for p in c.get("ports", []) if p.get("name")]
        if len(ports) != len(set(ports)) or not all(DNS_LABEL.match(p) and len(p) <= 15 for p in ports):
            out.append(f"{where}/{c['name']}: port names must be unique DNS labels of 15 characters at most")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c and sum(h in c[probe] for h in ("grpc", "httpGet", "tcpSocket", "exec")) != 1:
                out.append(f"{where}/{c['name']}: {probe} needs exactly one handler")
        for e in c.get("env", []):
            if not ENV_NAME.match(e["name"]) or ("value" in e) == ("valueFrom" in e):
                out.append(f"{where}/{c['name']}: env {e['name']} needs a valid name and one of value/valueFrom")
        out += [f"{where}/{c['name']}: mounts unknown volume {m['name']}"
                for m in c.get("volumeMounts", []) if m["name"] not in volumes]
    return out
