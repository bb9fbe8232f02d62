"""The local stack: ``make up`` / ``make down`` / ``make logs`` (``python -m tools.stack``).

``up`` starts embedded PostgreSQL and Redis under the run folder when ``DATABASE_URL`` /
``REDIS_URL`` are unset, generates a control API token when ``CONTROL_API_TOKEN`` is unset and an
internal token (the services' gRPC ports, ``common.grpcauth``) when ``TT_INTERNAL_TOKEN`` is unset,
applies migrations, renders the Envoy config and starts a detached supervisor that runs every
service that exists plus Envoy, one process each. It returns once ``GET /ready`` through Envoy
is 200 and every service answers its gRPC health check. ``down`` stops all of it; both are safe
to repeat. ``logs`` follows the logs; ``status`` shows the processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.config import (
    SERVICE_PORTS,
    ConfigError,
    env_bool,
    env_float_seconds,
    grpc_port,
    project_root,
    run_dir,
)
from common.grpcauth import GrpcSecurity
from common.metrics import metrics_port
from tools import envoy_config
from tools.procs import terminate
from tools.stack_logs import follow_logs, tail
from tools.stack_ports import PortHold, port_in_use
from tools.stack_sim import simulator_enabled, simulator_ports, wire_simulator
from tools.stack_storage import StackPaths, ensure_storage, ensure_token, stop_storage
from tools.supervisor import (
    GATEWAY,
    Program,
    proc_starttime,
    programs_from_json,
    programs_to_json,
    read_state,
    supervisor_alive,
)

SERVICE_ORDER = ("control", "ingest", "router", "executor", "guard")
Printer = Callable[[str], None]


class StackError(RuntimeError):
    """The stack could not be brought up; the message says what is not up and why."""


def resolve_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with ``TT_RUN_DIR`` made absolute (children use it too)."""
    out = dict(os.environ if env is None else env)
    out["TT_RUN_DIR"] = str(run_dir(out).resolve())
    return out


def discover_services(root: Path | None = None) -> list[str]:
    """Services that exist (``services/<name>/__main__.py``): the known layers in pipeline order,
    then any other, by name."""
    base = (root or project_root()) / "services"
    found = sorted(p.parent.name for p in base.glob("*/__main__.py"))
    return [n for n in SERVICE_ORDER if n in found] + [n for n in found if n not in SERVICE_ORDER]


def selected_services(env: Mapping[str, str], root: Path | None = None) -> list[str]:
    """The services to run: all that exist, or only those named in ``TT_STACK_SERVICES`` (comma list)."""
    found = discover_services(root)
    raw = env.get("TT_STACK_SERVICES", "").strip()
    if not raw:
        return found
    wanted = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in found]
    if unknown:
        raise ConfigError(f"TT_STACK_SERVICES names services that do not exist: {', '.join(unknown)} "
                          f"(have: {', '.join(found) or 'none'})")
    return [n for n in found if n in wanted]


def build_programs(env: Mapping[str, str], paths: StackPaths, settings: envoy_config.GatewaySettings,
                   root: Path | None = None) -> list[Program]:
    """The supervised programs: the simulator (when enabled), every service, then Envoy."""
    root = root or project_root()
    python = sys.executable
    programs: list[Program] = []
    if simulator_enabled(env, root):
        insiders = ("--insiders",) if env.get("TT_STACK_SIM_INSIDERS") == "1" else ()
        programs.append(Program("sim", (python, "-m", "sim", *insiders)))
    programs += [Program(name, (python, "-m", f"services.{name}")) for name in selected_services(env, root)]
    programs.append(Program(GATEWAY, tuple(envoy_config.envoy_command(paths.envoy_config, settings))))
    return programs


def check_ports(env: Mapping[str, str], settings: envoy_config.GatewaySettings,
                services: Sequence[str]) -> None:
    """Fail early, naming the variable, when a port the stack needs is taken."""
    wanted = [("TT_GATEWAY_PORT", settings.gateway_port)]
    wanted += [(f"TT_{s.upper()}_GRPC_PORT", grpc_port(env, s)) for s in services if s in SERVICE_PORTS]
    if env_bool(env, "TT_METRICS_ENABLED", True):
        wanted += [(f"TT_{s.upper()}_METRICS_PORT", metrics_port(env, s)) for s in services if s in SERVICE_PORTS]
    if simulator_enabled(env):
        wanted += [(name, port) for name, port in simulator_ports(env).items()
                   if port and (name != "TT_SIM_INSIDERS_PORT" or env.get("TT_STACK_SIM_INSIDERS") == "1")]
    busy = [f"{name}={port}" for name, port in wanted if port_in_use(port)]
    if busy:
        raise StackError(f"ports already in use: {', '.join(busy)} (another stack running? set these "
                         "variables to free ports or run make down)")


def _grpc_serving(port: int, env: Mapping[str, str]) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from common.grpcauth import GrpcSecurity
    from common.grpcclient import blocking_channel

    with blocking_channel(f"127.0.0.1:{port}", GrpcSecurity.from_env(env)) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _ready_answer(settings: envoy_config.GatewaySettings) -> tuple[int, str]:
    import httpx

    try:  # a local readiness poll (no token sent): the certificate may name another host
        reply = httpx.get(f"{settings.url}/ready", timeout=2.0, verify=False)
    except httpx.HTTPError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    return reply.status_code, reply.text


def wait_ready(env: Mapping[str, str], paths: StackPaths, settings: envoy_config.GatewaySettings,
               timeout_s: float) -> None:
    """Return once /ready is 200 and every service is SERVING; StackError naming the laggard."""
    deadline = time.monotonic() + timeout_s
    laggard, why = GATEWAY, "no answer yet"
    while True:
        state = read_state(paths.run)
        if state is not None and not supervisor_alive(state):
            raise StackError(f"the supervisor is not running\n{tail(paths.log('supervisor'))}")
        programs = (state or {}).get("programs", [])
        errored = [p for p in programs if p["state"] == "errored"]
        if errored:
            name = errored[0]["name"]
            raise StackError(f"{name} is not up: it keeps crashing and the supervisor gave up on it; "
                             f"tail of {paths.log(name)}:\n{tail(paths.log(name))}")
        services = [p["name"] for p in programs if p["name"] in SERVICE_PORTS]
        not_running = [p["name"] for p in programs if p["state"] != "running"]
        if state is not None and not not_running:
            down = [s for s in services if not _grpc_serving(grpc_port(env, s), env)]
            if down:
                laggard, why = down[0], "its gRPC health check is not SERVING"
            else:
                status, body = _ready_answer(settings)
                if status == 200:
                    return
                laggard = GATEWAY if status == 0 else "control"
                why = f"GET /ready answered {status or 'nothing'}: {body.strip()[:300]}"
        elif not_running:
            laggard, why = not_running[0], "it is not running (restarting)"
        if time.monotonic() > deadline:
            raise StackError(f"{laggard} is not up after {timeout_s:.0f}s: {why}\n"
                             f"tail of {paths.log(laggard)}:\n{tail(paths.log(laggard))}")
        time.sleep(0.1)


def start_supervisor(env: Mapping[str, str], paths: StackPaths, programs: Sequence[Program]) -> int:
    """Start the detached supervisor (own session: it outlives this command); return its pid."""
    paths.spec.write_text(programs_to_json(programs))
    paths.logs.mkdir(parents=True, exist_ok=True)
    with paths.log("supervisor").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.supervisor", str(paths.spec), str(paths.run)],
            cwd=project_root(), env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    return proc.pid


def _wait_for_state(paths: StackPaths, pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(paths.run)
        if state is not None and state.get("pid") == pid:
            return
        if proc_starttime(pid) is None:
            raise StackError(f"the supervisor exited at start\n{tail(paths.log('supervisor'))}")
        time.sleep(0.05)
    raise StackError(f"the supervisor did not start within {timeout_s:.0f}s\n{tail(paths.log('supervisor'))}")


def up(env: Mapping[str, str] | None = None, out: Printer = print) -> int:
    """Bring the stack up (or report that it is up); 0 once ready, 1 with the reason otherwise."""
    from common.config import StorageSettings
    from common.storage import apply_migrations

    full = resolve_env(env)
    paths = StackPaths(Path(full["TT_RUN_DIR"]))
    paths.logs.mkdir(parents=True, exist_ok=True)
    hold = PortHold()
    try:
        settings_timeout = env_float_seconds(full, "TT_STACK_READY_TIMEOUT_S", 60.0, minimum=1.0)
        state = read_state(paths.run)
        if supervisor_alive(state):
            assert state is not None
            out(f"stack already up (supervisor pid {state['pid']}, run folder {paths.run})")
            _print_status(state, out)
            return 0
        ensure_token(full, paths, out)
        settings = envoy_config.GatewaySettings.from_env(full)  # validates the tokens and ports
        if GrpcSecurity.from_env(full).tls is not None:  # the internal tokens: valid, none a control token
            raise StackError("TT_GRPC_TLS_* is set, but the stack's Envoy reaches control in plain text and every "
                             "service here is on loopback: unset them for make up (TLS is for services deployed "
                             "apart)")
        if simulator_enabled(full):
            wired = wire_simulator(full)
            out(f"simulator: runs on loopback; {', '.join(wired) if wired else 'no URL'} pointed at it"
                + ("" if len(wired) == 5 else " (the URLs that are set are used)"))
        services = selected_services(full)
        check_ports(full, settings, services)
        blocked = hold.take_named({f"TT_{s.upper()}_GRPC_PORT": grpc_port(full, s)  # until the services bind them
                                   for s in services if s in SERVICE_PORTS})
        if blocked:
            raise StackError(blocked)
        ensure_storage(full, paths, out)
        storage = StorageSettings.from_env(full)
        applied = apply_migrations(storage.database_url.value)
        out(f"migrations: {len(applied)} applied now")
        envoy_config.write(settings, paths.envoy_config)
        pipeline = [s for s in services if s in SERVICE_PORTS and s != "control"]
        if pipeline and not full.get("TT_CONTROL_READY_SERVICES", "").strip():
            full["TT_CONTROL_READY_SERVICES"] = ",".join(pipeline)  # /ready covers the pipeline too
        programs = build_programs(full, paths, settings)
        pid = start_supervisor(full, paths, programs)
        _wait_for_state(paths, pid)
        out(f"supervisor: pid {pid}, programs {', '.join(p.name for p in programs)}")
        wait_ready(full, paths, settings, settings_timeout)
    except (StackError, ConfigError) as exc:
        out(f"error: {exc}")
        out(f"logs in {paths.logs}; make logs to follow, make down to stop what started")
        return 1
    finally:
        hold.release()
    out(f"stack up: REST on {settings.url} (try: curl {'-k ' if settings.tls else ''}{settings.url}/ready), "
        f"logs in {paths.logs}")
    return 0


def down(env: Mapping[str, str] | None = None, out: Printer = print) -> int:
    """Stop the supervisor, its programs and the embedded servers; 0 even when nothing ran."""
    full = resolve_env(env)
    paths = StackPaths(Path(full["TT_RUN_DIR"]))
    stopped: list[str] = []
    state = read_state(paths.run)
    if state is not None:
        if supervisor_alive(state):
            grace = env_float_seconds(full, "TT_STACK_STOP_GRACE_S", 10.0, minimum=0.1)
            terminate(int(state["pid"]), state.get("starttime"), 2 * grace + 5)
            stopped.append("supervisor")
            stopped += [p["name"] for p in state.get("programs", []) if p["state"] in ("running", "backoff")]
        final = read_state(paths.run) or state
        for prog in final.get("programs", []):
            if terminate(int(prog.get("pid") or 0), prog.get("starttime"), 5.0):
                stopped.append(f"{prog['name']} (left over)")
        (paths.run / "supervisor.json").unlink(missing_ok=True)
    stopped += stop_storage(paths)
    out(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def attach_simulator(env: Mapping[str, str] | None = None, out: Printer = print, timeout_s: float = 20.0) -> int:
    """Add the standalone simulator (``python -m sim --insiders`` on its fixed ports) to a running stack.

    ``make demo`` runs its simulator in-process; with ``KEEP=1`` it hands the ports over to this
    program so the stack it leaves up still has its feeds and Insiders API. 0 once it runs.
    """
    full = resolve_env(env)
    paths = StackPaths(Path(full["TT_RUN_DIR"]))
    state = read_state(paths.run)
    if not supervisor_alive(state):
        out("stack is down: nothing to attach the simulator to")
        return 1
    assert state is not None
    programs = programs_from_json(paths.spec.read_text())
    if not any(p.name == "sim" for p in programs):
        programs.insert(0, Program("sim", (sys.executable, "-m", "sim", "--insiders")))
        paths.spec.write_text(programs_to_json(programs))
        os.kill(int(state["pid"]), signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sim = [p for p in (read_state(paths.run) or {}).get("programs", []) if p["name"] == "sim"]
        if sim and sim[0]["state"] == "running":
            out(f"simulator: now supervised (pid {sim[0]['pid']}, log {sim[0]['log']})")
            return 0
        time.sleep(0.05)
    out(f"simulator: not running after {timeout_s:.0f}s\n{tail(paths.log('sim'))}")
    return 1


def _print_status(state: Mapping[str, Any], out: Printer) -> None:
    for prog in state.get("programs", []):
        extra = f" last exit {prog['last_exit']}" if prog.get("last_exit") is not None else ""
        out(f"  {prog['name']:<10} {prog['state']:<9} pid {prog['pid'] or '-':<8} "
            f"restarts {prog['restarts']}{extra}  log {prog['log']}")


def status(env: Mapping[str, str] | None = None, out: Printer = print) -> int:
    """Print the supervisor's view; 0 when it runs, 3 when it does not."""
    paths = StackPaths(Path(resolve_env(env)["TT_RUN_DIR"]))
    state = read_state(paths.run)
    if not supervisor_alive(state):
        out("stack is down")
        return 3
    assert state is not None
    out(f"supervisor pid {state['pid']}, run folder {paths.run}")
    _print_status(state, out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the stack and wait until it is ready")
    sub.add_parser("down", help="stop everything up started")
    sub.add_parser("status", help="show the supervised processes")
    logs_cmd = sub.add_parser("logs", help="follow the logs")
    logs_cmd.add_argument("names", nargs="*", help="only these programs (control, envoy, ...)")
    logs_cmd.add_argument("-n", "--lines", type=int, default=20)
    logs_cmd.add_argument("--no-follow", action="store_true")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    if args.command == "up":
        return up(out=say)
    if args.command == "down":
        return down(out=say)
    if args.command == "status":
        return status(out=say)
    logs_dir = StackPaths(Path(resolve_env()["TT_RUN_DIR"])).logs
    return follow_logs(logs_dir, names=args.names, lines=args.lines, follow=not args.no_follow, out=say)


if __name__ == "__main__":
    sys.exit(main())
