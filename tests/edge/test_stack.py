"""The local stack: restart policy, the supervisor, and ``tools.stack up`` / ``down`` for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from common.config import project_root
from common.embedded import free_port
from tests.helpers import alerts_raised, eventually_sync
from tools.restarts import Decision, RestartPolicy, after_exit
from tools.supervisor import Program, is_alive, programs_to_json
from tradingtools.control.v1 import control_pb2, control_pb2_grpc

POLICY = RestartPolicy(min_uptime_s=5.0, max_fast_crashes=3, base_backoff_s=0.5, max_backoff_s=4.0)


@pytest.mark.parametrize(
    ("streak", "uptime_s", "expected"),
    [
        (0, 60.0, Decision(give_up=False, delay_s=0.5, fast_crashes=0)),
        (0, 1.0, Decision(give_up=False, delay_s=1.0, fast_crashes=1)),
        (1, 1.0, Decision(give_up=False, delay_s=2.0, fast_crashes=2)),
        (2, 1.0, Decision(give_up=True, delay_s=0.0, fast_crashes=3)),
        (2, 5.0, Decision(give_up=False, delay_s=0.5, fast_crashes=0)),  # a long run resets the streak
    ],
)
def test_restart_policy(streak: int, uptime_s: float, expected: Decision) -> None:
    assert after_exit(POLICY, streak, uptime_s) == expected


def test_embedded_redis_never_takes_a_port_meant_for_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import stack_storage

    offered = iter([50051, 9110, 41234, 41235])
    monkeypatch.setattr("common.embedded.free_port", lambda: next(offered))
    taken = stack_storage._listener_ports({"TT_CONTROL_GRPC_PORT": "41234", "TT_ROUTER_GRPC_PORT": " "})
    assert {50051, 50052, 9110, 41234} <= taken  # defaults and configured ports
    assert stack_storage._free_port_off(taken) == 41235


def test_backoff_is_capped() -> None:
    policy = RestartPolicy(max_fast_crashes=100, base_backoff_s=1.0, max_backoff_s=4.0)
    assert after_exit(policy, 10, 0.0).delay_s == 4.0


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TT_") and k not in ("DATABASE_URL", "REDIS_URL", "CONTROL_API_TOKEN")}
    env.update(extra)
    return env


def _state(run: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run / "supervisor.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _program(state: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in state.get("programs", []) if p["name"] == name]
    assert found, f"{name} not in the supervisor state yet"
    return found[0]


@pytest.mark.integration
def test_supervisor_restarts_a_crashed_program_and_gives_up_on_a_crash_loop(tmp_path: Path, redis_url: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    spec = tmp_path / "programs.json"
    spec.write_text(programs_to_json([
        Program("steady", (sys.executable, "-c", "import time; time.sleep(600)")),
        Program("broken", (sys.executable, "-c", "import sys; print('boom'); sys.exit(3)")),
    ]))
    env = _clean_env(TT_STACK_MAX_FAST_CRASHES="3", TT_STACK_BACKOFF_S="0.02", TT_STACK_STOP_GRACE_S="2",
                     REDIS_URL=redis_url)
    sup = subprocess.Popen([sys.executable, "-m", "tools.supervisor", str(spec), str(run)], cwd=project_root(),
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        broken = eventually_sync(lambda: _program(_state(run), "broken")["state"] == "errored"
                                 and _program(_state(run), "broken"), timeout_s=20, message="broken errored")
        assert broken["last_exit"] == 3 and broken["restarts"] == 2
        log = (run / "logs" / "broken.log").read_text()
        assert log.count("boom") == 3 and "GIVING UP" in log
        [alert] = eventually_sync(lambda: alerts_raised(redis_url), timeout_s=10, message="the crash-loop alert")
        assert (alert.kind, alert.key, alert.service) == ("SERVICE_CRASH_LOOP", "crash_loop:broken", "supervisor")
        assert alert.fields["exit_code"] == "3" and alert.fields["fast_crashes"] == "3"

        steady = _program(_state(run), "steady")
        assert steady["state"] == "running" and is_alive(steady["pid"], steady["starttime"])
        os.kill(steady["pid"], signal.SIGKILL)
        restarted = eventually_sync(lambda: (p := _program(_state(run), "steady"))["restarts"] == 1
                                    and p["state"] == "running" and p, timeout_s=20, message="steady restarted")
        assert restarted["pid"] != steady["pid"] and restarted["last_exit"] == -signal.SIGKILL
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=20)
    final = _state(run)
    assert all(p["state"] in ("stopped", "errored") for p in final["programs"])
    assert not is_alive(restarted["pid"], restarted["starttime"])


def _funding_code(env: dict[str, str], token: str) -> grpc.StatusCode:
    """The status of ``InternalControlService.GetFunding`` on control's gRPC port with ``token``."""
    with grpc.insecure_channel(f"127.0.0.1:{env['TT_CONTROL_GRPC_PORT']}") as channel:
        try:
            control_pb2_grpc.InternalControlServiceStub(channel).GetFunding(
                control_pb2.GetFundingRequest(follower_wallet_id="w_1"),
                metadata=(("authorization", f"Bearer {token}"),), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.stack", command], cwd=project_root(), env=env,
                          capture_output=True, text=True, timeout=90, check=False)


def _stack_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return _clean_env(
        TT_RUN_DIR=str(tmp_path / "run"), TT_STACK_SERVICES="control", TT_STACK_SIMULATOR="0",
        TT_GATEWAY_PORT=str(free_port()),
        TT_CONTROL_GRPC_PORT=str(free_port()), TT_CONTROL_METRICS_PORT=str(free_port()),
        TT_STACK_READY_TIMEOUT_S="30", **extra,
    )


@pytest.fixture
def run_root() -> Iterator[Path]:
    """A temporary folder outside pytest's numbered base folders (which a concurrent pytest session
    may prune while PostgreSQL still lives in it)."""
    with tempfile.TemporaryDirectory(prefix="tt-stack-test-") as tmp:
        yield Path(tmp)


@pytest.mark.integration
def test_stack_up_then_down(run_root: Path) -> None:
    env = _stack_env(run_root)
    run = Path(env["TT_RUN_DIR"])
    try:
        up = _stack("up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        token_file = run / "control_api_token"
        assert f"generated into {token_file}" in up.stdout
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        assert (run / "database_url").exists() and (run / "redis_url").exists()
        token = token_file.read_text().strip()
        internal_file = run / "internal_token"  # the services' own token: generated too, never the control one
        assert f"generated into {internal_file}" in up.stdout
        assert oct(internal_file.stat().st_mode & 0o777) == "0o600"
        internal = internal_file.read_text().strip()
        assert len(internal) == 64 and internal != token
        assert _funding_code(env, token) == grpc.StatusCode.UNAUTHENTICATED  # the backend's token: refused
        assert _funding_code(env, internal) == grpc.StatusCode.NOT_FOUND  # let in (no funding recorded)
        base = f"http://127.0.0.1:{env['TT_GATEWAY_PORT']}"
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200
        listed = httpx.get(f"{base}/subscriptions", params={"followerProxy": "0x" + "1" * 40},
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert listed.status_code == 200, listed.text

        again = _stack("up", env)
        assert again.returncode == 0 and "already up" in again.stdout

        state = _state(run)
        control = _program(state, "control")
        os.kill(control["pid"], signal.SIGKILL)
        eventually_sync(lambda: _program(_state(run), "control")["restarts"] == 1
                        and httpx.get(f"{base}/ready", timeout=5).status_code == 200,
                        timeout_s=30, message="control restarted and ready")
        pids = [(p["pid"], p["starttime"]) for p in _state(run)["programs"]] + [(state["pid"], state["starttime"])]
    finally:
        down = _stack("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "supervisor" in down.stdout and "postgres" in down.stdout and "redis" in down.stdout
    assert not any(is_alive(pid, start) for pid, start in pids)
    assert not (run / "pg" / "data" / "postmaster.pid").exists()
    assert not (run / "database_url").exists() and not (run / "redis_url").exists()
    twice = _stack("down", env)
    assert twice.returncode == 0 and "nothing was running" in twice.stdout


@pytest.mark.integration
def test_up_names_the_service_that_is_not_up(run_root: Path) -> None:
    env = _stack_env(run_root, TT_TUNE_CONTROL_DB_POOL_MAX="lots", TT_STACK_BACKOFF_S="0.02",
                     TT_STACK_MAX_FAST_CRASHES="3")
    try:
        up = _stack("up", env)
        assert up.returncode == 1
        assert "control is not up" in up.stdout
        assert "TT_TUNE_CONTROL_DB_POOL_MAX" in up.stdout  # the tail of its log says why
    finally:
        assert _stack("down", env).returncode == 0


@pytest.mark.integration
def test_demo_walks_the_api_and_stops_what_it_started(run_root: Path) -> None:
    env = _stack_env(run_root)
    proc = subprocess.run([sys.executable, "-m", "tools.demo"], cwd=project_root(), env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Demo passed" in proc.stdout and "-> 401" in proc.stdout and "-> 404" in proc.stdout
        assert "stopped: supervisor" in proc.stdout
        assert not _state(Path(env["TT_RUN_DIR"]))
    finally:
        _stack("down", env)
