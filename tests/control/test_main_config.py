"""``python -m services.control`` as a real process, and its settings from the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.config import ConfigError, project_root
from common.embedded import free_port
from services.control.config import Settings
from tests.control.conftest import AUTH, TOKEN, TOKEN_2
from tests.helpers import INTERNAL_ENV, INTERNAL_TOKEN, eventually_sync
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc

BASE_ENV = {"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:5432/db", "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CONTROL_API_TOKEN": f"{TOKEN},{TOKEN_2}", **INTERNAL_ENV}


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.integration
def test_process_serves_then_stops_gracefully_on_sigterm(db_url: str, redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **INTERNAL_ENV, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "CONTROL_API_TOKEN": TOKEN,
           "TT_CONTROL_GRPC_PORT": str(port), "TT_RUN_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "services.control"], cwd=project_root(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        eventually_sync(lambda: proc.poll() is None and _serving(port), timeout_s=30)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SubscriptionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.GetSubscription(pb.GetSubscriptionRequest(id="sub_x"), metadata=AUTH, timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode() if proc.stdout else ""
    records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert records and all(r["service"] == "control" for r in records)
    assert TOKEN not in output and INTERNAL_TOKEN not in output


@pytest.mark.integration
def test_invalid_configuration_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, **BASE_ENV, "CONTROL_API_TOKEN": "short", "TT_RUN_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "services.control"], cwd=project_root(), env=env,
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 2


@pytest.mark.integration
@pytest.mark.parametrize("bad", [
    {"DATABASE_URL": "host=db.internal user=tt password=S3cretPw dbname=tt"},  # a libpq keyword string
    {"DATABASE_URL": "postgresql//tt:S3cretPw@db.internal/tt"},
    {"TT_ALERT_WEBHOOK_URL": "hooks.slack.com/services/T0AAA/B0BBB/S3cretPw"},
    {"TT_INSIDERS_API_URL": "https://desk:S3cretPw@"},
])
def test_an_invalid_credential_setting_exits_2_without_printing_it(tmp_path: Path, bad: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({**BASE_ENV, "TT_RUN_DIR": str(tmp_path), "TT_METRICS_ENABLED": "false", **bad})
    result = subprocess.run([sys.executable, "-m", "services.control"], cwd=project_root(), env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "S3cretPw" not in result.stdout + result.stderr


def test_settings_defaults_and_redaction() -> None:
    s = Settings.from_env(BASE_ENV)
    assert (s.host, s.grpc_port, s.insiders_api_url, s.live_enabled) == ("127.0.0.1", 50055, "", False)
    tun = s.tuning
    assert (tun.index_resync_s, tun.db_pool_max, tun.db_timeout_s, tun.idempotency_ttl_s) == (30.0, 10, 2.0, 86_400.0)
    assert tun.index_full_resync_s == 600.0
    assert [t.value for t in s.tokens] == [TOKEN, TOKEN_2] and s.ready_services == ()
    assert tun.list_cache_entries == 50_000
    text = repr(s)
    assert TOKEN not in text and "hunter2" not in text and INTERNAL_TOKEN not in text
    assert [t.value for t in s.security.tokens] == [INTERNAL_TOKEN]


def test_settings_overrides() -> None:
    s = Settings.from_env({**BASE_ENV, "TT_CONTROL_GRPC_PORT": "0", "TT_CONTROL_HOST": "0.0.0.0",
                           "TT_GRPC_ALLOW_INSECURE_BIND": "1",
                           "TT_INSIDERS_API_URL": "https://user:pw@insiders.example/api/",
                           "TT_TUNE_CONTROL_INDEX_RESYNC_S": "5", "TT_CONTROL_READY_SERVICES": "router, guard",
                           "TT_ROUTER_GRPC_PORT": "6000", "TT_TUNE_CONTROL_IDEMPOTENCY_TTL_S": "60",
                           "TT_TUNE_CONTROL_LIST_CACHE_ENTRIES": "0",
                           "TT_TUNE_CONTROL_PAGE_CACHE_MB": "0", "TT_TUNE_CONTROL_INDEX_FULL_RESYNC_S": "120"})
    t = s.tuning
    assert t.index_full_resync_s == 120.0
    assert (s.grpc_port, s.host, t.index_resync_s) == (0, "0.0.0.0", 5.0)
    assert t.page_cache_mb == 0 and Settings.from_env(BASE_ENV).tuning.page_cache_mb == 64
    assert (t.idempotency_ttl_s, s.live_enabled, t.list_cache_entries) == (60.0, True, 0)
    assert s.insiders_api_url == "https://user:pw@insiders.example/api"
    assert s.ready_services == (("router", "127.0.0.1:6000"), ("guard", "127.0.0.1:50054"))
    assert "pw@" not in repr(s)


def test_alert_settings_operator_and_tuning() -> None:
    a = Settings.from_env(BASE_ENV).alerts
    assert (a.webhook_url, a.timeout_s, a.retry_cap_s, a.rate_limit, a.retention_s) == ("", 5.0, 60.0, 5, 86_400.0)
    a = Settings.from_env({**BASE_ENV, "TT_ALERT_WEBHOOK_URL": "https://hooks.example/x",
                           "TT_ALERT_WEBHOOK_SECRET": "hunter2", "TT_TUNE_CONTROL_ALERT_RATE_LIMIT": "9",
                           "TT_TUNE_CONTROL_ALERT_WEBHOOK_TIMEOUT_S": "2"}).alerts
    assert (a.webhook_url, a.webhook_secret.value, a.rate_limit, a.timeout_s) == ("https://hooks.example/x",
                                                                                  "hunter2", 9, 2.0)
    assert "hunter2" not in repr(a)


@pytest.mark.parametrize(("name", "value"), [
    ("TT_CONTROL_GRPC_PORT", "70000"), ("TT_CONTROL_GRPC_PORT", "x"), ("TT_TUNE_CONTROL_INDEX_RESYNC_S", "-1"),
    ("TT_TUNE_CONTROL_INDEX_FULL_RESYNC_S", "0"),
    ("TT_TUNE_CONTROL_DB_POOL_MAX", "0"), ("TT_CONTROL_READY_SERVICES", "router,bogus"),
    ("TT_TUNE_CONTROL_LIST_CACHE_ENTRIES", "-1"),
    ("TT_TUNE_CONTROL_PAGE_CACHE_MB", "-1"), ("TT_TUNE_CONTROL_PAGE_CACHE_MB", "lots"),
    ("TT_ALERT_WEBHOOK_URL", "ftp://x"), ("TT_TUNE_CONTROL_ALERT_RATE_LIMIT", "0"),
    ("TT_ALERT_RETENTION_S", "60"),  # its former name: refused, not silently ignored
    ("TT_INSIDERS_API_URL", "ftp://x"), ("CONTROL_API_TOKEN", "abc"), ("DATABASE_URL", "mysql://x"),
    ("TT_INTERNAL_TOKEN", "abc"), ("TT_INTERNAL_TOKEN", TOKEN_2), ("TT_CONTROL_HOST", "0.0.0.0"),
])
def test_settings_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE_ENV, name: value})
