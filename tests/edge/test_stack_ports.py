"""Holding the stack's fixed ports while it starts: a held port is taken for everyone but its service."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tools.stack_ports import PortHold, ephemeral_range, port_in_use


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plain_bind(port: int) -> bool:
    """Whether a socket without SO_REUSEADDR (as the kernel treats a connection's own port) can take it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def hold() -> Iterator[PortHold]:
    made = PortHold()
    yield made
    made.release()


@pytest.mark.parametrize(("text", "expected"), [
    ("32768\t60999\n", range(32768, 61000)),
    ("1024 1024", range(1024, 1025)),
    ("", range(0)),
    ("not ports", range(0)),
])
def test_the_ephemeral_range_is_read_from_the_kernels_setting(tmp_path: Path, text: str,
                                                              expected: range) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    assert ephemeral_range(path) == expected
    assert ephemeral_range(tmp_path / "absent") == range(0)


@pytest.mark.integration
async def test_a_held_port_is_kept_from_others_but_its_grpc_server_still_binds_it(hold: PortHold) -> None:
    port = _free_port()
    assert hold.take([port], within={port}) == [port]
    assert not _plain_bind(port)
    server = grpc.aio.server()
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        hold.release()
        assert port_in_use(port)
    finally:
        await server.stop(0)
    assert _plain_bind(port)


@pytest.mark.integration
def test_only_free_ports_inside_the_range_are_held(hold: PortHold) -> None:
    inside, outside = _free_port(), _free_port()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        busy = int(listening.getsockname()[1])
        assert hold.take([inside, outside, busy], within={inside, busy}) == [inside]
    assert _plain_bind(outside)
    hold.release()
    assert _plain_bind(inside)


@pytest.mark.integration
def test_a_port_a_socket_keeps_without_listening_is_named_before_the_services_start(hold: PortHold) -> None:
    """As when a connection got the port as its own: nothing listens there, yet its service could not bind it."""
    free = _free_port()
    with socket.socket() as connection_like:
        connection_like.bind(("127.0.0.1", 0))
        taken = int(connection_like.getsockname()[1])
        message = hold.take_named({"TT_GUARD_GRPC_PORT": taken, "TT_ROUTER_GRPC_PORT": free}, within={taken, free})
        assert "TT_GUARD_GRPC_PORT" in message and "TT_ROUTER_GRPC_PORT" not in message
    assert not _plain_bind(free)  # the free one is held all the same
    assert hold.take_named({"TT_ROUTER_GRPC_PORT": _free_port()}, within=range(0)) == ""  # outside: not held
