"""/ready through Envoy names what is down: Redis, PostgreSQL or the control service itself."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from common.embedded import start_redis, stop_pid
from tests.edge.conftest import EdgeStack, Envoy, raw_request, start_control, start_envoy
from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration


def test_ready_is_503_naming_redis_when_it_stops_and_200_again_after(db_url: str, tmp_path: Path) -> None:
    tokens = (secrets.token_hex(32),)
    redis_url, redis_pid = start_redis(tmp_path / "redis", durable=False)
    control, port = start_control(tmp_path, db_url, redis_url, tokens)
    envoy = start_envoy(tmp_path / "envoy", port, tokens)
    try:
        assert raw_request(envoy.port, "GET", "/ready")[0] == 200
        stop_pid(redis_pid)

        def down() -> dict[str, object]:
            status, _, body = raw_request(envoy.port, "GET", "/ready")
            assert status == 503, body
            return body

        body = eventually_sync(down, timeout_s=15, message="/ready 503")
        assert body["code"] == 14
        assert "redis" in str(body["message"]) and "postgres ok" in str(body["message"])
        assert raw_request(envoy.port, "GET", "/health")[0] == 200

        restarted_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        _, redis_pid = start_redis(tmp_path / "redis", port=restarted_port, durable=False)
        eventually_sync(lambda: raw_request(envoy.port, "GET", "/ready")[0] == 200, timeout_s=15,
                        message="/ready 200 after Redis came back")
    finally:
        envoy.stop()
        control.stop()
        stop_pid(redis_pid)


def test_ready_is_503_naming_the_control_service_when_it_is_down(tmp_path: Path) -> None:
    from common.embedded import free_port

    envoy = start_envoy(tmp_path / "envoy", free_port(), (secrets.token_hex(32),))
    try:
        for path in ("/ready", "/health"):
            status, headers, body = raw_request(envoy.port, "GET", path)
            assert status == 503
            assert headers["content-type"] == "application/json"
            assert body["code"] == 14 and "control service unavailable" in body["message"]
    finally:
        envoy.stop()


def test_ready_answers_its_checks_when_ready(edge: EdgeStack) -> None:
    reply = httpx.get(f"{edge.url}/ready", timeout=5)
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "READY"
    assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"] == "ok"


def test_envoy_health_checks_the_control_service_over_grpc(edge: EdgeStack, tmp_path: Path) -> None:
    from common.embedded import free_port

    def control_host_flags(envoy: Envoy) -> str:
        text = envoy.admin_get("/clusters").text
        flags = [line for line in text.splitlines() if line.startswith("control::") and "health_flags" in line]
        assert flags, text
        return flags[0].rsplit("::", 1)[1]

    assert eventually_sync(lambda: control_host_flags(edge.envoy) == "healthy",
                           message="control healthy in envoy")
    dead = start_envoy(tmp_path / "envoy", free_port(), edge.tokens)
    try:
        assert eventually_sync(lambda: "failed_active_hc" in control_host_flags(dead),
                               message="control failing envoy's health check")
    finally:
        dead.stop()
