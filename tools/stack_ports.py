"""The stack's fixed ports: whether one is taken, and keeping them from the kernel's ephemeral picks while
the stack starts.

The services' gRPC ports (50051-50055) lie inside Linux's default ephemeral range (32768-60999). Any
connection opened while the stack starts (to PostgreSQL, to Redis, to a peer) may be given one of them as its
local port, and the service that owns the port then fails to bind it. A socket bound to a port, without
listening, keeps ``connect()`` from picking that port; with ``SO_REUSEADDR`` on both sockets the service still
binds and listens on it (gRPC servers set it).
"""

from __future__ import annotations

import socket
from collections.abc import Container, Iterable, Mapping
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> range:
    """The ports the kernel gives outgoing connections (empty when it cannot be read)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return range(0)
    return range(low, high + 1)


class PortHold:
    """Placeholder sockets on ports: :meth:`take` them, :meth:`release` once their services listen."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    def take(self, ports: Iterable[int], *, within: Container[int] | None = None) -> list[int]:
        """Hold each port inside ``within`` (the ephemeral range by default) that is free; returns those held."""
        within = ephemeral_range() if within is None else within
        held: list[int] = []
        for port in ports:
            if port not in within:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            self._sockets.append(sock)
            held.append(port)
        return held

    def take_named(self, ports: Mapping[str, int], *, within: Container[int] | None = None) -> str:
        """:meth:`take` the ports named by their variables; "" when each one inside ``within`` is held, else what
        holds the others (a listener is reported before this: what is left is a socket that does not listen)."""
        within = ephemeral_range() if within is None else within
        held = set(self.take(ports.values(), within=within))
        blocked = {name: port for name, port in ports.items() if port in within and port not in held}
        if not blocked:
            return ""
        named = ", ".join(f"{name}={port}" for name, port in blocked.items())
        return (f"ports held by a socket that does not listen: {named} (most likely an outgoing connection the kernel "
                "gave that port as its own; its service could not bind it). Wait for it to close, set the variable to "
                "a port outside the ephemeral range, or reserve the ports: sysctl -w "
                f"net.ipv4.ip_local_reserved_ports={','.join(str(p) for p in sorted(set(ports.values())))}")

    def release(self) -> None:
        """Close every placeholder."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
