"""Orders of a follower wallet on an asset not final yet, in arrival order.

A SELL the executor sizes itself (``sell_fraction``) must see the position its wallet's earlier orders
on the asset leave: it waits its turn here until every one of them is final (fills are booked when the
venue confirms them), at most ``MAX_WAIT_S`` (a resting order may never end); what BUYs that arrived after
it booked meanwhile is left out of what it sells; SELLs of a position are sized one at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from common.decimals import ZERO
from services.executor import lifecycle as lc
from services.executor.model import Ticket

if TYPE_CHECKING:
    from services.executor.intake import Prepared

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (follower wallet id, asset id)
MAX_WAIT_S = 120.0
# Sizes a SELL sent with a fraction of the position once its turn came: the sized order, ready for the venue
# (its intent row updated), or refused with the reason.
SizeLater = Callable[[Ticket], Awaitable["Prepared"]]


def position_key(t: Ticket) -> Key:
    """The position an order trades: (follower wallet id, asset id)."""
    return t.order.follower_wallet_id, t.order.asset_id


def sized_later(t: Ticket, life: lc.OrderLife) -> bool:
    """True for a SELL sent with ``sell_fraction`` and not sent yet: the executor sizes it in its turn (again,
    after a restart that came between its sizing and its submission: nothing was sent)."""
    return life.state is lc.State.NEW and bool(t.order.sell_fraction)


class PositionQueue:
    """Orders not final yet per (wallet, asset), each with its arrival number; and, for each SELL waiting to
    be sized, the shares that BUYs of its position which arrived after it have booked meanwhile (the SELL
    sells a fraction of the position as the leader's exit found it, not of a position re-opened since)."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._open: dict[Key, dict[str, int]] = {}
        self._changed: dict[Key, asyncio.Event] = {}
        self._seq = itertools.count()
        self._waiting: dict[str, tuple[Key, Decimal]] = {}  # sized-later SELL -> (position, later BUYs' shares)
        self._sizing: dict[Key, asyncio.Lock] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._open.values())

    def opened(self, key: Key, client_order_id: str, *, sized_later: bool = False) -> None:
        """An order of the position is under way (a second call keeps its place)."""
        self._open.setdefault(key, {}).setdefault(client_order_id, next(self._seq))
        if sized_later:
            self._waiting.setdefault(client_order_id, (key, ZERO))

    def ended(self, key: Key, client_order_id: str) -> None:
        """The order is final (or no longer run here): later orders of the position may go."""
        self._waiting.pop(client_order_id, None)
        orders = self._open.get(key)
        if orders is None or orders.pop(client_order_id, None) is None:
            return
        if not orders:
            del self._open[key]
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    def booked(self, key: Key, client_order_id: str, shares: Decimal) -> None:
        """A BUY of the position booked ``shares``: counted for the SELLs waiting to be sized that arrived
        before it."""
        if not self._waiting:
            return
        orders = self._open.get(key, {})
        mine = orders.get(client_order_id)
        for coid, (where, later) in list(self._waiting.items()):
            seq = orders.get(coid)
            if where == key and seq is not None and (mine is None or seq < mine):
                self._waiting[coid] = (where, later + shares)

    def later_shares(self, client_order_id: str) -> Decimal:
        """Shares BUYs that arrived after this waiting SELL have booked so far."""
        waiting = self._waiting.get(client_order_id)
        return waiting[1] if waiting else ZERO

    def sizing(self, key: Key) -> asyncio.Lock:
        """Held while a SELL of the position is sized and recorded as sent: two SELLs sized at once (their wait
        ran out together) would each count the shares the other sells."""
        lock = self._sizing.get(key)
        if lock is None:
            lock = self._sizing[key] = asyncio.Lock()
        return lock

    def sized(self, key: Key, client_order_id: str) -> None:
        """The SELL has its size: later BUYs no longer concern it; the position's lock is dropped when idle."""
        self._waiting.pop(client_order_id, None)
        lock = self._sizing.get(key)
        if lock is not None and not lock.locked() and not any(w == key for w, _ in self._waiting.values()):
            del self._sizing[key]

    def ahead(self, key: Key, client_order_id: str) -> int:
        """How many orders of the position that arrived before this one are not final yet."""
        orders = self._open.get(key, {})
        mine = orders.get(client_order_id)
        return sum(1 for seq in orders.values() if mine is None or seq < mine)

    async def wait_turn(self, key: Key, client_order_id: str) -> bool:
        """Wait until every order of the position that arrived before this one is final; False when
        ``max_wait_s`` ran out first."""
        try:
            async with asyncio.timeout(self.max_wait_s):
                while self.ahead(key, client_order_id):
                    event = self._changed.get(key)
                    if event is None:
                        event = self._changed[key] = asyncio.Event()
                    await event.wait()
        except TimeoutError:
            log.warning("sizing a SELL before the orders ahead of it are final",
                        extra={"client_order_id": client_order_id, "ahead": self.ahead(key, client_order_id),
                               "waited_s": self.max_wait_s})
            return False
        return True


async def size_in_turn(queue: PositionQueue, t: Ticket, size_later: SizeLater) -> Prepared:
    """Size ``t`` (its turn came: see :meth:`PositionQueue.wait_turn`), retried until sizing works: PostgreSQL
    may be away for a while. Call under the position's :meth:`PositionQueue.sizing` lock."""
    delay_s = 0.1
    while True:
        try:
            return await size_later(t)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sizing a SELL by its fraction failed; retrying",
                          extra={"client_order_id": t.client_order_id})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)
