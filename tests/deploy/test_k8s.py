"""deploy/k8s: rendered as ``kubectl kustomize`` would, schema-checked, and held against the services' own
settings code (ports, binds, peers), the Dockerfile's user and the measured memory."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from common.config import project_root
from tests.deploy.k8s_schema import problems
from tests.deploy.kustomize import build
from tests.deploy.settings import CREDENTIALS, served
from tools.deploy import __main__ as generator
from tools.deploy import k8s, spec

K8S = project_root() / "deploy" / "k8s"
# Resident memory measured by the benchmarks (bench/results: pipeline rss_mb, executor peak), in MB.
MEASURED_RSS_MB = {"control": 70, "ingest": 132, "router": 150, "executor": 195, "guard": 175, "envoy": 70}
METRICS_PORTS = {s.name: s.metrics_port for s in spec.SERVICES}
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return build(K8S)


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod(deployment: Obj) -> Obj:
    spec_: Obj = deployment["spec"]["template"]["spec"]
    return spec_


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) or (
                op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def container_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """A container's environment: its ConfigMaps, and its Secrets' keys with the operator's values."""
    configmaps, secrets = by_kind(objects, "ConfigMap"), by_kind(objects, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] in configmaps, f"no ConfigMap {source['configMapRef']['name']}"
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secrets, f"{container['name']}: no Secret {ref['name']}"
        data = secrets[ref["name"]]["data"]
        assert ref["key"] in data, f"Secret {ref['name']} has no key {ref['key']}"
        assert base64.b64decode(data[ref["key"]]) == b"", "the base holds placeholders, never a credential"
        env[var["name"]] = CREDENTIALS[ref["key"]]
    return env


def app_container(deployment: Obj) -> Obj:
    """The container running the component's own program (the app's, or Envoy's render step)."""
    containers = [*pod(deployment).get("initContainers", []), *pod(deployment)["containers"]]
    found = [c for c in containers if c["image"] == spec.IMAGE]
    assert len(found) == 1, f"{deployment['metadata']['name']}: one container of {spec.IMAGE} expected"
    return found[0]


def test_the_generated_files_are_up_to_date() -> None:
    assert generator.stale() == [], "run python -m tools.deploy"


def test_the_kustomization_renders_every_listed_file_into_schema_valid_objects(objects: list[Obj]) -> None:
    listed = set(k8s.files()) - {"kustomization.yaml", "config.env"}
    assert {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} == listed
    assert [p for o in objects for p in problems(o)] == []
    assert all(o["metadata"]["namespace"] == k8s.NAMESPACE for o in objects)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    assert set(by_kind(objects, "Deployment")) == {c.name for c in spec.COMPONENTS}
    assert set(by_kind(objects, "Service")) == {c.name for c in spec.COMPONENTS}
    secret_keys = {k for s in by_kind(objects, "Secret").values() for k in s["data"]}
    assert secret_keys == set(spec.SECRETS)


@pytest.mark.parametrize("component", [c.name for c in spec.COMPONENTS])
def test_each_component_serves_the_port_its_probes_service_and_policy_name(objects: list[Obj],
                                                                           component: str) -> None:
    deployment = by_kind(objects, "Deployment")[component]
    container = app_container(deployment)
    env = container_env(objects, container)
    got = served(component, env)  # the component's own settings code accepts the environment
    assert got.host == "0.0.0.0"
    argv = container["args"]
    assert argv[:2] == ["python", "-m"] and importlib.util.find_spec(argv[2]) is not None
    serving = pod(deployment)["containers"][-1]
    ports = {p["name"]: p["containerPort"] for p in serving["ports"]}
    served_port = ports.get("grpc", ports.get("http"))
    assert served_port == got.port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in serving:
            handler = next(iter(v for k, v in serving[probe].items() if k in ("grpc", "httpGet", "tcpSocket")))
            assert handler["port"] == got.port, probe
    if component != "envoy":
        assert {p for p in ("startupProbe", "readinessProbe", "livenessProbe") if "grpc" in serving[p]} == \
            {"startupProbe", "readinessProbe", "livenessProbe"}
        assert ports["metrics"] == int(env[f"TT_{component.upper()}_METRICS_PORT"])
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports["metrics"])
    svc = by_kind(objects, "Service")[component]
    assert selects({"matchLabels": svc["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])
    for port in svc["spec"]["ports"]:
        assert ports[port["targetPort"]] == port["port"]


def test_every_call_between_components_is_allowed_and_nothing_else(objects: list[Obj]) -> None:
    deployments, services = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    calls: set[tuple[str, str, int]] = set()  # (caller, callee, port)
    for name, deployment in deployments.items():
        for target in served(name, container_env(objects, app_container(deployment))).calls.values():
            host, port = target.rsplit(":", 1)
            assert host in services, f"{name} calls {target}: no such Service"
            callee = services[host]["spec"]["selector"][k8s.NAME]
            calls.add((name, callee, int(port)))
    allowed: set[tuple[str, str, int]] = set()
    open_ports: set[tuple[str, int]] = set()
    for policy in by_kind(objects, "NetworkPolicy").values():
        targets = [n for n, d in deployments.items()
                   if selects(policy["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"{policy['metadata']['name']} selects no Deployment"
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule["ports"]]
            for target in targets:
                container_ports = {p["containerPort"] for p in pod(deployments[target])["containers"][-1]["ports"]}
                assert set(ports) <= container_ports, f"{policy['metadata']['name']} opens a port {target} lacks"
            if "from" not in rule:
                open_ports |= {(t, p) for t in targets for p in ports}
                continue
            for peer in rule["from"]:
                if "namespaceSelector" in peer:  # Prometheus: metrics ports only
                    assert all(p == METRICS_PORTS[t] for t in targets for p in ports)
                    continue
                callers = [n for n, d in deployments.items()
                           if selects(peer["podSelector"], d["spec"]["template"]["metadata"]["labels"])]
                assert callers, f"{policy['metadata']['name']}: a peer that selects no Deployment"
                allowed |= {(c, t, p) for c in callers for t in targets for p in ports}
    assert calls == allowed
    assert open_ports == {("envoy", spec.GATEWAY_PORT)}


def test_a_default_deny_policy_covers_every_pod(objects: list[Obj]) -> None:
    deny = by_kind(objects, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    for deployment in by_kind(objects, "Deployment").values():
        assert selects(deny["podSelector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_the_executor_is_replaced_never_overlapped(objects: list[Obj]) -> None:
    executor = by_kind(objects, "Deployment")["executor"]["spec"]
    assert executor["strategy"] == {"type": "Recreate"} and executor["replicas"] == 1


@pytest.mark.parametrize("component", [c.name for c in spec.COMPONENTS])
def test_resources_cover_the_measured_memory_and_pods_run_as_the_images_user(objects: list[Obj],
                                                                            component: str) -> None:
    deployment = by_kind(objects, "Deployment")[component]
    security = pod(deployment)["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == spec.UID
    dockerfile = (project_root() / "Dockerfile").read_text()
    assert f"USER {spec.UID}:{spec.UID}" in dockerfile
    serving = pod(deployment)["containers"][-1]
    requests, limits = serving["resources"]["requests"], serving["resources"]["limits"]
    assert requests["cpu"].endswith("m") and "cpu" not in limits
    request_mi, limit_mi = int(requests["memory"].removesuffix("Mi")), int(limits["memory"].removesuffix("Mi"))
    assert request_mi * 1.048576 >= MEASURED_RSS_MB[component]  # Mi → MB
    assert limit_mi >= 1.5 * request_mi
    for container in [*pod(deployment).get("initContainers", []), *pod(deployment)["containers"]]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    from tests.deploy.kustomize import KustomizeError

    (tmp_path / "Kustomization").write_text('{"apiVersion": "kustomize.config.k8s.io/v1beta1", '
                                            '"kind": "Kustomization", "patches": []}')
    with pytest.raises(KustomizeError, match="patches"):
        build(tmp_path)
