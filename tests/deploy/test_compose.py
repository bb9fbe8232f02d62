"""deploy/compose.yaml: real PostgreSQL, Redis and Envoy images beside the app, every credential a compose
secret, healthchecks, start order, and each service's environment accepted by its own settings code."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import StorageSettings, project_root
from tests.deploy.settings import CREDENTIALS, served
from tools.deploy import compose, spec

DEPLOY = project_root() / "deploy"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_VARIABLE = re.compile(r"\$(\$|\{(\w+)(:?-([^}]*))?\}|(\w+))")
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def file() -> Obj:
    text = (DEPLOY / "compose.yaml").read_text()
    data: Obj = json.loads(text)
    assert yaml.safe_load(text) == data  # JSON written as YAML: what docker compose's YAML parser reads
    return data


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}``."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        name = m.group(2) or m.group(5)
        if m.group(3) is None:
            return env.get(name, "")
        unset = name not in env or (m.group(3).startswith(":") and not env[name])
        return m.group(4) if unset else env[name]
    return _VARIABLE.sub(one, text)


def entrypoint_variables() -> set[str]:
    """The variables ``deploy/docker-entrypoint.sh`` reads from ``<VAR>_FILE``."""
    match = re.search(r"^for name in ([A-Z_ ]+); do$", (DEPLOY / "docker-entrypoint.sh").read_text(), re.M)
    assert match
    return set(match.group(1).split())


def container_env(service: Obj) -> dict[str, str]:
    """A service's environment as its process sees it: interpolated, secret files read by the entry point."""
    env = {k: interpolate(v, {}) for k, v in service.get("environment", {}).items()}
    for key in [k for k in env if k.endswith("_FILE") and k.removesuffix("_FILE") in entrypoint_variables()]:
        env[key.removesuffix("_FILE")] = CREDENTIALS[key.removesuffix("_FILE")]
        del env[key]
    return env


def test_the_services_and_their_images(file: Obj) -> None:
    services = file["services"]
    assert set(services) == {"postgres", "redis", "envoy-config", "envoy", *(s.name for s in spec.SERVICES)}
    assert services["postgres"]["image"].startswith("postgres:") and services["redis"]["image"].startswith("redis:")
    assert services["envoy"]["image"] == spec.ENVOY_IMAGE
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
    for s in spec.SERVICES:
        assert services[s.name]["image"] == spec.IMAGE
        assert services[s.name]["command"] == ["python", "-m", f"services.{s.name}"]
        assert (project_root() / "services" / s.name / "__main__.py").is_file()


def test_healthchecks_and_start_order(file: Obj) -> None:
    services = file["services"]
    for name, service in services.items():
        if name == "envoy-config":
            assert service["restart"] == "no" and "healthcheck" not in service
            continue
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services and how["condition"] in CONDITIONS
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency]
    for s in spec.SERVICES:
        depends = services[s.name]["depends_on"]
        assert depends["postgres"] == depends["redis"] == {"condition": "service_healthy"}
        if s.name != "control":  # control migrates the database first
            assert depends["control"] == {"condition": "service_healthy"}
    assert services["envoy"]["depends_on"]["envoy-config"] == {"condition": "service_completed_successfully"}


def test_every_credential_is_a_secret_file(file: Obj) -> None:
    declared = file["secrets"]
    assert set(declared) == set(compose.secret_names())
    assert all(s == {"file": f"./{compose.SECRETS_DIR}/{name}"} for name, s in declared.items())
    readable = entrypoint_variables()
    for name, service in file["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for key, value in service.get("environment", {}).items():
            assert not any(word in key for word in ("TOKEN", "PASSWORD", "SECRET")) or key.endswith("_FILE"), \
                f"{name}: {key} holds a credential in plain sight"
            if key.endswith("_FILE"):
                assert value.startswith("/run/secrets/") and value.removeprefix("/run/secrets/") in mounted
                assert name in ("postgres",) or key.removesuffix("_FILE") in readable, key


@pytest.mark.parametrize("component", [c.name for c in spec.SERVICES])
def test_each_service_reads_its_environment_and_reaches_its_peers(file: Obj, component: str) -> None:
    services = file["services"]
    got = served(component, container_env(services[component]))
    assert got.host == "0.0.0.0"
    assert services[component]["healthcheck"]["test"] == ["CMD", "python", "-m", "tools.deploy.health",
                                                          str(got.port)]
    for peer, target in got.calls.items():
        host, port = target.rsplit(":", 1)
        assert host == peer and host in services
        assert int(port) == served(peer, container_env(services[peer])).port


def test_envoy_reads_the_config_its_render_step_writes(file: Obj) -> None:
    services = file["services"]
    render, envoy = services["envoy-config"], services["envoy"]
    got = served("envoy", container_env(render))
    assert got.calls == {"control": f"control:{served('control', container_env(services['control'])).port}"}
    assert envoy["ports"] == [f"127.0.0.1:{got.port}:{got.port}"]
    assert render["command"][:3] == ["python", "-m", "tools.deploy.envoy"]
    out = Path(render["command"][render["command"].index("--out") + 1])
    volume = render["volumes"][0].split(":")
    assert volume[1] == str(out.parent) and f"{volume[0]}:{out.parent}:ro" in envoy["volumes"]
    assert envoy["command"][:2] == ["-c", str(out)] and envoy["user"] == f"{spec.UID}:{spec.UID}"


def test_storage_stays_on_the_internal_network_and_redis_keeps_its_append_only_file(file: Obj) -> None:
    services = file["services"]
    assert file["networks"]["data"] == {"internal": True}
    for name in ("postgres", "redis"):
        assert services[name]["networks"] == ["data"] and "ports" not in services[name]
    published = {name for name, s in services.items() if "ports" in s}
    assert published == {"envoy"} and all(p.startswith("127.0.0.1:") for p in services["envoy"]["ports"])
    redis_run = interpolate(services["redis"]["command"][-1], {})
    assert "--appendonly yes" in redis_run and "--appendfsync everysec" in redis_run
    assert "$(cat /run/secrets/redis_password)" in redis_run


def test_the_secret_files_it_creates_fit_the_services(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    created = compose.create_secret_files(folder)
    assert sorted(created) == sorted(compose.secret_names())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o644 for n in created)
    values = {n: (folder / n).read_text().strip() for n in created}
    env = {var: values[compose.secret_file(var)] for var in spec.SECRETS}
    StorageSettings.from_env(env)
    assert f":{values['postgres_password']}@postgres:5432/" in env[spec.DATABASE_URL]
    assert f":{values['redis_password']}@redis:6379/" in env[spec.REDIS_URL]
    assert env[spec.CONTROL_API_TOKEN] != env[spec.INTERNAL_TOKEN]
    assert all(re.fullmatch(r"[0-9a-f]{64}", env[v]) for v in (spec.CONTROL_API_TOKEN, spec.INTERNAL_TOKEN))
    (folder / "internal_token").write_text("kept")
    assert compose.create_secret_files(folder) == [] and (folder / "internal_token").read_text() == "kept"


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""), ("${A}", {"A": "v"}, "v"),
    ("$$(cat f)", {}, "$(cat f)"), ("$A/b", {"A": "v"}, "v/b"),
])
def test_interpolation_as_compose_does_it(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected
