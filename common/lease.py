"""One active process of a service per database: a lease held in PostgreSQL, with an epoch that fences
writers that lost it.

The lease is a session advisory lock held by a connection of its own. PostgreSQL frees it the moment that
connection ends: the process exited or was killed, or its host went away (server-side TCP keepalives notice
within about 11 s). A process that takes the lease raises the service's epoch in ``service_leases``, under a
transaction advisory lock taken exclusively; the fence trigger on the service's table takes it shared for
the length of each writing transaction (migration ``0410``). Every connection of the holder carries its
epoch (:attr:`Lease.options`), so once a new epoch is committed no write of an older one lands, and none
that started before is still open: the new holder's start-up reads see everything the old one committed.

A process that finds the lease held waits as a standby, trying again every ``poll_s``. The holder checks
its lease every ``check_s`` (:meth:`Lease.watch`): a lease connection that dropped is taken again when the
epoch has not moved (a PostgreSQL restart or a network blip). The holder must stop when the epoch moved
(another process took over: seen at the next check, or at once when the holder's writer reports a write the
fence refused, :meth:`Lease.notice_refusal`), and also when it could not confirm its lease for ``max_unconfirmed_s``
(8 s): PostgreSQL frees the lease of a connection it cannot reach after ~11 s, so a holder cut off from
PostgreSQL (but not from the venue) stops before a standby can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import psycopg

from common.cancel import reraise_if_cancelling

log = logging.getLogger(__name__)

FENCE_SQLSTATE = "55TL1"  # a write of an epoch no longer current, refused (psycopg: OperationalError)
# Server-side keepalives: PostgreSQL ends the session of a host that vanished in ~11 s (5 + 3 x 2), which
# frees the lease (lease connection) and the fence lock of a write under way (the holder's connections).
_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
# The holder's other connections: the same keepalives; a transaction left open by a paused or cut-off
# holder ends after 30 s (a takeover waits for it); READ COMMITTED whatever the database's default, so the
# fence's read sees an epoch committed after the write's transaction began.
_HOLDER_OPTIONS = (f"{_KEEPALIVES} -c idle_in_transaction_session_timeout=30s "
                   r"-c default_transaction_isolation=read\ committed")
# A holder that could not confirm its lease for this long stops: by then PostgreSQL may have freed the lease
# of a connection it cannot reach (the keepalives above), and a standby may hold it.
MAX_UNCONFIRMED_S = 8.0
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_TAKE_OVER = """
INSERT INTO service_leases (name, epoch, holder) VALUES (%s, 1, %s)
ON CONFLICT (name) DO UPDATE SET epoch = service_leases.epoch + 1, holder = EXCLUDED.holder, acquired_at = now()
RETURNING epoch
"""
_READ = "SELECT epoch, holder, acquired_at FROM service_leases WHERE name = %s"
STANDBY_LOG_INTERVAL_S = 60.0


def default_holder() -> str:
    """``host:pid`` of this process, as recorded with the lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """The lease of ``name`` for this process: :meth:`acquire`, then run :meth:`watch`; :meth:`close` frees it."""

    def __init__(self, url: str, name: str, *, holder: str | None = None, poll_s: float = 0.5,
                 check_s: float = 1.0, timeout_s: float = 5.0, max_unconfirmed_s: float = MAX_UNCONFIRMED_S) -> None:
        if not name.isidentifier():
            raise ValueError(f"lease name must be an identifier, got {name!r}")
        self.url = url
        self.name = name
        self.holder = holder or default_holder()
        self.poll_s = poll_s
        self.check_s = check_s
        self.timeout_s = min(timeout_s, max_unconfirmed_s)
        self.max_unconfirmed_s = max_unconfirmed_s
        self.epoch = 0
        self.waits = 0  # attempts that found the lease held by another process
        self.reconnects = 0  # lease connections taken again after a drop, with the epoch unchanged
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False
        self._refused = asyncio.Event()  # a write of this epoch was refused: another process took over

    @property
    def backend_pid(self) -> int:
        """The PostgreSQL backend of the lease connection (0 when there is none)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else 0

    @property
    def options(self) -> str:
        """libpq ``options`` for the holder's connections: its epoch (checked by the fence trigger), keepalives,
        an idle-in-transaction limit and READ COMMITTED."""
        if not self.epoch:
            raise RuntimeError("the lease is not held")
        return f"{_HOLDER_OPTIONS} -c tt.{self.name}_epoch={self.epoch}"

    def notice_refusal(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the fence refusing a write of this process's epoch; if so :meth:`watch` returns
        at once instead of at its next check (the writer would otherwise keep working until then)."""
        if getattr(exc, "sqlstate", None) != FENCE_SQLSTATE:
            return False
        self._refused.set()
        return True

    async def acquire(self) -> int:
        """Wait until this process holds the lease, then raise the epoch and return it."""
        logged_at = float("-inf")
        try:
            while True:
                if self._closed:
                    raise RuntimeError("the lease is closed")
                try:
                    conn = await self._connection()
                    if await self._try_lock(conn):
                        async with conn.transaction():
                            # waits for writes of the old epoch under way (they hold this lock shared)
                            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                               (f"tt:fence:{self.name}",))
                            row = await (await conn.execute(_TAKE_OVER, (self.name, self.holder))).fetchone()
                        assert row is not None
                        self.epoch = int(row[0])
                        log.info("lease taken", extra={"lease": self.name, "epoch": self.epoch,
                                                       "holder": self.holder, "backend_pid": self.backend_pid})
                        return self.epoch
                    self.waits += 1
                    if time.monotonic() - logged_at >= STANDBY_LOG_INTERVAL_S:
                        logged_at = time.monotonic()
                        current = await (await conn.execute(_READ, (self.name,))).fetchone()
                        epoch, held_by, since = current if current else (0, "", "")
                        log.warning("standby: another process holds the lease; waiting for it", extra={
                            "lease": self.name, "held_by": held_by, "since": str(since), "epoch": epoch})
                except (psycopg.Error, OSError) as exc:
                    reraise_if_cancelling()
                    await self._drop()
                    log.warning("lease: PostgreSQL unreachable; retrying",
                                extra={"lease": self.name, "error": repr(exc)[:300]})
                await asyncio.sleep(self.poll_s)
        except BaseException:
            await self._drop()  # not held: a lock taken just now goes with the connection
            raise

    async def watch(self) -> None:
        """Return when this process must stop writing: another process raised the epoch, or the lease could
        not be confirmed for ``max_unconfirmed_s``. Run as a task while holding the lease.

        A dropped lease connection is replaced, and the lease taken again, when the epoch has not moved.
        """
        confirmed_at = time.monotonic()
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refused.wait(), self.check_s)
            reraise_if_cancelling()  # wait_for (3.11) can lose a cancel that meets its own timeout
            if self._refused.is_set():
                log.critical("lease lost: the fence refused a write (another process took over)",
                             extra={"lease": self.name, "epoch": self.epoch})
                return
            try:
                current = await asyncio.wait_for(self._check(), self.timeout_s)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._drop()
                log.warning("lease check failed; retrying", extra={"lease": self.name, "error": repr(exc)[:300]})
                current = None
            if current is not None and current != self.epoch:
                log.critical("lease lost: another process took over", extra={
                    "lease": self.name, "epoch": self.epoch, "current_epoch": current})
                return
            if current is not None:
                confirmed_at = time.monotonic()
            elif time.monotonic() - confirmed_at > self.max_unconfirmed_s:
                log.critical("lease not confirmed; stopping before another process may take it", extra={
                    "lease": self.name, "epoch": self.epoch,
                    "unconfirmed_s": round(time.monotonic() - confirmed_at, 1)})
                return

    async def close(self) -> None:
        """Free the lease (its connection ends); it is not taken again."""
        self._closed = True
        await self._drop()

    async def _check(self) -> int | None:
        """The current epoch, read through the lease connection (replaced, and the lock taken again, when it
        dropped); None while the lock cannot be taken again with the epoch unchanged (our old session may
        still hold it until PostgreSQL notices it is gone)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = await self._connection()
            if not await self._try_lock(conn):
                row = await (await conn.execute(_READ, (self.name,))).fetchone()
                await self._drop()  # it does not hold the lock: the next check tries again on a new one
                epoch = int(row[0]) if row else None
                return epoch if epoch != self.epoch else None
            self.reconnects += 1
            log.warning("lease connection replaced", extra={"lease": self.name, "epoch": self.epoch})
        row = await (await conn.execute(_READ, (self.name,))).fetchone()
        return int(row[0]) if row else None

    async def _try_lock(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        row = await (await conn.execute(_TRY_LOCK, (f"tt:lease:{self.name}",))).fetchone()
        return bool(row and row[0])

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=max(1, int(self.timeout_s)), options=_KEEPALIVES,
            application_name=f"tt-{self.name}-lease", keepalives=1, keepalives_idle=5, keepalives_interval=2,
            keepalives_count=3)
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
