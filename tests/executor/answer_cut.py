"""A TCP proxy to PostgreSQL that cuts one connection at a chosen request: before the server gets it (the
transaction rolls back), or after the server answered it in full (it committed) without relaying the answer, as a
network drop at the wrong moment does. Everything else passes through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# ReadyForQuery, idle: the server has ended the request's transaction (committed or rolled back) and waits
IDLE = b"Z\x00\x00\x00\x05I"


class AnswerCut:
    """Cuts the next connection whose client sends ``marker`` (:meth:`arm`): ``after`` the server answered it
    (the answer is dropped), else before the server gets it. ``cuts`` counts the cuts done."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.marker = b""
        self.after = False
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def arm(self, marker: bytes, *, after: bool) -> None:
        self.marker, self.after = marker, after

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):
            up_r, up_w = await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.port}")
        else:
            up_r, up_w = await asyncio.open_connection(self.host, self.port)
        self._writers += [writer, up_w]
        cut = asyncio.Event()  # set: the answers from here on are dropped, the client cut once the server is idle
        pumps = {asyncio.create_task(self._up(reader, up_w, writer, cut)),
                 asyncio.create_task(self._down(up_r, writer, up_w, cut))}
        self._tasks |= pumps
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _up(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, client: asyncio.StreamWriter,
                  cut: asyncio.Event) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if self.marker and self.marker in data:
                    self.marker = b""
                    self.cuts += 1
                    if not self.after:
                        client.close()
                        up.close()
                        return
                    cut.set()
                up.write(data)
                await up.drain()
        up.close()  # the client is done: so is the server's side

    async def _down(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter, up: asyncio.StreamWriter,
                    cut: asyncio.Event) -> None:
        with contextlib.suppress(Exception):
            seen = b""
            while data := await reader.read(65536):
                if not cut.is_set():
                    client.write(data)
                    await client.drain()
                    continue
                seen = (seen + data)[-64:]
                if IDLE in seen:
                    break
        client.close()  # the server is done (or cut): so is the client's side
        up.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def answer_cut(db_url: str) -> AsyncIterator[AnswerCut]:
    """An :class:`AnswerCut` in front of ``db_url``'s server; its ``url`` names the same database through it."""
    info = conninfo_to_dict(db_url)
    proxy = AnswerCut(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    proxy.server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    port = proxy.server.sockets[0].getsockname()[1]
    proxy.url = make_conninfo(db_url, host="127.0.0.1", port=str(port), sslmode="disable")
    try:
        yield proxy
    finally:
        await proxy.close()
