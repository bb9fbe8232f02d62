"""Through real Envoy: the admin interface only on a unix socket of mode 600, client-supplied x-envoy-* and
X-Forwarded-For ignored, optional TLS on the REST listener, and no 5xx message showing internals."""

from __future__ import annotations

import os
import secrets
import ssl
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.edge.conftest import EdgeStack, raw_request, start_envoy
from tests.edge.selfsigned import write_self_signed
from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration

FOLLOWER = "0x6af75d4e4aaf700450efbac3708cce1665810ff1"


def test_admin_is_a_unix_socket_only_its_owner_can_open(edge: EdgeStack) -> None:
    info = os.stat(edge.envoy.settings.admin_socket)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    listeners = edge.envoy.admin_get("/listeners").text.split()
    assert listeners == [f"control_rest::127.0.0.1:{edge.envoy.port}"]  # no TCP admin listener
    assert edge.tokens[0] in edge.envoy.admin_get("/config_dump").text  # why it is mode 600


@pytest.mark.parametrize(("method", "path"), [("GET", "/config_dump"), ("POST", "/quitquitquit"),
                                              ("POST", "/healthcheck/fail"), ("GET", "/clusters")])
def test_admin_paths_on_the_rest_listener_are_404(edge: EdgeStack, method: str, path: str) -> None:
    status, _, body = raw_request(edge.envoy.port, method, path, edge.auth(), b"" if method == "POST" else None)
    assert status == 404 and body["code"] == 5
    assert edge.tokens[0] not in orjson.dumps(body).decode()


def _logged(edge: EdgeStack, marker: str) -> dict[str, Any]:
    def entry() -> dict[str, Any]:
        lines = edge.envoy.access_entries()
        found = [e for e in lines if marker in (e.get("path") or "")]
        assert found, "no access log line yet"
        return found[-1]

    return eventually_sync(entry, message="access log line")


def test_client_x_envoy_headers_and_forwarded_for_are_ignored(edge: EdgeStack) -> None:
    follower = "0x" + secrets.token_hex(20)  # also finds the access log line
    path = f"/subscriptions?followerProxy={follower}"
    forged = [("x-envoy-upstream-rq-timeout-ms", "1"), ("x-envoy-max-retries", "5"),
              ("x-envoy-original-path", "/forged"), ("X-Envoy-Retry-On", "5xx"),
              ("x-forwarded-for", "203.0.113.9"), ("x-envoy-external-address", "203.0.113.9")]
    for _ in range(5):  # the router would cut each at 1 ms if it honoured the header
        status, _, body = raw_request(edge.envoy.port, "GET", path, edge.auth(), extra_headers=forged)
        assert status == 200, body
    entry = _logged(edge, follower)
    assert entry["path"] == path and entry["client"] == "127.0.0.1"


def test_a_5xx_from_the_edge_shows_no_internals(tmp_path: Path) -> None:
    from common.embedded import free_port

    envoy = start_envoy(tmp_path / "envoy", free_port(), (secrets.token_hex(32),))
    try:
        status, _, body = raw_request(envoy.port, "GET", "/ready")
    finally:
        envoy.stop()
    assert status == 503
    assert body == {"code": 14, "message": "control service unavailable", "details": []}


def test_the_rest_listener_serves_tls_from_the_configured_files(edge: EdgeStack, tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path / "tls")
    envoy = start_envoy(tmp_path / "envoy", edge.control_port, edge.tokens, tls_cert_file=str(cert),
                        tls_key_file=str(key))
    try:
        assert envoy.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=envoy.url, verify=trusted, headers=edge.auth(), timeout=10) as client:
            assert client.get("/ready").status_code == 200
            listed = client.get("/subscriptions", params={"followerProxy": FOLLOWER})
            assert listed.status_code == 200 and "subscriptions" in listed.json()
        with pytest.raises(httpx.HTTPError):  # plaintext on the TLS port gets no HTTP answer
            httpx.get(f"http://127.0.0.1:{envoy.port}/health", timeout=5)
    finally:
        envoy.stop()
