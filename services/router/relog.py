"""Routed trades a Redis restart or failover lost, appended again from PostgreSQL.

Redis acknowledges an append before it is on disk (``appendfsync everysec``: a crash of its machine loses up
to about a second of acknowledged writes) or on a replica (a failover loses what the replica had not
received), and comes back with an older state. A RoutedTrade lost that way, whose orders the executor had
not admitted yet, is a lost copy: no reader will see it again, and its leader trade, delivered again (the
data-api poller finds it too), finds its routed row in PostgreSQL and is not routed twice.

So the router checks, at start-up and whenever the Redis server changed (its run id: new at every start,
another server's after a failover), the trades it routed in the last :data:`WINDOW_S`: each whose entry at
its recorded cursor (``routed_trades.appended_cursor``) the log no longer has is appended again, with only
the orders the executor holds no intent for (the executor resumes its own), through the emitter as the
first time (claims, reservations, the routed marker), and its new cursor is recorded. A restored order keeps
its routed time: the executor refuses one older than its ``max_order_age`` (``STALE_ORDER``, recorded, not
lost). Restored trades follow any routed since the server came back (at most one check interval).

An order the executor inserted and ran to its end between that look and the emit (from the entry Redis lost later)
was released before the emit claimed it again: no end of it releases that claim, and when the trade appended again is
set aside, the executor's orphan pass leaves the order alone (it has a row). So after its emits the relog releases
the claims of the lost trades' orders that have ended (idempotent: an ended order's claim is released anyway), before
it records the new cursors (a check that fails in between is done again, and finds them again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Protocol

from common.cancel import reraise_if_cancelling
from services.router.outbox import Emitter
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

# How far back the check looks: far more than a Redis crash or failover loses (seconds), and older orders
# would be refused as stale anyway.
WINDOW_S = 600.0


class RoutedRows(Protocol):
    """The routed trades in PostgreSQL (:class:`services.router.adapters.relog.RelogStore`)."""

    async def appended_since(self, window_s: float) -> list[tuple[str, str]]: ...

    async def payloads(self, leader_trade_ids: Sequence[str]) -> dict[str, bytes]: ...

    async def admitted(self, client_order_ids: Sequence[str]) -> set[str]: ...

    async def ended(self, client_order_ids: Sequence[str]) -> set[str]: ...

    async def reappended(self, items: Sequence[tuple[str, str]]) -> None: ...


class RoutedLog(Protocol):
    """The routed-trade log in Redis (:class:`services.router.adapters.relog.LogPresence`)."""

    async def present(self, cursors: Sequence[str]) -> list[bool]: ...

    async def server_id(self) -> str: ...

    async def release_claims(self, client_order_ids: Sequence[str]) -> int: ...


def unadmitted(routed: epb.RoutedTrade, admitted: Collection[str]) -> epb.RoutedTrade | None:
    """``routed`` with only the orders not in ``admitted``; None when none is left."""
    kept = [o for o in routed.orders if o.client_order_id not in admitted]
    if not kept:
        return None
    out = epb.RoutedTrade()
    out.CopyFrom(routed)
    del out.orders[:]
    out.orders.extend(kept)
    return out


class Relog:
    """Finds routed trades the log lost and appends them again (see the module docstring)."""

    def __init__(self, rows: RoutedRows, routed_log: RoutedLog, emitter: Emitter, *,
                 window_s: float = WINDOW_S) -> None:
        self.rows = rows
        self.log = routed_log
        self.emitter = emitter
        self.window_s = window_s
        self.restored_trades = 0
        self.restored_orders = 0
        self._server = ""

    async def restore(self) -> int:
        """Append again what the log lost of the window's routed trades; returns the orders appended."""
        rows = await self.rows.appended_since(self.window_s)
        present = await self.log.present([cursor for _lt, cursor in rows]) if rows else []
        lost = [lt for (lt, _cursor), kept in zip(rows, present, strict=True) if not kept]
        if not lost:
            return 0
        payloads = await self.rows.payloads(lost)
        routed = {lt: epb.RoutedTrade.FromString(p) for lt, p in payloads.items()}
        admitted = await self.rows.admitted([o.client_order_id for r in routed.values() for o in r.orders])
        appended: list[tuple[str, str]] = []
        orders = 0
        for lt in lost:
            rest = unadmitted(routed[lt], admitted) if lt in routed else None
            if rest is None:
                continue
            done = await self.emitter.emit(lt, rest, rest.SerializeToString(), mark=False)
            appended.append((lt, done.cursor))
            orders += len(done.routed.orders) if done.appended_now else 0
        await self._release_ended([o.client_order_id for r in routed.values() for o in r.orders])
        await self.rows.reappended(appended)
        self.restored_trades += len(appended)
        self.restored_orders += orders
        log.warning("routed trades lost by Redis appended again", extra={
            "lost_trades": len(lost), "appended_trades": len(appended), "orders": orders,
            "already_admitted": len(admitted)})
        return orders

    async def _release_ended(self, client_order_ids: list[str]) -> None:
        """Release the claims of those of ``client_order_ids`` that have ended (see the module docstring): of the
        orders with a row now, those whose end is recorded."""
        with_row = await self.rows.admitted(client_order_ids) if client_order_ids else set()
        ended = sorted(await self.rows.ended(sorted(with_row))) if with_row else []
        released = await self.log.release_claims(ended) if ended else 0
        if released:
            log.warning("claims of ended orders made again by the relog released",
                        extra={"ended": len(ended), "released": released})

    async def check(self) -> int:
        """:meth:`restore` when the Redis server is not the one checked last (always at the first call)."""
        server = await self.log.server_id()
        if server == self._server:
            return 0
        restored = await self.restore()
        self._server = server
        return restored

    async def run(self, *, interval_s: float) -> None:
        """:meth:`check` every ``interval_s`` until cancelled (a failed check is tried again)."""
        while True:
            reraise_if_cancelling()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis or PostgreSQL down: the next round tries again
                log.warning("lost routed trades check failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(interval_s)
