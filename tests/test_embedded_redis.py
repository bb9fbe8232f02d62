"""The embedded Redis on a unix socket (what ``make up`` starts): reachable on its socket and its port, owner-only,
served by every client the services use, and on TCP when the socket's path would be too long."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.embedded import UNIX_PATH_MAX, free_port, ping_redis, redis_socket_path, start_redis, stop_pid
from common.fastredis import FastRedis
from common.logread import read_raw_entries
from common.resp import RespConnection
from common.streams import DurableLog, create_stream_redis


@pytest.mark.parametrize(("path_len", "fits"), [(20, True), (UNIX_PATH_MAX, True), (UNIX_PATH_MAX + 1, False)])
def test_a_socket_path_too_long_for_sockaddr_un_is_not_used(path_len: int, fits: bool) -> None:
    workdir = Path("/" + "d" * (path_len - len("/redis.sock") - 1))  # the socket's path is path_len long
    path = redis_socket_path(workdir)
    assert (path is not None) is fits
    if path is not None:
        assert path == workdir / "redis.sock" and len(str(path)) == path_len


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "unix:///nonexistent/redis.sock?db=0", "redis://bad"])
def test_nothing_answering_is_not_reachable(url: str) -> None:
    assert ping_redis(url, timeout_s=0.2) is False


@pytest.fixture
def unix_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A Redis on a unix socket: (its URL, its TCP URL)."""
    workdir = Path(tmp_path_factory.mktemp("r"))
    if redis_socket_path(workdir) is None:
        pytest.skip("the temporary folder's path is too long for a unix socket")
    port = free_port()
    url, pid = start_redis(workdir, port, durable=False, unix_socket=True)
    try:
        yield url, f"redis://127.0.0.1:{port}/0"
    finally:
        stop_pid(pid)


@pytest.mark.integration
def test_the_socket_is_the_url_and_only_its_owner_may_use_it(unix_redis: tuple[str, str]) -> None:
    url, tcp = unix_redis
    assert url.startswith("unix://") and url.endswith("?db=0")
    path = url[len("unix://"):].split("?", 1)[0]
    assert ping_redis(url) and ping_redis(tcp)  # the port stays open for tools
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    client = redis.Redis.from_url(url)
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()


@pytest.mark.integration
async def test_the_services_clients_work_over_the_socket(unix_redis: tuple[str, str]) -> None:
    url, _ = unix_redis
    fast = FastRedis(url, timeout_s=2.0)
    try:
        assert await fast.set("fast", "1")
        assert await fast.get("fast") == b"1"
    finally:
        await fast.aclose()
    path = url[len("unix://"):].split("?", 1)[0]
    conn = await RespConnection.open_unix(path)
    try:
        assert await conn.call(b"PING") == b"PONG"
    finally:
        conn.close()
    client = create_stream_redis(url)
    log_ = DurableLog(client, "tt:test:unix")
    try:
        await log_.append_many([b"a", b"b", b"c"])
        stream = read_raw_entries(log_, block_ms=200)("0-0")
        entries = await asyncio.wait_for(anext(stream), 5)
        assert [e[1][1] for e in entries] == [b"a", b"b", b"c"]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_redis_appends_every_write_and_rewrites_its_file_rarely(
        tmp_path_factory: pytest.TempPathFactory, durable: bool) -> None:
    url, pid = start_redis(Path(tmp_path_factory.mktemp("r")), durable=durable)
    try:
        client = redis.Redis.from_url(url)
        try:
            config = {name: client.config_get(name)[name]
                      for name in ("appendonly", "auto-aof-rewrite-percentage", "auto-aof-rewrite-min-size",
                                   "rdbcompression")}
        finally:
            client.close()
    finally:
        stop_pid(pid)
    if durable:
        assert config == {"appendonly": "yes", "auto-aof-rewrite-percentage": "400",
                          "auto-aof-rewrite-min-size": str(256 * 1024 * 1024), "rdbcompression": "no"}
    else:
        assert config["appendonly"] == "no"
