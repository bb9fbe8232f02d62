"""Harness: the simulator in this process, the whole stack as supervised subprocesses wired to it.

``Pipeline.start`` starts the simulated Polymarket (RTDS, CLOB ws + REST, data-api) and the Insiders
API fake on a background loop (:mod:`tools.simthread`), then brings the stack up exactly as
``make up`` does (:func:`tools.stack.up`: storage, migrations, Envoy config, the detached
supervisor running control, ingest, router, executor, guard and Envoy) with ``TT_RTDS_URL``,
``TT_CLOB_WS_URL``, ``TT_CLOB_API_URL``, ``TT_DATA_API_URL``, ``TT_INSIDERS_API_URL`` /
``TT_INSIDERS_API_TOKEN`` pointing at the simulator, ``TT_ALERT_WEBHOOK_URL`` / ``_SECRET`` at its webhook
receiver (unless set) and the stack's own simulator off. The demo and the end-to-end tests script the
simulator through ``pipeline.sim`` and reach the stack through ``pipeline.rest()`` (Envoy) and
``pipeline.channel(service)`` (gRPC).

Processes can be killed (``kill``) and the supervisor restarts them; ``once_env`` arms variables for
the next start of one program only (e.g. ``TT_GUARD_CRASH_AFTER``). The embedded storage (a stack started
without ``DATABASE_URL`` / ``REDIS_URL``) can be crashed too: ``kill_redis`` / ``restart_redis`` (kill -9, then
the same address and append-only file) and ``crash_postgres`` (``pg_ctl restart -m immediate``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx

from common.config import SERVICE_PORTS, grpc_port, load_tokens
from common.embedded import crash_restart_postgres, free_port_off, free_ports
from common.grpcauth import GrpcSecurity
from common.grpcclient import blocking_channel
from common.metrics import metrics_port
from tools import stack
from tools.procs import is_alive
from tools.simthread import SimPorts, SimThread
from tools.stack_logs import tail
from tools.stack_storage import StackPaths, read_owned, restart_redis
from tools.supervisor import ONCE_DIR, read_state

Printer = Callable[[str], None]

# Faster loops than production defaults, so scripted scenarios finish in seconds. Each can be
# overridden by the caller's environment.
HARNESS_TUNING: dict[str, str] = {
    "TT_TUNE_INGEST_POLL_INTERVAL_S": "2",  # data-api safety net (60 s in production)
    "TT_TUNE_INGEST_POLL_GAP_FOLLOWUP_S": "2",
    "TT_TUNE_EXECUTOR_BREAKER_OPEN_S": "2",  # breaker stays open 60 s in production
    "TT_TUNE_EXECUTOR_SETTLE_INTERVAL_S": "0.2",
    "TT_TUNE_GUARD_PERF_INTERVAL_S": "0.5",  # performance rules every 5 s in production
    "TT_TUNE_GUARD_MARK_FLUSH_S": "0.5",
    "TT_TUNE_ROUTER_OUTBOX_INTERVAL_S": "0.5",
    "TT_RECONCILE_INTERVAL_S": "2",  # each LIVE wallet's venue positions (every few minutes in production)
    "TT_TUNE_ROUTER_OUTBOX_MIN_AGE_S": "0.5",
    "TT_STACK_BACKOFF_S": "0.1",  # supervisor restart backoff (0.5 s in production)
    "TT_STACK_STOP_GRACE_S": "5",
    "TT_STACK_READY_TIMEOUT_S": "90",
    "TT_TUNE_CONTROL_ALERT_RETRY_BASE_S": "0.2",  # webhook retries (1 s doubling to 60 s in production)
    "TT_TUNE_CONTROL_ALERT_RETRY_CAP_S": "2",
}

FREE_PORTS = SimPorts()
ISOLATED_PREFIXES = ("TT_",)
ISOLATED_NAMES = ("DATABASE_URL", "REDIS_URL", "CONTROL_API_TOKEN", "KEEP")


class PipelineError(RuntimeError):
    """The pipeline could not be started."""


def isolated_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default the process environment) without any stack setting, for a self-contained stack."""
    src = os.environ if base is None else base
    return {k: v for k, v in src.items() if not k.startswith(ISOLATED_PREFIXES) and k not in ISOLATED_NAMES}


def stack_port_keys() -> list[str]:
    """The variables of every port the stack binds: Envoy's, each service's gRPC and metrics ports."""
    return ["TT_GATEWAY_PORT", *(f"TT_{n.upper()}_GRPC_PORT" for n in SERVICE_PORTS),
            *(f"TT_{n.upper()}_METRICS_PORT" for n in SERVICE_PORTS)]


def free_port_env() -> dict[str, str]:
    """Free ports for Envoy and every service (tests: never the fixed defaults)."""
    keys = stack_port_keys()
    return {key: str(port) for key, port in zip(keys, free_ports(len(keys)), strict=True)}


def _url_ports(env: Mapping[str, str]) -> set[int]:
    """Ports of the URLs among ``env``'s values."""
    ports: set[int] = set()
    for value in env.values():
        try:
            port = urlsplit(value).port
        except ValueError:
            continue
        if port:
            ports.add(port)
    return ports


def _move_off(env: dict[str, str], taken: set[int]) -> None:
    """Give the stack fresh ports where one it was given is now the simulator's: a port picked free
    before the simulator bound its own (port 0) servers can be handed to one of them."""
    keys = stack_port_keys()
    avoid = set(taken) | {int(env[k]) for k in keys if env.get(k, "").isdigit()}  # nor another service's
    for key in keys:
        if key in env and int(env[key] or 0) in taken:
            port = free_port_off(avoid)
            avoid.add(port)
            env[key] = str(port)


@dataclass
class Pipeline:
    """A running simulator + stack (see the module docstring)."""

    run_dir: Path
    env: dict[str, str]
    sim: SimThread
    out: Printer = print
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def start(cls, run_dir: Path, *, env: Mapping[str, str] | None = None, sim_ports: SimPorts = FREE_PORTS,
              seed: int | None = 1, tuning: Mapping[str, str] | None = None, out: Printer = print) -> Pipeline:
        """Start the simulator and the stack; raises PipelineError (with the laggard's log) on failure.

        ``env`` is the stack's environment (storage URLs, ports, tokens; the process environment when
        None); ``tuning`` overrides :data:`HARNESS_TUNING` defaults, and ``env`` overrides both.
        """
        base = dict(os.environ if env is None else env)
        full: dict[str, str] = {**HARNESS_TUNING, **(tuning or {}), **base}
        full["TT_RUN_DIR"] = str(run_dir.resolve())
        full["TT_STACK_SIMULATOR"] = "0"  # this process is the simulator
        full.pop("TT_STACK_SIM_INSIDERS", None)
        token = full.get("TT_INSIDERS_API_TOKEN", "").strip() or "sim-" + os.urandom(12).hex()
        sim = SimThread(seed=seed, ports=sim_ports, insiders_token=token).start()
        full.update(sim.env())
        for key, value in sim.webhook_env().items():  # the engine's alerts reach the local receiver unless set
            full.setdefault(key, value)
        _move_off(full, _url_ports({**sim.env(), **sim.webhook_env()}))
        pipeline = cls(run_dir.resolve(), full, sim, out)
        try:
            if stack.supervisor_alive(read_state(pipeline.paths.run)):
                raise PipelineError(f"a stack is already up in {pipeline.paths.run} (make down first)")
            if stack.up(full, out=out) != 0:
                raise PipelineError("the stack did not come up (see the lines above)")
        except BaseException:
            pipeline.stop(quiet=True)
            raise
        return pipeline

    def stop(self, *, quiet: bool = False, keep_stack: bool = False) -> None:
        """Stop the stack (unless ``keep_stack``) and the simulator; safe to repeat."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        if not keep_stack:
            stack.down(self.env, out=(lambda _t: None) if quiet else self.out)
        self.sim.stop()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(quiet=True)

    # -- reaching the stack ---------------------------------------------------------------------

    @property
    def paths(self) -> StackPaths:
        """The run folder's layout."""
        return StackPaths(self.run_dir)

    @property
    def token(self) -> str:
        """The control API bearer token."""
        return load_tokens(self.env)[0].value

    @property
    def gateway_url(self) -> str:
        """Envoy's REST base URL."""
        return f"http://127.0.0.1:{self.env.get('TT_GATEWAY_PORT') or 9110}"

    def rest(self, timeout_s: float = 10.0) -> httpx.Client:
        """An HTTP client on Envoy carrying the bearer token."""
        return httpx.Client(base_url=self.gateway_url, timeout=timeout_s,
                            headers={"Authorization": f"Bearer {self.token}"})

    def metrics_url(self, service: str) -> str:
        """Where a service serves its Prometheus metrics."""
        return f"http://127.0.0.1:{metrics_port(self.env, service)}/metrics"

    def grpc_target(self, service: str) -> str:
        """``127.0.0.1:<port>`` of a service."""
        return f"127.0.0.1:{grpc_port(self.env, service)}"

    @property
    def security(self) -> GrpcSecurity:
        """The internal token (and TLS files) the stack's services were started with."""
        return GrpcSecurity.from_env(self.env)

    def channel(self, service: str) -> grpc.Channel:
        """A (cached) blocking gRPC channel to a service; its calls carry the internal token."""
        if service not in self._channels:
            self._channels[service] = blocking_channel(self.grpc_target(service), self.security)
        return self._channels[service]

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata carrying the control API token: for control's public services (SubscriptionService,
        TriggerService) called over ``channel("control")``; internal services refuse it."""
        return (("authorization", f"Bearer {self.token}"),)

    # -- processes ------------------------------------------------------------------------------

    def program(self, name: str) -> dict[str, Any]:
        """The supervisor's record of one program (state, pid, restarts, ...)."""
        state = read_state(self.paths.run) or {}
        for prog in state.get("programs", []):
            if prog["name"] == name:
                return dict(prog)
        raise KeyError(f"{name} is not supervised here")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (kill -9 by default) to a running program; returns the pid it had."""
        prog = self.program(name)
        pid = int(prog.get("pid") or 0)
        if prog["state"] != "running" or pid <= 0:
            raise PipelineError(f"{name} is not running ({prog['state']})")
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout_s: float = 60.0) -> int:
        """Wait until the supervisor runs ``name`` again under a new pid and it answers health checks."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            prog = self.program(name)
            if prog["state"] == "errored":
                raise PipelineError(f"{name} keeps crashing:\n{tail(self.paths.log(name))}")
            pid = int(prog.get("pid") or 0)
            if prog["state"] == "running" and pid not in (0, old_pid) and (
                    name not in SERVICE_PORTS or stack._grpc_serving(grpc_port(self.env, name), self.env)):
                return pid
            time.sleep(0.05)
        raise PipelineError(f"{name} did not come back within {timeout_s:.0f}s:\n{tail(self.paths.log(name))}")

    def once_env(self, name: str, variables: Mapping[str, str]) -> None:
        """Variables for the next start of ``name`` only (the supervisor consumes the file)."""
        folder = self.paths.run / ONCE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.json.tmp"
        tmp.write_text(json.dumps(dict(variables)))
        os.replace(tmp, folder / f"{name}.json")

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of one program's log."""
        return tail(self.paths.log(name), lines)

    # -- embedded storage -----------------------------------------------------------------------

    def kill_redis(self, timeout_s: float = 10.0) -> int:
        """kill -9 of the stack's embedded Redis; returns its pid once it is gone. It stays down until
        :meth:`restart_redis`."""
        owned = read_owned(self.paths)
        pid, starttime = int(owned.get("redis_pid") or 0), owned.get("redis_starttime")
        if not is_alive(pid, starttime):
            raise PipelineError("the stack runs no embedded Redis (REDIS_URL set?) or it is down")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while is_alive(pid, starttime):
            if time.monotonic() > deadline:
                raise PipelineError(f"redis-server {pid} still runs {timeout_s:.0f}s after kill -9")
            time.sleep(0.01)
        return pid

    def restart_redis(self) -> int:
        """Start the embedded Redis again on its address, from its append-only file; returns its new pid."""
        return restart_redis(self.paths)

    def crash_postgres(self) -> None:
        """Crash-restart the embedded PostgreSQL (``pg_ctl restart -m immediate``: no checkpoint, WAL replay)."""
        if "postgres" not in read_owned(self.paths):
            raise PipelineError("the stack runs no embedded PostgreSQL (DATABASE_URL set?)")
        crash_restart_postgres(self.paths.pgdata)
