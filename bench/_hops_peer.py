"""The processes of ``bench hops``' one-way measurements.

``python -m bench._hops_peer tcp|grpc PORT_FILE GAP_S COUNT``: ``tcp`` accepts one connection and
writes ``COUNT`` 8-byte send times (``time.time_ns``), one every ``GAP_S``; ``grpc`` is a grpc.aio
server whose one server-streaming method yields the same. Either way the process sleeps between
messages, as a pipeline stage does between leader trades.

``python -m bench._hops_peer grpc-client PORT COUNT``: reads that stream and prints one JSON list of
``[sent_ns, received_ns, cpu_s]`` (a process of its own, so ``GRPC_EXPERIMENTS`` in its environment
applies: gRPC reads it when first imported; ``cpu_s``: the process's CPU time at the receipt).

``grpc-unary`` is a grpc.aio server whose unary method answers with the time its handler was entered;
``python -m bench._hops_peer grpc-unary-client PORT COUNT GAP_S`` calls it ``COUNT`` times, one every
``GAP_S``, and prints ``[sent_ns, handler_entered_ns, call_cpu_s]`` per call: the request leg of a unary call
(guard's SubmitOrder), which a server stream's message does not include (call set-up, the server's
dispatch to a handler), and the client's CPU time for the whole call.

CPU: the servers write ``PORT_FILE.cpu`` when done, a JSON list with one figure per message: the ``tcp`` and
``grpc`` senders the CPU time each send took (``grpc``: from the yield to the generator's resumption, which
gRPC does once the message is written), ``grpc-unary`` the process's CPU time at each handler entry.

With ``TT_BENCH_HOPS_AUTH=1`` in their environment both ends authenticate as the services do: the server
checks the internal token (``common.grpcauth.AuthInterceptor``, as ``common.grpcserver.start_server``
installs it) and the client's channel sends it (``common.grpcclient.AuthorizedChannel``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import uvloop

AUTH = os.environ.get("TT_BENCH_HOPS_AUTH") == "1"


def _ident(b: bytes) -> bytes:
    return b


def _interceptors() -> list[grpc.aio.ServerInterceptor]:
    from bench import internal_security
    from common.grpcauth import AuthInterceptor

    return [AuthInterceptor(internal_security().check())] if AUTH else []


def _channel(port: int) -> grpc.aio.Channel:
    from bench import internal_security
    from common.grpcclient import AuthorizedChannel

    inner = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return AuthorizedChannel(inner, internal_security().metadata) if AUTH else inner


def _announce(port_file: Path, port: int) -> None:
    port_file.write_text(str(port))


def _report_cpu(port_file: Path, cpu_s: list[float]) -> None:
    """The per-message CPU figures for ``bench hops`` (see the module docstring)."""
    port_file.with_suffix(".cpu").write_text(json.dumps(cpu_s))


async def _tcp(port_file: Path, gap_s: float, count: int) -> None:
    done = asyncio.Event()

    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cpu: list[float] = []
        try:
            for _ in range(count):
                await asyncio.sleep(gap_s)
                c = time.process_time()
                writer.write(time.time_ns().to_bytes(8, "little"))
                cpu.append(time.process_time() - c)
            await writer.drain()
            writer.close()
        finally:  # also when the reader, done, closed first: the peer must end either way
            _report_cpu(port_file, cpu)
            done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    _announce(port_file, server.sockets[0].getsockname()[1])
    await done.wait()
    server.close()


async def _serve(port_file: Path, handler: grpc.GenericRpcHandler, done: asyncio.Event) -> None:
    """A grpc.aio server with ``handler`` on a free loopback port (announced) until ``done``."""
    server = grpc.aio.server(interceptors=_interceptors())
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _announce(port_file, port)
    await done.wait()
    await server.stop(1.0)


async def _grpc(port_file: Path, gap_s: float, count: int) -> None:
    done = asyncio.Event()

    async def stream(_request: bytes, _context: object) -> AsyncIterator[bytes]:
        cpu: list[float] = []
        try:
            for _ in range(count):
                await asyncio.sleep(gap_s)
                c = time.process_time()
                yield time.time_ns().to_bytes(8, "little")
                cpu.append(time.process_time() - c)
        finally:  # the client cancels the call once it has them all, maybe before the last resume
            _report_cpu(port_file, cpu)
            done.set()

    await _serve(port_file, grpc.method_handlers_generic_handler(
        "bench.Hops", {"Stream": grpc.unary_stream_rpc_method_handler(stream, _ident, _ident)}), done)


async def _grpc_unary(port_file: Path, _gap_s: float, count: int) -> None:
    done = asyncio.Event()
    cpu: list[float] = []

    async def call(_request: bytes, _context: object) -> bytes:
        entered = time.time_ns()
        cpu.append(time.process_time())
        if len(cpu) >= count:
            _report_cpu(port_file, cpu)
            done.set()
        return entered.to_bytes(8, "little")

    await _serve(port_file, grpc.method_handlers_generic_handler(
        "bench.Hops", {"Call": grpc.unary_unary_rpc_method_handler(call, _ident, _ident)}), done)


async def _grpc_unary_client(port: int, count: int, gap_s: float) -> list[list[float]]:
    out: list[list[float]] = []
    async with _channel(port) as channel:
        method = channel.unary_unary("/bench.Hops/Call", request_serializer=_ident, response_deserializer=_ident)
        await channel.channel_ready()
        for _ in range(count):
            await asyncio.sleep(gap_s)
            c = time.process_time()
            sent = time.time_ns()
            entered = int.from_bytes(await method(b""), "little")
            out.append([sent, entered, time.process_time() - c])
    return out


async def _grpc_client(port: int, count: int) -> list[list[float]]:
    out: list[list[float]] = []
    async with _channel(port) as channel:
        method = channel.unary_stream("/bench.Hops/Stream", request_serializer=_ident, response_deserializer=_ident)
        async for raw in method(b""):
            out.append([int.from_bytes(raw, "little"), time.time_ns(), time.process_time()])
            if len(out) >= count:
                break
    return out


def main() -> None:
    """Entry point (see the module docstring)."""
    if sys.argv[1] == "grpc-client":
        print(json.dumps(uvloop.run(_grpc_client(int(sys.argv[2]), int(sys.argv[3])))))
        return
    if sys.argv[1] == "grpc-unary-client":
        print(json.dumps(uvloop.run(_grpc_unary_client(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))))
        return
    kind, port_file, gap_s, count = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    uvloop.run({"tcp": _tcp, "grpc": _grpc, "grpc-unary": _grpc_unary}[kind](port_file, gap_s, count))


if __name__ == "__main__":
    main()
