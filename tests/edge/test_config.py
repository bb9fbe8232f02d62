"""Rendering the Envoy config: token validation, placeholders, and Envoy accepting the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, Secret, project_root
from tools import envoy_config
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
    text = render(GatewaySettings(tokens=(Secret(A), Secret(B)), gateway_port=1234, admin_port=1235,
                                  control_port=1236))
    assert "{{" not in text
    assert f'"exact": "Bearer {A}"' in text and f'"exact": "Bearer {B}"' in text
    for service in envoy_config.TRANSCODED_SERVICES:
        assert service in text
    assert "InternalControlService\"" not in text
    assert "match_incoming_request_route: true" in text
    assert "port_value: 1234" in text and "port_value: 1236" in text


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
    with pytest.raises(ConfigError, match="TT_GATEWAY_RATE_LIMIT_RPS"):
        GatewaySettings.from_env({"CONTROL_API_TOKEN": A, "TT_GATEWAY_RATE_LIMIT_RPS": "0"})


@pytest.mark.integration
def test_envoy_accepts_the_rendered_config(tmp_path: Path) -> None:
    settings = GatewaySettings(tokens=(Secret(A), Secret(B)), access_log_path=str(tmp_path / "access.log"))
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
