"""Orders of a follower wallet on an asset not final yet, in arrival order.

A SELL the executor sizes itself (``sell_fraction``) must see the position its wallet's earlier orders
on the asset leave: it waits its turn here until every one of them is final (fills are booked when the
venue confirms them), at most ``MAX_WAIT_S`` (a resting order may never end). BUYs of the position that
arrive after it wait until it has its size (what they buy is not the SELL's to sell), and SELLs of a
position are sized one at a time. The order of arrival survives a restart (``orders.arrival_ns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from common.cancel import reraise_if_cancelling
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.ticket import Ticket

if TYPE_CHECKING:
    from services.executor.domain.order_intake import Prepared

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
    """Orders not final yet per (wallet, asset), each with its arrival number, and which of them are SELLs
    waiting to be sized."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._open: dict[Key, dict[str, int]] = {}
        self._unsized: dict[Key, set[str]] = {}  # sized-later SELLs without their size yet
        self._changed: dict[Key, asyncio.Event] = {}
        self._seq = itertools.count()
        self._sizing: dict[Key, tuple[asyncio.Lock, int]] = {}  # lock, users

    def __len__(self) -> int:
        return sum(len(v) for v in self._open.values())

    def opened(self, key: Key, client_order_id: str, *, sized_later: bool = False) -> None:
        """An order of the position is under way. A second call changes nothing: the order keeps its place,
        and a SELL that has its size meanwhile (a trade handed in again) does not wait for it again."""
        orders = self._open.setdefault(key, {})
        if client_order_id in orders:
            return
        orders[client_order_id] = next(self._seq)
        if sized_later:
            self._unsized.setdefault(key, set()).add(client_order_id)

    def ended(self, key: Key, client_order_id: str) -> None:
        """The order is final (or no longer run here): later orders of the position may go."""
        self._drop_unsized(key, client_order_id)
        orders = self._open.get(key)
        if orders is None or orders.pop(client_order_id, None) is None:
            return
        if not orders:
            del self._open[key]
        self._signal(key)

    def sized(self, key: Key, client_order_id: str) -> None:
        """The SELL has its size (or will never get one): BUYs of the position behind it may go."""
        if self._drop_unsized(key, client_order_id):
            self._signal(key)

    def ahead(self, key: Key, client_order_id: str) -> int:
        """How many orders of the position that arrived before this one are not final yet."""
        orders = self._open.get(key, {})
        mine = orders.get(client_order_id)
        return sum(1 for seq in orders.values() if mine is None or seq < mine)

    def unsized_ahead(self, key: Key, client_order_id: str) -> int:
        """How many SELLs of the position that arrived before this order still wait for their size."""
        unsized = self._unsized.get(key)
        if not unsized:
            return 0
        orders = self._open.get(key, {})
        mine = orders.get(client_order_id)
        return sum(1 for coid in unsized if coid in orders and (mine is None or orders[coid] < mine))

    async def wait_turn(self, key: Key, client_order_id: str) -> bool:
        """Wait until every order of the position that arrived before this one is final; False when
        ``max_wait_s`` ran out first."""
        return await self._wait(key, client_order_id, self.ahead)

    async def wait_sells_sized(self, key: Key, client_order_id: str) -> bool:
        """Wait until every SELL of the position that arrived before this order has its size (a BUY must not
        add to the position such a SELL sells a fraction of); False when the wait ran out first."""
        return await self._wait(key, client_order_id, self.unsized_ahead)

    @contextlib.asynccontextmanager
    async def sizing(self, key: Key) -> AsyncIterator[None]:
        """Held while a SELL of the position is sized and recorded as sent: two SELLs sized at once (their wait
        ran out together) would each count the shares the other sells."""
        lock, users = self._sizing.get(key, (asyncio.Lock(), 0))
        self._sizing[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._sizing[key]
            if users == 1:
                del self._sizing[key]
            else:
                self._sizing[key] = (lock, users - 1)

    def _drop_unsized(self, key: Key, client_order_id: str) -> bool:
        unsized = self._unsized.get(key)
        if unsized is None or client_order_id not in unsized:
            return False
        unsized.discard(client_order_id)
        if not unsized:
            del self._unsized[key]
        return True

    def _signal(self, key: Key) -> None:
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    async def _wait(self, key: Key, client_order_id: str, count: Callable[[Key, str], int]) -> bool:
        try:
            async with asyncio.timeout(self.max_wait_s):
                while count(key, client_order_id):
                    event = self._changed.get(key)
                    if event is None:
                        event = self._changed[key] = asyncio.Event()
                    await event.wait()
        except TimeoutError:
            log.warning("an order of a position goes before the orders ahead of it are done",
                        extra={"client_order_id": client_order_id, "ahead": count(key, client_order_id),
                               "waited_s": self.max_wait_s})
            return False
        return True


async def size_in_turn(t: Ticket, size_later: SizeLater) -> Prepared:
    """Size ``t`` (its turn came: see :meth:`PositionQueue.wait_turn`), retried until sizing works: PostgreSQL
    may be away for a while. Call under the position's :meth:`PositionQueue.sizing` lock."""
    delay_s = 0.1
    while True:
        try:
            return await size_later(t)
        except asyncio.CancelledError:
            raise
        except Exception:
            reraise_if_cancelling()
            log.exception("sizing a SELL by its fraction failed; retrying",
                          extra={"client_order_id": t.client_order_id})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)
