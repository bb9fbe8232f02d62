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
PostgreSQL (but not from the venue) stops before a standby can start. That deadline holds whatever the check
does: a check still unanswered then is given up at once, its connection shut down without waiting for it.

Time is read on CLOCK_BOOTTIME (:func:`boottime`), which goes on while the process is stopped (SIGSTOP) or its
machine paused or suspended. Every call that acts at the venue waits for :meth:`Lease.confirmed` first: it passes
at once while the lease was confirmed within ``fresh_s`` (4 s: PostgreSQL lets a standby in ~11 s after the
holder's last packet at the earliest), and otherwise waits for the watch's next check, which confirms the lease or
stops the process. So a holder woken from a freeze during which it was superseded acts at the venue no more, and a
refused write (:meth:`Lease.notice_refusal`) stops every venue call at once. Every write to a fenced table goes
through :class:`FencedWrites`, which tells the lease of a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from types import TracebackType
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
# A venue call waits for a confirmation when the last is older than this. The watch confirms every check_s, and
# PostgreSQL lets a standby in ~11 s after the holder's last packet at the earliest (the keepalives above).
FRESH_S = 4.0
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)  # Linux's; elsewhere the nearest there is
_NEVER = float("-inf")
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


def boottime() -> float:
    """Seconds on a clock that goes on while the process is stopped or its machine suspended (CLOCK_BOOTTIME)."""
    return time.clock_gettime(_BOOTTIME)


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the fence refusing a write of an epoch no longer current."""
    return getattr(exc, "sqlstate", None) == FENCE_SQLSTATE


class FencedWrites:
    """``with fenced:`` around a write to a fenced table: a psycopg error leaving it is told to ``on_error``
    (:meth:`Lease.notice_refusal`: the fence's refusal stops the holder), then raised as it was."""

    __slots__ = ("on_error",)

    def __init__(self, on_error: Callable[[BaseException], object] | None = None) -> None:
        self.on_error = on_error or _ignore

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, psycopg.Error):
            self.on_error(exc)


async def unleased() -> None:
    """The venue gate of a process without a lease (tests, tools): its venue calls go at once."""


def _ignore(_exc: BaseException) -> None:
    return None


class Lease:
    """The lease of ``name`` for this process: :meth:`acquire`, then run :meth:`watch`; :meth:`close` frees it."""

    def __init__(self, url: str, name: str, *, holder: str | None = None, poll_s: float = 0.5,
                 check_s: float = 1.0, timeout_s: float = 5.0, max_unconfirmed_s: float = MAX_UNCONFIRMED_S,
                 fresh_s: float = FRESH_S, clock: Callable[[], float] = boottime) -> None:
        if not name.isidentifier():
            raise ValueError(f"lease name must be an identifier, got {name!r}")
        self.url = url
        self.name = name
        self.holder = holder or default_holder()
        self.poll_s = poll_s
        self.check_s = check_s
        self.timeout_s = min(timeout_s, max_unconfirmed_s)
        self.max_unconfirmed_s = max_unconfirmed_s
        self.fresh_s = min(fresh_s, max_unconfirmed_s)
        self.clock = clock  # boottime; a test passes a clock of its own to stand for a freeze
        self.epoch = 0
        self.waits = 0  # attempts that found the lease held by another process
        self.reconnects = 0  # lease connections taken again after a drop, with the epoch unchanged
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False
        self._refused = asyncio.Event()  # a write of this epoch was refused: another process took over
        self._confirmed_at = _NEVER  # on the clock, when the lease was last known held; _NEVER once lost
        self._confirmation = asyncio.Event()  # set (and replaced) at each confirmation

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
        at once instead of at its next check, and no venue call passes :meth:`confirmed` any more."""
        if not refused(exc):
            return False
        self._confirmed_at = _NEVER
        self._refused.set()
        return True

    async def confirmed(self) -> None:
        """Return once this process may act at the venue: at once (one clock read) while the lease was confirmed
        within ``fresh_s``, else at the watch's next confirmation; never once the lease is lost or the watch ended
        (the process is stopping)."""
        while self.clock() - self._confirmed_at > self.fresh_s:
            await self._confirmation.wait()

    def _confirm(self, at: float) -> None:
        if self._refused.is_set():
            return  # a write refused during the check says the lease is lost
        self._confirmed_at = at
        event, self._confirmation = self._confirmation, asyncio.Event()
        event.set()

    async def acquire(self) -> int:
        """Wait until this process holds the lease, then raise the epoch and return it."""
        logged_at = float("-inf")
        try:
            while True:
                if self._closed:
                    raise RuntimeError("the lease is closed")
                try:
                    conn = await self._connection()
                    tried_at = self.clock()
                    if await self._try_lock(conn):
                        async with conn.transaction():
                            # waits for writes of the old epoch under way (they hold this lock shared)
                            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                               (f"tt:fence:{self.name}",))
                            row = await (await conn.execute(_TAKE_OVER, (self.name, self.holder))).fetchone()
                        assert row is not None
                        self.epoch = int(row[0])
                        self._confirm(tried_at)
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
        try:
            await self._watch()
        finally:
            self._confirmed_at = _NEVER  # nothing confirms the lease any more: no venue call passes

    async def _watch(self) -> None:
        while not self._closed:
            wait_s = min(self.check_s, self._confirmed_at + self.max_unconfirmed_s - self.clock())
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._refused.wait(), wait_s)
                reraise_if_cancelling()  # wait_for (3.11) can lose a cancel that meets its own timeout
            if self._refused.is_set():
                log.critical("lease lost: the fence refused a write (another process took over)",
                             extra={"lease": self.name, "epoch": self.epoch})
                return
            started = self.clock()
            deadline = self._confirmed_at + self.max_unconfirmed_s
            current = None
            if started < deadline:  # not so after a freeze that outlasted it: a standby may hold the lease by now
                current = await self._bounded_check(min(deadline, started + self.timeout_s))
            if current is not None and current != self.epoch:
                log.critical("lease lost: another process took over", extra={
                    "lease": self.name, "epoch": self.epoch, "current_epoch": current})
                return
            if current is not None:
                self._confirm(started)
            elif self.clock() >= deadline:
                log.critical("lease not confirmed; stopping before another process may take it", extra={
                    "lease": self.name, "epoch": self.epoch,
                    "unconfirmed_s": round(self.clock() - self._confirmed_at, 1)})
                return

    async def _bounded_check(self, deadline: float) -> int | None:
        """:meth:`_check`, given up at ``deadline`` (on the clock) without waiting for it: None when it failed or was
        given up."""
        check = asyncio.ensure_future(self._check())
        try:
            done, _ = await asyncio.wait({check}, timeout=max(0.0, deadline - self.clock()))
        except asyncio.CancelledError:
            self._abandon(check)
            raise
        if not done:
            self._abandon(check)
            log.warning("lease check unanswered; connection dropped", extra={"lease": self.name})
            return None
        try:
            return check.result()
        except (psycopg.Error, OSError) as exc:
            await self._drop()
            log.warning("lease check failed; retrying", extra={"lease": self.name, "error": repr(exc)[:300]})
            return None

    def _abandon(self, check: asyncio.Future[int | None]) -> None:
        """Give up a check under way, at once: its connection is shut down, so its query fails by itself (a
        cancel would make psycopg wait up to 10 s to cancel it in the server); a check still connecting is
        cancelled."""
        check.add_done_callback(_retrieved)
        conn, self._conn = self._conn, None
        if conn is None or conn.closed:
            check.cancel()
            return
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        check.add_done_callback(lambda _check: conn.pgconn.finish())  # its socket, once nothing waits on it

    async def close(self) -> None:
        """Free the lease (its connection ends); it is not taken again."""
        self._closed = True
        self._confirmed_at = _NEVER
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


def _retrieved(check: asyncio.Future[int | None]) -> None:
    """A given-up check's outcome, read so that asyncio does not report it as never retrieved."""
    if not check.cancelled():
        check.exception()
