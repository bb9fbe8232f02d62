"""The transports ``bench hops`` measures, one probe each: samples of their latency between processes on loopback,
one message every ``gap``, and their CPU per message at both ends (see ``bench.hops``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from common.fastredis import FastRedis
from services import GRPC_EXPERIMENTS as SERVICES_GRPC_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 20


class Cpu(NamedTuple):
    """CPU microseconds per message of one transport, at each end."""

    near_us: float  # the side that starts the hop: a send's own CPU, or a round trip's from the call to its answer
    far_us: float  # the other side: the receiving process, or Redis' / the PostgreSQL backend's main thread


def _thread_cpu_s(pid: int) -> float | None:
    """CPU seconds of process ``pid``'s main thread, to the nanosecond (``/proc/PID/schedstat``); None when gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _per_message_us(total_s: float | None, n: int) -> float:
    return round(total_s / n * 1e6, 1) if total_s is not None and n else float("nan")


def _window_us(readings: Sequence[float], n: int) -> float:
    """CPU microseconds per message from cumulative CPU readings taken at each message (warm-up first)."""
    return _per_message_us(readings[-1] - readings[WARMUP - 1], n) if len(readings) > WARMUP else float("nan")


async def _round_trips(call: Callable[[], Awaitable[Any]], gap_s: float, n: int,
                       far_pid: int | None = None) -> tuple[list[float], Cpu]:
    """Milliseconds per ``call()``, one every ``gap_s`` (a sleep in between), after a warm-up; and the CPU per
    call of this process and of the main thread of ``far_pid`` (the server answering)."""
    out: list[float] = []
    near = 0.0
    far_begin = None
    for i in range(n + WARMUP):
        if gap_s:
            await asyncio.sleep(gap_s)
        if i == WARMUP and far_pid:
            far_begin = _thread_cpu_s(far_pid)
        c = time.process_time()
        t = time.perf_counter_ns()
        await call()
        if i >= WARMUP:
            out.append((time.perf_counter_ns() - t) / 1e6)
            near += time.process_time() - c
    far_end = _thread_cpu_s(far_pid) if far_pid else None
    far = far_end - far_begin if far_begin is not None and far_end is not None else None
    return out, Cpu(_per_message_us(near, n), _per_message_us(far, n))


def _peer(kind: str, tmp: Path, gap_s: float, count: int,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    port_file.with_suffix(".cpu").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "bench._hops_peer", kind, str(port_file), str(gap_s),
                             str(count)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} peer did not start")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def _one_way_ms(pairs: Sequence[Sequence[float]]) -> list[float]:
    """Milliseconds from send to receipt of each ``(sent_ns, received_ns, ...)`` after the warm-up."""
    return [(p[1] - p[0]) / 1e6 for p in pairs[WARMUP:]]


def _peer_cpu(tmp: Path, kind: str) -> list[float]:
    """The CPU figures a server peer wrote when done (``bench._hops_peer``), [] when none."""
    with contextlib.suppress(OSError, ValueError):
        figures = json.loads((tmp / f"{kind}.cpu").read_text())
        return [float(x) for x in figures]
    return []


def _mean_us(values: Sequence[float]) -> float:
    return round(sum(values) / len(values) * 1e6, 1) if values else float("nan")


async def _tcp_one_way(tmp: Path, gap_s: float, n: int) -> tuple[list[float], Cpu]:
    proc, port = _peer("tcp", tmp, gap_s, n + WARMUP)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pairs = []
        cpu = []
        for _ in range(n + WARMUP):
            raw = await reader.readexactly(8)
            pairs.append((int.from_bytes(raw, "little"), time.time_ns()))
            cpu.append(time.process_time())
        writer.close()
    finally:
        proc.wait(timeout=30)
    return _one_way_ms(pairs), Cpu(_mean_us(_peer_cpu(tmp, "tcp")[WARMUP:]), _window_us(cpu, n))


async def _grpc_pairs(server: str, client: list[str], tmp: Path, gap_s: float, n: int,
                      experiments: str, auth: bool = False) -> tuple[list[list[float]], list[float]]:
    """What a grpc.aio ``server`` peer and a ``client`` peer process measured, both with
    ``GRPC_EXPERIMENTS=experiments`` (and the internal token checked and sent when ``auth``): the client's
    ``[sent, received, cpu]`` rows (stdout) and the server's CPU figures (``bench._hops_peer``)."""
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments, "TT_BENCH_HOPS_AUTH": "1" if auth else "0"}
    proc, port = _peer(server, tmp, gap_s, n + WARMUP, env)
    try:
        peer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._hops_peer", client[0], str(port), str(n + WARMUP), *client[1:],
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await peer.communicate()
        if peer.returncode != 0:
            raise RuntimeError(f"{client[0]} peer exited with {peer.returncode}")
    finally:
        proc.wait(timeout=30)
    return json.loads(out), _peer_cpu(tmp, server)


async def _grpc_one_way(tmp: Path, gap_s: float, n: int, experiments: str,
                        auth: bool = False) -> tuple[list[float], Cpu]:
    """A grpc.aio server stream read by a client process with ``GRPC_EXPERIMENTS=experiments``; CPU: the
    server's per send, the client's per message received."""
    rows, sends = await _grpc_pairs("grpc", ["grpc-client"], tmp, gap_s, n, experiments, auth)
    return _one_way_ms(rows), Cpu(_mean_us(sends[WARMUP:]), _window_us([r[2] for r in rows], n))


async def _grpc_unary_one_way(tmp: Path, gap_s: float, n: int, experiments: str,
                              auth: bool = False) -> tuple[list[float], Cpu]:
    """The request leg of a grpc.aio unary call: sent by a client process → the server's handler entered; CPU
    of the whole call: the client's per call, the server's per call handled."""
    rows, entries = await _grpc_pairs("grpc-unary", ["grpc-unary-client", str(gap_s)], tmp, gap_s, n, experiments,
                                      auth)
    return _one_way_ms(rows), Cpu(_mean_us([r[2] for r in rows[WARMUP:]]), _window_us(entries, n))


# ``_auth``: the same with the internal token sent and checked, as between the services (the chains use those).
TRANSPORTS = ("tcp_one_way", "grpc_one_way", "grpc_one_way_auth", "grpc_one_way_event_engine_client",
              "grpc_unary_one_way", "grpc_unary_one_way_auth", "redis_rtt", "pg_rtt", "pg_insert_rtt")


async def probe(name: str, redis: FastRedis, conn: psycopg.AsyncConnection[Any], tmp: Path, gap_s: float,
                 n: int, pids: dict[str, int]) -> tuple[list[float], Cpu]:
    """``n`` samples of one transport, one every ``gap_s``, and its CPU per message (``pids``: the main
    processes of Redis and of the PostgreSQL backend, when known)."""
    if name == "tcp_one_way":
        return await _tcp_one_way(tmp, gap_s, n)
    if name in ("grpc_one_way", "grpc_one_way_auth"):
        return await _grpc_one_way(tmp, gap_s, n, SERVICES_GRPC_EXPERIMENTS, auth=name.endswith("_auth"))
    if name == "grpc_one_way_event_engine_client":
        return await _grpc_one_way(tmp, gap_s, n, "")
    if name in ("grpc_unary_one_way", "grpc_unary_one_way_auth"):
        return await _grpc_unary_one_way(tmp, gap_s, n, SERVICES_GRPC_EXPERIMENTS, auth=name.endswith("_auth"))
    if name == "redis_rtt":
        return await _round_trips(lambda: redis.get("tt:bench:hops"), gap_s, n, pids.get("redis"))
    if name == "pg_rtt":
        return await _round_trips(lambda: conn.execute("SELECT 1", prepare=True), gap_s, n, pids.get("postgres"))
    if name == "pg_insert_rtt":
        return await _round_trips(lambda: conn.execute("INSERT INTO bench_hops (v) VALUES ('x')", prepare=True),
                                  gap_s, n, pids.get("postgres"))
    raise ValueError(f"unknown transport {name!r}")


async def server_pids(redis: FastRedis, conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """Redis' process and this connection's PostgreSQL backend, when they run on this machine."""
    pids: dict[str, int] = {}
    info = await redis.call("INFO", "server")
    for line in (info.decode() if isinstance(info, bytes) else str(info)).splitlines():
        if line.startswith("process_id:"):
            pids["redis"] = int(line.split(":", 1)[1])
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    if row:
        pids["postgres"] = int(row[0])
    return {k: v for k, v in pids.items() if _is_local(v, k)}


def _is_local(pid: int, name: str) -> bool:
    """Whether ``pid`` is a ``name`` process on this machine (a server elsewhere has no CPU to read here)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith(name)
    except OSError:
        return False
