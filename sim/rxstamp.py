"""A TCP server whose reads carry the kernel's receive time of the bytes (Linux ``SO_TIMESTAMPNS``).

Why: the Insiders fake records when each POST arrived, and the benchmarks measure the system up to
that moment. Stamped in ``data_received``, a POST's arrival also counted the time the fake's event loop
spent serving the POSTs of other connections that were ready before it (a 1,000-order fan-out: the last
POST read up to ~0.1 s after its bytes came in). The kernel stamps each packet as it is received, so
the stamp is the arrival whatever the fake is busy with. A read's stamp is that of the last packet it took:
for a request sent in one segment (the POSTs measured), its arrival; for one split over segments that
were read together, the arrival of its last part. Where the kernel gives no stamp (not Linux, or the
first packets after timestamping is switched on), the read time stands in.

Sockets are driven with ``loop.add_reader`` / ``add_writer`` (uvloop and asyncio alike): asyncio's
transports read with ``recv``, which drops the ancillary data the stamp comes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python's socket module lacks the name
READ_SIZE = 256 * 1024
ACCEPT_RETRY_DELAY_S = 1.0  # accepting paused this long when accept() fails for lack of resources
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ANC_SIZE = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("qq")

log = logging.getLogger(__name__)


class StampedProtocol(Protocol):
    """What a connection's handler implements."""

    def connection_made(self, transport: StampedTransport) -> None:
        """The connection is open."""

    def stamped_data_received(self, data: bytes, stamp_ns: int) -> None:
        """Bytes read, with the epoch time (ns) at which the kernel received them (the last packet of them)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is closed (``exc`` None: closed by either side in order)."""


def stamp_of(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The receive time (epoch ns) in a ``recvmsg`` answer's ancillary data, or None when it has none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec * 1_000_000_000 + nsec
    return None


class StampedTransport:
    """One accepted connection: reads handed over with their stamps, writes buffered until the socket
    takes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: StampedProtocol,
                 on_close: Callable[[StampedTransport], None]) -> None:
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._on_close = on_close
        self._buf = bytearray()
        self._closing = False
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._readable)

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called, or the connection was lost."""
        return self._closing or self._sock is None

    def write(self, data: bytes) -> None:
        """Send ``data`` (what the socket does not take now is sent when it can)."""
        sock = self._sock
        if sock is None or self._closing or not data:
            return
        if not self._buf:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lost(exc)
                return
            if sent == len(data):
                return
            data = data[sent:]
            self._loop.add_writer(self._fd, self._writable)
        self._buf += data

    def close(self) -> None:
        """Close once what was written is sent; nothing more is read."""
        if self._sock is None or self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buf:
            self._lost(None)

    def abort(self) -> None:
        """Close at once, dropping what was not sent."""
        self._lost(None)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(READ_SIZE, _ANC_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:  # the peer shut its sending side: answers already written are still sent, then closed
            self.close()
            return
        try:
            self._protocol.stamped_data_received(data, stamp_of(ancillary) or time.time_ns())
        except Exception:
            log.exception("connection handler failed: connection aborted")
            self.abort()

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._buf[:sent]
        if not self._buf:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        sock.close()
        self._buf.clear()
        self._on_close(self)
        self._loop.call_soon(self._protocol.connection_lost, exc)


class StampedServer:
    """Accepts connections on ``host:port`` and gives each a :class:`StampedTransport` and a protocol."""

    def __init__(self, protocol_factory: Callable[[], StampedProtocol]) -> None:
        self.protocol_factory = protocol_factory
        self._listener: socket.socket | None = None
        self._transports: set[StampedTransport] = set()

    def listen(self, host: str, port: int, backlog: int) -> int:
        """Start accepting (on the running loop); returns the bound port."""
        loop = asyncio.get_running_loop()
        family, kind, proto, _name, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        loop.add_reader(listener.fileno(), self._accept, loop)
        return int(listener.getsockname()[1])

    def close(self) -> None:
        """Stop accepting and close every connection at once."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
        for transport in list(self._transports):
            transport.abort()

    def _accept(self, loop: asyncio.AbstractEventLoop) -> None:
        listener = self._listener
        while listener is not None:
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up before it was accepted
                continue
            except OSError as exc:
                # the pending connection stays queued, so the listener stays readable: pause, or the loop spins
                level = logging.ERROR if exc.errno in _RESOURCE_ERRNOS else logging.WARNING
                log.log(level, "accept failed: accepting paused", extra={"errno": exc.errno,
                                                                       "pause_s": ACCEPT_RETRY_DELAY_S})
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_DELAY_S, self._resume, loop, listener)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):  # no stamps here: reads are stamped when read
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._transports.add(StampedTransport(loop, sock, self.protocol_factory(), self._transports.discard))

    def _resume(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
        if self._listener is listener:  # not closed meanwhile
            loop.add_reader(listener.fileno(), self._accept, loop)
