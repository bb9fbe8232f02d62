"""The executor's lease on real PostgreSQL: one holder at a time, standbys wait, a superseded epoch cannot write
``orders`` (migration 0410), and venue calls wait while the lease is not freshly confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from common.lease import FENCE_SQLSTATE, Lease, boottime
from tests.helpers import eventually

pytestmark = pytest.mark.integration

_WRITE = "UPDATE orders SET reason = reason WHERE false"  # the statement trigger runs even for no rows


@pytest.fixture
async def leases(db_url: str) -> AsyncIterator[list[Lease]]:
    """Leases made by a test, all freed at its end."""
    made: list[Lease] = []
    yield made
    for lease in made:
        await lease.close()


def _lease(made: list[Lease], db_url: str, holder: str, *, clock: Callable[[], float] = boottime,
           **kwargs: float) -> Lease:
    lease = Lease(db_url, "executor", holder=holder, poll_s=kwargs.get("poll_s", 0.02),
                  check_s=kwargs.get("check_s", 0.05), timeout_s=2.0,
                  max_unconfirmed_s=kwargs.get("max_unconfirmed_s", 8.0), clock=clock)
    made.append(lease)
    return lease


async def _writer(db_url: str, options: str = "") -> psycopg.AsyncConnection[object]:
    kwargs = {"options": options} if options else {}
    return await psycopg.AsyncConnection.connect(db_url, autocommit=True, **kwargs)


async def _terminate(db_url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def _cancel(*tasks: asyncio.Task[object]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_second_process_waits_until_the_holder_lets_go_and_then_raises_the_epoch(
        db_url: str, leases: list[Lease]) -> None:
    first = _lease(leases, db_url, "a")
    assert await first.acquire() == 1
    second = _lease(leases, db_url, "b")
    waiting = asyncio.create_task(second.acquire())
    await eventually(lambda: second.waits >= 3)
    assert not waiting.done()
    await first.close()
    assert await asyncio.wait_for(waiting, 5) == 2
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        row = await (await conn.execute("SELECT epoch, holder FROM service_leases WHERE name = 'executor'")
                     ).fetchone()
    assert row == (2, "b")


@pytest.mark.parametrize("new_lets_go", [False, True])
async def test_a_superseded_epoch_cannot_write_orders_and_its_watch_ends(db_url: str, leases: list[Lease],
                                                                         new_lets_go: bool) -> None:
    old = _lease(leases, db_url, "old", check_s=0.5)
    await old.acquire()
    old_writer = await _writer(db_url, old.options)
    await old_writer.execute(_WRITE)  # the current epoch writes
    watch = asyncio.create_task(old.watch())
    new = _lease(leases, db_url, "new")
    taking = asyncio.create_task(new.acquire())
    await _terminate(db_url, old.backend_pid)  # the old holder's lease connection is gone; it does not know yet
    assert await asyncio.wait_for(taking, 5) == 2
    with pytest.raises(psycopg.OperationalError) as refused:
        await old_writer.execute(_WRITE)
    assert refused.value.sqlstate == FENCE_SQLSTATE
    new_writer, other = await _writer(db_url, new.options), await _writer(db_url)
    await new_writer.execute(_WRITE)
    await other.execute(_WRITE)  # connections without an epoch (other services) are not fenced
    if new_lets_go:  # the old one then takes the lock again, and finds the epoch moved
        await new.close()
    await asyncio.wait_for(watch, 5)  # returns: the lease is lost
    for conn in (old_writer, new_writer, other):
        await conn.close()


async def test_a_write_the_fence_refused_ends_the_watch_before_its_next_check(db_url: str,
                                                                             leases: list[Lease]) -> None:
    old = _lease(leases, db_url, "old", check_s=60.0)
    await old.acquire()
    old_writer = await _writer(db_url, old.options)
    watch = asyncio.create_task(old.watch())
    assert not old.notice_refusal(psycopg.errors.UniqueViolation("not the fence"))
    new = _lease(leases, db_url, "new")
    taking = asyncio.create_task(new.acquire())
    await _terminate(db_url, old.backend_pid)
    await asyncio.wait_for(taking, 5)
    await asyncio.sleep(0.05)
    assert not watch.done()  # its next check is a minute away
    with pytest.raises(psycopg.OperationalError) as refused:
        await old_writer.execute(_WRITE)
    assert old.notice_refusal(refused.value)
    await asyncio.wait_for(watch, 1)
    await old_writer.close()


async def test_a_dropped_lease_connection_is_taken_again_when_nobody_took_over(
        db_url: str, leases: list[Lease]) -> None:
    lease = _lease(leases, db_url, "a")
    await lease.acquire()
    watch = asyncio.create_task(lease.watch())
    pid = lease.backend_pid
    await _terminate(db_url, pid)
    await eventually(lambda: lease.reconnects == 1 and lease.backend_pid not in (0, pid))
    writer = await _writer(db_url, lease.options)
    await writer.execute(_WRITE)  # same epoch, still current
    assert not watch.done()
    standby = _lease(leases, db_url, "b")
    waiting = asyncio.create_task(standby.acquire())
    await eventually(lambda: standby.waits >= 2)  # the lease is held again, so the standby waits
    assert not waiting.done()
    await _cancel(watch, waiting)
    await writer.close()


async def test_a_holder_that_cannot_confirm_its_lease_stops(db_url: str, leases: list[Lease]) -> None:
    lease = _lease(leases, db_url, "a", max_unconfirmed_s=0.5)
    await lease.acquire()
    watch = asyncio.create_task(lease.watch())
    # its lease connection is gone and something else holds the lock without raising the epoch (as its own
    # old session does until PostgreSQL notices the connection is gone): the lease cannot be confirmed
    squatter = await _writer(db_url)
    pid = lease.backend_pid
    await _terminate(db_url, pid)
    await eventually(lambda: lease.backend_pid != pid)
    await squatter.execute("SELECT pg_advisory_lock(hashtextextended('tt:lease:executor', 0))")
    await asyncio.wait_for(watch, 5)
    assert lease.epoch == 1 and lease.reconnects == 0
    await squatter.close()


async def test_a_takeover_waits_for_the_old_epochs_open_write(db_url: str, leases: list[Lease]) -> None:
    old = _lease(leases, db_url, "old")
    await old.acquire()
    old_writer = await _writer(db_url, old.options)
    await old_writer.execute("BEGIN")
    await old_writer.execute(_WRITE)  # an old-epoch write under way when the holder loses its lease
    await _terminate(db_url, old.backend_pid)
    new = _lease(leases, db_url, "new")
    taking = asyncio.create_task(new.acquire())

    async def takeover_blocked() -> bool:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            row = await (await conn.execute("SELECT %s = ANY(pg_blocking_pids(%s))",
                                            (old_writer.info.backend_pid, new.backend_pid))).fetchone()
        return bool(row and row[0])

    await eventually(takeover_blocked)
    assert not taking.done()
    await old_writer.execute("COMMIT")  # it lands under the old epoch, before the new one starts
    assert await asyncio.wait_for(taking, 5) == 2
    with pytest.raises(psycopg.OperationalError):
        await old_writer.execute(_WRITE)
    await old_writer.close()


class Clock:
    """A clock the test moves by hand: a jump stands for a freeze (the process stopped, its machine paused)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _pending(aw: asyncio.Task[None], for_s: float = 0.2) -> bool:
    await asyncio.sleep(for_s)
    return not aw.done()


async def test_venue_calls_go_at_once_while_the_lease_is_fresh_and_wait_for_the_next_check_after_a_freeze(
        db_url: str, leases: list[Lease]) -> None:
    clock = Clock()
    lease = _lease(leases, db_url, "a", clock=clock)
    await lease.acquire()
    await asyncio.wait_for(lease.confirmed(), 1)  # fresh: it goes without a check (no watch runs yet)
    clock.now += 5  # frozen longer than the venue gate allows, not so long that the lease may be gone
    gate = asyncio.create_task(lease.confirmed())
    assert await _pending(gate)  # no watch runs yet to confirm it
    watch = asyncio.create_task(lease.watch())
    await asyncio.wait_for(gate, 5)  # its next check confirmed the lease
    assert not watch.done()
    await _cancel(watch)


async def test_a_holder_woken_after_a_freeze_in_which_it_was_superseded_calls_the_venue_no_more(
        db_url: str, leases: list[Lease]) -> None:
    clock = Clock()
    old = _lease(leases, db_url, "old", clock=clock)
    await old.acquire()
    await _terminate(db_url, old.backend_pid)  # the freeze: PostgreSQL drops its sessions, a standby takes over
    assert await _lease(leases, db_url, "new").acquire() == 2
    clock.now += 12
    gate = asyncio.create_task(old.confirmed())  # the first thing it does when it wakes: a POST
    watch = asyncio.create_task(old.watch())
    await asyncio.wait_for(watch, 5)  # it stops
    assert await _pending(gate)  # and its POST never goes
    await _cancel(gate)


async def test_a_refused_write_stops_venue_calls_at_once(db_url: str, leases: list[Lease]) -> None:
    lease = _lease(leases, db_url, "a")
    await lease.acquire()
    await asyncio.wait_for(lease.confirmed(), 1)
    assert lease.notice_refusal(psycopg.errors.lookup("55000")("x")) is False  # not the fence's refusal
    await asyncio.wait_for(lease.confirmed(), 1)
    assert lease.notice_refusal(_Refused())
    gate = asyncio.create_task(lease.confirmed())
    assert await _pending(gate)
    await _cancel(gate)


class _Refused(Exception):
    sqlstate = FENCE_SQLSTATE
