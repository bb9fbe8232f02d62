"""gRPC server bootstrap shared by every service: authentication, bind rule, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from common.config import ConfigError
from common.grpcauth import AuthInterceptor, GrpcSecurity, TokenCheck
from common.grpcclient import MAX_MESSAGE_BYTES, SERVER_OPTIONS
from common.logs import setup_logging
from common.telemetry import setup_telemetry

log = logging.getLogger(__name__)
S = TypeVar("S")
T = TypeVar("T")

# A service whose main failed exits within this long even when a task will not end on cancellation.
EXIT_GRACE_S = 10.0
# Its exit code when the timer had to end it: a task did not end on cancellation (the log line names it).
HUNG_EXIT_CODE = 3
# A service told to stop (SIGTERM/SIGINT) has ended this long after its grace period, whatever its stop waits for
# (exit HUNG_EXIT_CODE, the unfinished tasks logged): with the default grace of 5 s, before Kubernetes' 30 s.
STOP_MARGIN_S = 20.0

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME


@dataclass
class GrpcServer:
    """A started grpc.aio server with its health servicer and bound port."""

    server: grpc.aio.Server
    health: HealthServicer
    port: int
    service_names: tuple[str, ...]
    _on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def set_serving(self, serving: bool) -> None:
        """Mark every service (and the overall server "") SERVING or NOT_SERVING."""
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` during graceful shutdown, after the server stops taking calls."""
        self._on_stop.append(callback)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, let in-flight calls finish within ``grace_s``, run stop hooks."""
        await self.set_serving(False)
        await self.server.stop(grace_s)
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:
                log.exception("stop hook failed")


async def start_server(
    host: str,
    port: int,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    *,
    security: GrpcSecurity,
    service_checks: Mapping[str, TokenCheck | None] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> GrpcServer:
    """Create, register, bind and start a grpc.aio server.

    ``register`` adds the servicers and returns their full service names; health and
    reflection are added here for all of them. Every call needs the internal token of
    ``security`` except health, reflection and the services of ``service_checks`` (their own check;
    ``None``: open). ``host`` must be loopback unless ``security`` has TLS or allows plain text
    (ConfigError otherwise); with TLS the port serves TLS only.
    """
    security.check_bind(host)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(security.check(), service_checks), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            *SERVER_OPTIONS,
        ],
    )
    names = tuple(register(server))
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*names, HEALTH_SERVICE, REFLECTION_SERVICE), server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    bound = (server.add_insecure_port(address) if security.tls is None
             else server.add_secure_port(address, security.tls.server_credentials()))
    if bound == 0:
        raise OSError(f"could not bind gRPC port {host}:{port}")
    await server.start()
    result = GrpcServer(server, health_servicer, bound, names)
    await result.set_serving(True)
    log.info("grpc server started", extra={"host": host, "port": bound, "services": list(names),
                                           "tls": security.tls is not None})
    return result


async def wait_for_termination(srv: GrpcServer, grace_s: float = 5.0, *,
                               first: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully (``first``, when given, before the server's graceful stop,
    which may wait ``grace_s`` for open streams). From the signal on, the process has ended within
    ``grace_s`` + :data:`STOP_MARGIN_S` (the service's own stop, after this returns, included)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            exit_later(grace_s + STOP_MARGIN_S, HUNG_EXIT_CODE, loop=loop)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    waiter = asyncio.ensure_future(srv.server.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    if first is not None:
        try:
            await first()
        except Exception:  # the stop goes on
            log.exception("first stop step failed")
    await srv.stop(grace_s)
    for task in (waiter, stopper):
        task.cancel()


def task_stacks(tasks: Iterable[asyncio.Task[Any]]) -> str:
    """Each task's name and the chain of coroutines it is suspended in, innermost last."""
    out = io.StringIO()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"--- {task.get_name()}\n")
        awaited: Any = task.get_coro()
        for _ in range(40):
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is None:
                out.write(f"  {type(awaited).__name__}\n")
                break
            out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
            if awaited is None:
                break
    return out.getvalue()


def dump_tasks() -> None:
    """Log every unfinished asyncio task with where it waits (``kill -USR1`` a service to see it)."""
    log.warning("asyncio tasks", extra={"tasks": task_stacks(asyncio.all_tasks())})


class _StoppedDuringStartUp(Exception):
    """SIGTERM or SIGINT came before the service took over their handling (:func:`wait_for_termination`)."""


def run(main: Callable[[], Coroutine[Any, Any, T]], *, exit_grace_s: float = EXIT_GRACE_S) -> T:
    """Run an async main on uvloop. When it fails (a storage server still down at start-up...), the error is logged
    at once and the process ends within ``exit_grace_s``: asyncio's clean-up waits for every cancelled task, and
    one that does not end would keep the process alive, serving nothing, where its supervisor cannot see it.
    SIGTERM or SIGINT before the service handles them itself (during start-up) cancels ``main``, is logged, and
    the process exits 0 within ``exit_grace_s`` (rather than dying silently by the signal's default action)."""
    import uvloop

    try:
        return uvloop.run(_exit_on_failure(main(), exit_grace_s))
    except _StoppedDuringStartUp:
        raise SystemExit(0) from None


async def _exit_on_failure(main: Coroutine[Any, Any, T], exit_grace_s: float) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopped: list[int] = []

    def stop_during_start_up(sig: int) -> None:
        if not stopped and task is not None:
            stopped.append(sig)
            log.warning("stop requested during start-up", extra={"signal": signal.Signals(sig).name})
            exit_later(exit_grace_s, HUNG_EXIT_CODE, loop=loop)
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_during_start_up, sig)
    try:
        return await main
    except asyncio.CancelledError:
        if stopped:
            raise _StoppedDuringStartUp from None
        log.error("service cancelled; exiting")
        exit_later(exit_grace_s, HUNG_EXIT_CODE, loop=loop)
        raise
    except BaseException as exc:
        log.error("service failed; exiting", extra={"error": repr(exc)[:500]})
        exit_later(exit_grace_s, HUNG_EXIT_CODE, loop=loop)
        raise


def exit_later(delay_s: float, code: int = 1, *,
               loop: asyncio.AbstractEventLoop | None = None) -> threading.Timer:
    """End the process with ``code`` in ``delay_s`` unless it has ended by then (a daemon timer). With ``loop``,
    the log line names the tasks of that loop still unfinished and where each one waits."""
    def hard_exit() -> None:
        extra: dict[str, Any] = {"after_s": delay_s}
        if loop is not None:
            try:
                extra["tasks"] = task_stacks(asyncio.all_tasks(loop))
            except RuntimeError as exc:  # the loop changed its task set while it was read
                extra["tasks"] = repr(exc)
        log.error("clean-up did not end; exiting now", extra=extra)
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(delay_s, hard_exit)
    timer.daemon = True
    timer.start()
    return timer


def service_cli(service: str, load: Callable[[], S], main: Callable[[S], Coroutine[Any, Any, None]]) -> int:
    """A service's entry point: JSON logs, settings from the environment (exit code 2 when they are invalid),
    telemetry, then ``main(settings)`` on uvloop; logs as ``services.<service>``."""
    service_log = logging.getLogger(f"services.{service}")
    setup_logging(service)
    try:
        settings = load()
    except ConfigError as exc:
        service_log.error("invalid configuration: %s", exc)
        return 2
    setup_telemetry(service, getattr(settings, "metrics", None))
    service_log.info("starting", extra={"settings": repr(settings)})
    run(lambda: main(settings))
    return 0
