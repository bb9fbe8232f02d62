"""Rendering the Envoy config: token validation, placeholders, admin socket, TLS and the loopback rule, and
Envoy accepting the result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, Secret, project_root
from tools import envoy_config, rest_schema
from tools.envoy_config import GatewaySettings, render, validate_tokens

A, B = "a" * 64, "B" * 64


@pytest.mark.parametrize(
    ("tokens", "error"),
    [
        ((), "no control API token"),
        (("abc",), "entry 0 must be 64 hex"),
        ((A, "g" * 64), "entry 1 must be 64 hex"),
        ((A, A + "0"), "entry 1 must be 64 hex"),
        ((A, "a" * 63 + " "), "entry 1 must be 64 hex"),
        ((A, 'a"' + "a" * 62), "entry 1 must be 64 hex"),
        ((A, B, A), "entry 2 repeats"),
    ],
)
def test_bad_token_lists_are_rejected_with_the_entry_named(tokens: tuple[str, ...], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        render(GatewaySettings(tokens=tuple(Secret(t) for t in tokens)))


def test_good_tokens_pass() -> None:
    assert validate_tokens([Secret(A), B]) == (A, B)


def test_render_fills_every_placeholder_and_transcodes_only_public_services() -> None:
    text = render(GatewaySettings(tokens=(Secret(A), Secret(B)), gateway_port=1234, control_port=1236,
                                  admin_socket=Path("/tmp/tt-admin.sock")))
    assert not re.search(r"\{\{[a-z_]+\}\}", text)
    assert f'"regex": "(?i:bearer) {A}"' in text and f'"regex": "(?i:bearer) {B}"' in text
    services = rest_schema.transcoded_services(rest_schema.routes())
    assert {s.rsplit(".", 1)[1] for s in services} == {"SubscriptionService", "TriggerService", "PositionService",
                                                       "ProbeService"}
    for service in services:
        assert service in text
    assert "InternalControlService\"" not in text
    assert "match_incoming_request_route: true" in text
    assert "port_value: 1234" in text and "port_value: 1236" in text
    assert 'pipe: {path: "/tmp/tt-admin.sock", mode: 384}' in text  # admin: unix socket, mode 600, no TCP
    assert text.count("socket_address") == 2  # the REST listener and control, nothing else


def test_the_rest_paths_come_from_the_annotations() -> None:
    assert envoy_config.rest_path_regex(rest_schema.routes()) == "/(subscriptions|triggers|positions)(/[^/]+)*"


def test_the_internal_service_has_no_http_annotation() -> None:
    assert all("Internal" not in r.service for r in rest_schema.routes())


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("192.168.0.10", False), ("gateway.internal", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert envoy_config.is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_a_non_loopback_listener_without_tls_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError, match=f"TT_GATEWAY_HOST={host} is not a loopback address.*TLS"):
        render(GatewaySettings(tokens=(Secret(A),), listen_address=host))


def test_a_plaintext_listener_behind_a_tls_proxy_is_an_explicit_opt_in() -> None:
    settings = GatewaySettings.from_env({"CONTROL_API_TOKEN": A, "TT_GATEWAY_HOST": "0.0.0.0",
                                         "TT_GATEWAY_ALLOW_PLAINTEXT": "1"})
    assert "raw_buffer" in render(settings)


def _pem_files(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    return str(cert), str(key)


def test_a_non_loopback_listener_with_tls_renders_a_tls_transport(tmp_path: Path) -> None:
    cert, key = _pem_files(tmp_path)
    text = render(GatewaySettings(tokens=(Secret(A),), listen_address="0.0.0.0", tls_cert_file=cert,
                                  tls_key_file=key))
    assert "DownstreamTlsContext" in text and cert in text and key in text and "RawBuffer" not in text


@pytest.mark.parametrize(("cert", "key", "error"), [
    ("cert.pem", "", "go together"),
    ("", "key.pem", "go together"),
    ("missing.pem", "key.pem", "TT_GATEWAY_TLS_CERT_FILE=.*missing.pem is not a readable file"),
    ("cert.pem", "missing.pem", "TT_GATEWAY_TLS_KEY_FILE=.*missing.pem is not a readable file"),
])
def test_tls_settings_are_checked(tmp_path: Path, cert: str, key: str, error: str) -> None:
    _pem_files(tmp_path)
    with pytest.raises(ConfigError, match=error):
        render(GatewaySettings(tokens=(Secret(A),), tls_cert_file=cert and str(tmp_path / cert),
                               tls_key_file=key and str(tmp_path / key)))


def test_the_admin_port_setting_is_refused_with_where_admin_went() -> None:
    with pytest.raises(ConfigError, match="TT_GATEWAY_ADMIN_SOCKET"):
        GatewaySettings.from_env({"CONTROL_API_TOKEN": A, "TT_GATEWAY_ADMIN_PORT": "9901"})


def test_an_admin_socket_path_too_long_for_a_unix_socket_is_refused() -> None:
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        render(GatewaySettings(tokens=(Secret(A),), admin_socket=Path("/tmp/" + "x" * 120)))


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown placeholders: nope"):
        render(GatewaySettings(tokens=(Secret(A),)), template="x: {{nope}}")


def test_missing_descriptor_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="make proto"):
        render(GatewaySettings(tokens=(Secret(A),), descriptor_path=tmp_path / "none.pb"))


@pytest.mark.parametrize(("per_s", "expected"), [(1, (1, "1s")), (7, (7, "1s")), (1000, (100, "0.100s")),
                                                 (15, (15, "1s"))])
def test_rate_limit_fill(per_s: int, expected: tuple[int, str]) -> None:
    assert envoy_config._rate_limit_fill(per_s) == expected


def test_settings_from_env() -> None:
    s = GatewaySettings.from_env({"CONTROL_API_TOKEN": f"{A},{B}", "TT_GATEWAY_PORT": "9999",
                                  "TT_CONTROL_GRPC_PORT": "50999", "TT_GATEWAY_RATE_LIMIT_RPS": "50"})
    assert (s.gateway_port, s.control_port, s.rate_limit_per_s, s.rate_limit_burst) == (9999, 50999, 50, 100)
    assert [t.value for t in s.tokens] == [A, B]
    assert (s.probe_rate_limit_per_s, s.probe_rate_limit_burst, s.tls) == (50, 100, False)
    assert s.admin_socket == project_root() / ".run" / "envoy" / "admin.sock" or "TT_RUN_DIR" in os.environ
    tls = GatewaySettings.from_env({"CONTROL_API_TOKEN": A, "TT_RUN_DIR": "/srv/tt", "TT_GATEWAY_HOST": "0.0.0.0",
                                    "TT_GATEWAY_TLS_CERT_FILE": "/c.pem", "TT_GATEWAY_TLS_KEY_FILE": "/k.pem",
                                    "TT_GATEWAY_PROBE_RATE_LIMIT_RPS": "5"})
    assert (tls.tls, tls.url, tls.admin_socket) == (True, "https://127.0.0.1:9110", Path("/srv/tt/envoy/admin.sock"))
    assert (tls.probe_rate_limit_per_s, tls.probe_rate_limit_burst) == (5, 10)
    with pytest.raises(ConfigError, match="TT_GATEWAY_RATE_LIMIT_RPS"):
        GatewaySettings.from_env({"CONTROL_API_TOKEN": A, "TT_GATEWAY_RATE_LIMIT_RPS": "0"})


@pytest.mark.integration
def test_envoy_accepts_the_rendered_config(tmp_path: Path) -> None:
    settings = GatewaySettings(tokens=(Secret(A), Secret(B)), access_log_path=str(tmp_path / "access.log"),
                               admin_socket=tmp_path / "admin.sock")
    path = envoy_config.write(settings, tmp_path / "envoy.yaml")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    envoy_config.validate_with_envoy(path)


@pytest.mark.integration
def test_cli_rejects_a_bad_token_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "CONTROL_API_TOKEN": f"{A},short", "TT_RUN_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "tools.envoy_config", "--out", str(tmp_path / "e.yaml")],
                          env=env, cwd=project_root(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "CONTROL_API_TOKEN entry 1 must be 64 hex characters" in proc.stderr
    assert not (tmp_path / "e.yaml").exists()
