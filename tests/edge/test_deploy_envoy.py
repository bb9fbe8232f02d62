"""The deployment's Envoy config (rendered in the app image, served by Envoy's own) and the containers' health
checks, for real: Envoy reaches control by name through the rendered config, the checks pass and fail."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from common.config import Secret, project_root
from common.embedded import free_port
from tests.edge.conftest import EdgeStack, spawn
from tests.helpers import eventually_sync
from tools import envoy_config
from tools.deploy import compose, spec
from tools.deploy.envoy import deploy_template

WALLET = "0x" + "ab" * 20


@pytest.mark.parametrize(("host", "dns"), [("control", True), ("control.tradingtools.svc", True),
                                           ("127.0.0.1", False), ("::1", False)])
def test_a_control_host_name_is_resolved_an_address_is_not(host: str, dns: bool) -> None:
    template = envoy_config.TEMPLATE.read_text()
    text = deploy_template(host, template)
    assert ("type: STRICT_DNS" in text) is dns and (text == template) is not dns


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=project_root(), env=env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.integration
def test_envoy_serves_the_api_on_the_deploy_config_and_passes_its_compose_healthcheck(
        edge: EdgeStack, tmp_path: Path) -> None:
    gateway, admin = free_port(), tmp_path / "admin.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update({"CONTROL_API_TOKEN": ",".join(edge.tokens), "TT_CONTROL_GRPC_HOST": "localhost",
                "TT_CONTROL_GRPC_PORT": str(edge.control_port), "TT_GATEWAY_PORT": str(gateway),
                "TT_GATEWAY_ADMIN_SOCKET": str(admin), "TT_GATEWAY_ACCESS_LOG": str(tmp_path / "access.log"),
                "TT_RUN_DIR": str(tmp_path / "run")})
    out = tmp_path / "shared" / "envoy.yaml"
    rendered = _run([sys.executable, "-m", "tools.deploy.envoy", "--out", str(out)], env)
    assert rendered.returncode == 0, rendered.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and (out.parent / "tradingtools.pb").is_file()
    assert f'proto_descriptor: "{out.parent / "tradingtools.pb"}"' in out.read_text()
    settings = envoy_config.GatewaySettings(tokens=tuple(Secret(t) for t in edge.tokens), gateway_port=gateway,
                                            admin_socket=admin)
    check = compose.envoy()["healthcheck"]["test"]
    assert check[:3] == ["CMD", "bash", "-c"]
    command = check[3].replace(f"/{spec.GATEWAY_PORT} ", f"/{gateway} ")
    envoy = spawn("envoy", envoy_config.envoy_command(out, settings), tmp_path / "envoy.log", os.environ)
    try:
        url = f"http://127.0.0.1:{gateway}"

        def answers() -> bool:
            assert envoy.alive(), envoy.log_tail()
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually_sync(answers, timeout_s=30, message="envoy on the deploy config")
        listed = httpx.get(f"{url}/subscriptions", params={"followerProxy": WALLET},
                           headers=edge.auth(), timeout=5)
        assert listed.status_code == 200 and "subscriptions" in listed.json()
        assert _run(["bash", "-c", command], env).returncode == 0
    finally:
        envoy.stop()
    assert _run(["bash", "-c", command], env).returncode != 0  # nothing listens any more


@pytest.mark.integration
def test_the_grpc_health_check_of_the_containers(edge: EdgeStack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}

    def health(*args: str) -> int:
        return _run([sys.executable, "-m", "tools.deploy.health", *args], env).returncode

    assert health(str(edge.control_port)) == 0
    assert health(str(free_port())) == 1
    assert health("control") == 2
